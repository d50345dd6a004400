"""DeepSpeed's ``data_efficiency`` JSON schema (curriculum learning + random-LTD) as validated dataclasses.

``load_data_efficiency_config(path)`` reads either a bare ``data_efficiency`` section or a whole DeepSpeed config
(then the legacy top-level ``curriculum_learning`` seqlen warm-up is read too). Unknown keys and inconsistent values
raise ``ValueError`` naming the JSON key path, e.g.
``data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.vocab_rarity.min_difficulty``.
``DataEfficiencyArgs`` carries Megatron-DeepSpeed's command-line switches so the training config can compose it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from megatron.data_efficiency.config_parsing import ConfigKeyError, from_mapping, require

__all__ = [
    "DifficultyType",
    "ClusteringType",
    "ScheduleType",
    "ModelType",
    "HiddenStateOrder",
    "RandomLTDScheduleType",
    "SEQLEN_METRICS",
    "ScheduleConfig",
    "CurriculumMetricConfig",
    "CurriculumLearningConfig",
    "DataSamplingConfig",
    "RandomLTDScheduleConfig",
    "RandomLTDScheduleSettings",
    "LayerTokenLRScheduleConfig",
    "RandomLTDConfig",
    "DataRoutingConfig",
    "LegacyCurriculumConfig",
    "DataEfficiencyConfig",
    "DataEfficiencyArgs",
    "parse_data_efficiency_config",
    "load_data_efficiency_config",
]

DifficultyType = Literal["value", "percentile"]
ClusteringType = Literal["single_cluster", "schedule_based"]
ScheduleType = Literal["fixed_linear", "fixed_root", "fixed_discrete", "custom"]
# Random-LTD: the layer kind (decoder: causal mask sliced top-left; encoder: mask gathered by rows and columns), the
# hidden-state layout ([b, s, h] or Megatron's [s, b, h]) and the kept-token schedule (DeepSpeed has fixed_linear).
ModelType = Literal["decoder", "encoder"]
HiddenStateOrder = Literal["batch_seq_dim", "seq_batch_dim"]
RandomLTDScheduleType = Literal["fixed_linear"]

# Metric names Megatron-DeepSpeed's GPT post-processing matches literally: they change the batch's sequence length
# instead of selecting samples, so they need no analysis files.
SEQLEN_METRICS = ("seqlen_truncate", "seqlen_reshape")


# --------------------------------------------------------------------------------------------------------------
# Curriculum learning (data sampling)
# --------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ScheduleConfig:
    """``schedule_config`` of one curriculum metric; which keys apply depends on ``schedule_type``."""

    total_curriculum_step: int | None = None
    """fixed_linear/fixed_root: curriculum steps (global batches) from min to max difficulty."""
    difficulty_step: int | None = None
    """fixed_linear/fixed_root: every difficulty is rounded down to a multiple of this (8 for fp16 seqlen)."""
    root_degree: float | None = None
    """fixed_root: degree of the root pacing function (2 = square root; 1 = linear)."""
    difficulty: list[int] | None = None
    """fixed_discrete: the difficulties in order (one more entry than ``max_step``)."""
    max_step: list[int] | None = None
    """fixed_discrete: last curriculum step of each difficulty but the final one, strictly increasing."""

    def check(self, schedule_type: str, min_difficulty: int, max_difficulty: int) -> None:
        """Check the keys ``schedule_type`` needs and forbid the ones it would silently ignore."""
        used = {
            "fixed_linear": {"total_curriculum_step", "difficulty_step", "root_degree"},
            "fixed_root": {"total_curriculum_step", "difficulty_step", "root_degree"},
            "fixed_discrete": {"difficulty", "max_step"},
            "custom": set(),
        }[schedule_type]
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is not None and f.name not in used:
                raise ConfigKeyError(f.name, f"not used by schedule_type {schedule_type!r}; remove it")
        if schedule_type in ("fixed_linear", "fixed_root"):
            self._check_root(schedule_type)
        elif schedule_type == "fixed_discrete":
            self._check_discrete(min_difficulty, max_difficulty)

    def _check_root(self, schedule_type: str) -> None:
        require(self.total_curriculum_step is not None, "total_curriculum_step", f"required by {schedule_type}")
        require(self.difficulty_step is not None, "difficulty_step", f"required by {schedule_type}")
        require(self.total_curriculum_step >= 1, "total_curriculum_step",
                 f"must be >= 1, got {self.total_curriculum_step}")
        require(self.difficulty_step >= 1, "difficulty_step", f"must be >= 1, got {self.difficulty_step}")
        if schedule_type == "fixed_root":
            require(self.root_degree is not None, "root_degree", "required by fixed_root")
            require(self.root_degree > 0, "root_degree", f"must be > 0, got {self.root_degree}")
        elif self.root_degree is not None:
            require(self.root_degree == 1, "root_degree",
                     f"fixed_linear is fixed_root with root_degree 1, got {self.root_degree}; use fixed_root")

    def _check_discrete(self, lo: int, hi: int) -> None:
        require(self.difficulty is not None and len(self.difficulty) > 0, "difficulty",
                 "fixed_discrete needs a non-empty list of difficulties")
        require(self.max_step is not None, "max_step", "fixed_discrete needs max_step (may be [] for one level)")
        require(len(self.difficulty) == len(self.max_step) + 1, "difficulty",
                 f"needs exactly len(max_step) + 1 = {len(self.max_step) + 1} entries, got {len(self.difficulty)}")
        for i, (a, b) in enumerate(zip(self.max_step, self.max_step[1:])):
            require(b > a, f"max_step[{i + 1}]", f"must be > max_step[{i}] = {a}, got {b}")
        if self.max_step:
            require(self.max_step[0] >= 1, "max_step[0]", f"must be >= 1, got {self.max_step[0]}")
        for i, d in enumerate(self.difficulty):
            require(lo <= d <= hi, f"difficulty[{i}]",
                    f"{d} is outside [min_difficulty, max_difficulty] = [{lo}, {hi}]")
            if i:
                # The sampler only ever widens the admitted pool (as DeepSpeed's clusters do).
                require(d >= self.difficulty[i - 1], f"difficulty[{i}]",
                         f"{d} < difficulty[{i - 1}] = {self.difficulty[i - 1]}; difficulties must not decrease")


@dataclass(kw_only=True)
class CurriculumMetricConfig:
    """One entry of ``curriculum_metrics``: how one difficulty metric paces the data.

    ``single_cluster`` metrics do not select samples (all samples form one cluster); their difficulty is only read
    by batch post-processing (``seqlen_truncate``/``seqlen_reshape``). ``schedule_based`` metrics admit, at each
    curriculum step, the samples whose metric is within the current difficulty and need the analyzer's files.
    For a blended dataset the two paths may be lists with one entry per blend component (in blend order).
    """

    difficulty_type: DifficultyType
    """``value``: admit samples whose metric <= difficulty. ``percentile``: admit the easiest difficulty% of samples."""
    clustering_type: ClusteringType
    """``schedule_based``: the metric selects samples. ``single_cluster``: it does not (seqlen post-processing)."""
    min_difficulty: int
    """Difficulty at curriculum step 0/1; for ``percentile`` a percentage in (0, 100]."""
    max_difficulty: int
    """Final difficulty; for ``percentile`` at most 100."""
    schedule_type: ScheduleType
    """Pacing function: fixed_linear, fixed_root, fixed_discrete or custom (a callable registered in Python)."""
    schedule_config: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Parameters of the pacing function."""
    index_to_sample_path: str | list[str] | None = None
    """Analyzer output ``{metric}_index_to_sample[_percentile_merged]`` prefix (schedule_based only)."""
    index_to_metric_path: str | list[str] | None = None
    """Analyzer output ``{metric}_index_to_metric`` prefix (schedule_based with difficulty_type value only)."""

    def __post_init__(self) -> None:
        require(self.min_difficulty <= self.max_difficulty, "min_difficulty",
                 f"{self.min_difficulty} is greater than max_difficulty {self.max_difficulty}")
        if self.difficulty_type == "percentile":
            require(0 < self.min_difficulty, "min_difficulty",
                     f"a percentile difficulty must be in (0, 100], got {self.min_difficulty} (0% admits no sample)")
            require(self.max_difficulty <= 100, "max_difficulty",
                     f"a percentile difficulty must be in (0, 100], got {self.max_difficulty}")
        try:
            self.schedule_config.check(self.schedule_type, self.min_difficulty, self.max_difficulty)
        except ConfigKeyError as e:
            raise e.under("schedule_config") from None
        if self.clustering_type == "schedule_based":
            require(_has_path(self.index_to_sample_path), "index_to_sample_path",
                     "required by clustering_type schedule_based (the analyzer's index_to_sample file prefix)")
            if self.difficulty_type == "value":
                require(_has_path(self.index_to_metric_path), "index_to_metric_path",
                         "required by clustering_type schedule_based with difficulty_type value")
                require(_path_count(self.index_to_metric_path) == _path_count(self.index_to_sample_path),
                         "index_to_metric_path", "needs as many entries as index_to_sample_path")

    def index_paths(self, num_components: int) -> list[tuple[str | None, str | None]]:
        """``(index_to_sample, index_to_metric)`` prefixes per blend component; ValueError on a count mismatch."""
        samples, metrics = _as_list(self.index_to_sample_path), _as_list(self.index_to_metric_path)
        if len(samples) == 1 and num_components == 1:
            return [(samples[0], metrics[0] if metrics else None)]
        if len(samples) != num_components:
            raise ConfigKeyError(
                "index_to_sample_path",
                f"the training dataset blends {num_components} datasets, so a list of {num_components} analysis "
                f"paths (one per blend component, in blend order) is needed; got {len(samples)}",
            )
        return [(s, metrics[i] if metrics else None) for i, s in enumerate(samples)]


def _has_path(p: str | list[str] | None) -> bool:
    return bool(p) and (isinstance(p, str) or all(isinstance(x, str) and x for x in p))


def _path_count(p: str | list[str] | None) -> int:
    return len(_as_list(p))


def _as_list(p: str | list[str] | None) -> list[str]:
    if p is None:
        return []
    return [p] if isinstance(p, str) else list(p)


@dataclass(kw_only=True)
class CurriculumLearningConfig:
    """``data_sampling.curriculum_learning``: the curriculum metrics and their schedules."""

    enabled: bool = False
    """Turn curriculum learning (difficulty-paced sampling and seqlen post-processing) on."""
    data_cluster_path: str | None = None
    """DeepSpeed writes cluster files here; accepted for compatibility, unused (clusters are rebuilt in memory)."""
    curriculum_metrics: dict[str, CurriculumMetricConfig] = field(default_factory=dict)
    """Metric name -> its pacing. ``seqlen_truncate``/``seqlen_reshape`` change the sequence length of batches."""

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        require(len(self.curriculum_metrics) > 0, "curriculum_metrics",
                 "curriculum learning is enabled but no metric is configured")
        seqlen = [name for name in self.curriculum_metrics if name in SEQLEN_METRICS]
        require(len(seqlen) <= 1, f"curriculum_metrics.{seqlen[-1] if seqlen else ''}",
                 f"use only one of {list(SEQLEN_METRICS)}, got {seqlen}")
        for name in seqlen:
            m = self.curriculum_metrics[name]
            require(m.difficulty_type == "value", f"curriculum_metrics.{name}.difficulty_type",
                     f"{name} is a sequence length, so it needs difficulty_type 'value', got {m.difficulty_type!r}")
            require(m.clustering_type == "single_cluster", f"curriculum_metrics.{name}.clustering_type",
                     f"{name} post-processes batches and selects no samples; use 'single_cluster'")
            require(m.min_difficulty >= 1, f"curriculum_metrics.{name}.min_difficulty",
                     f"a sequence length must be >= 1, got {m.min_difficulty}")

    @property
    def seqlen_metric(self) -> str | None:
        """``seqlen_truncate``, ``seqlen_reshape`` or None."""
        return next((n for n in self.curriculum_metrics if n in SEQLEN_METRICS), None)

    @property
    def sampling_metrics(self) -> dict[str, CurriculumMetricConfig]:
        """The metrics that select samples (clustering_type schedule_based)."""
        return {n: m for n, m in self.curriculum_metrics.items() if m.clustering_type == "schedule_based"}


@dataclass(kw_only=True)
class DataSamplingConfig:
    """``data_efficiency.data_sampling``."""

    enabled: bool = False
    """Parent switch of data sampling; must be on when curriculum learning is."""
    num_epochs: int = 1000
    """The curriculum sampler yields ``num_epochs`` x (one-epoch dataset size) samples in total."""
    num_workers: int = 0
    """DataLoader worker processes for the curriculum loader."""
    curriculum_learning: CurriculumLearningConfig = field(default_factory=CurriculumLearningConfig)
    """Curriculum learning settings."""

    def __post_init__(self) -> None:
        require(self.num_epochs >= 1, "num_epochs", f"must be >= 1, got {self.num_epochs}")
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.enabled or not self.curriculum_learning.enabled, "enabled",
                 "is false but curriculum_learning.enabled is true; set both to true (or disable curriculum_learning)")


# --------------------------------------------------------------------------------------------------------------
# Random-LTD (data routing)
# --------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RandomLTDScheduleSettings:
    """``random_ltd_schedule.schedule_config``."""

    require_steps: int
    """Optimizer steps to go from min_value to max_value kept tokens."""
    seq_per_step: int
    """Kept-token counts are rounded down to a multiple of this."""

    def __post_init__(self) -> None:
        require(self.require_steps >= 1, "require_steps", f"must be >= 1, got {self.require_steps}")
        require(self.seq_per_step >= 1, "seq_per_step", f"must be >= 1, got {self.seq_per_step}")


@dataclass(kw_only=True)
class RandomLTDScheduleConfig:
    """``random_ltd.random_ltd_schedule``: kept tokens per LTD layer as a function of the step."""

    min_value: int
    """Kept tokens at step 0."""
    max_value: int
    """Kept tokens once the schedule ends (normally the sequence length)."""
    schedule_type: RandomLTDScheduleType
    """Only fixed_linear exists in DeepSpeed."""
    schedule_config: RandomLTDScheduleSettings
    """require_steps and seq_per_step."""

    def __post_init__(self) -> None:
        require(self.schedule_type in get_args(RandomLTDScheduleType), "schedule_type",
                f"{self.schedule_type!r} is not one of {list(get_args(RandomLTDScheduleType))}")
        require(self.min_value >= 1, "min_value", f"must keep at least 1 token, got {self.min_value}")
        require(self.min_value <= self.max_value, "min_value",
                 f"{self.min_value} is greater than max_value {self.max_value}")


@dataclass(kw_only=True)
class LayerTokenLRScheduleConfig:
    """``random_ltd.layer_token_lr_schedule`` (DeepSpeed never implemented it; token-based LR is a training flag)."""

    enabled: bool = False
    """Must stay false: use the training loop's token-based LR flags (--lr-warmup-tokens, --lr-decay-tokens)."""
    total_layer_tokens: int | None = None
    """Unused (parsed for compatibility)."""
    warmup_type: str | None = None
    """Unused (parsed for compatibility)."""
    warmup_layer_tokens: int | None = None
    """Unused (parsed for compatibility)."""

    def __post_init__(self) -> None:
        if self.enabled:
            raise ConfigKeyError("enabled", "the layer-token LR schedule is not implemented (DeepSpeed raises too); "
                                 "use --lr-warmup-tokens/--lr-decay-tokens of the training config instead")


@dataclass(kw_only=True)
class RandomLTDConfig:
    """``data_routing.random_ltd``: which layers drop tokens and how many tokens they keep.

    The one random-LTD config: the JSON block parses into it, and ``routing.RandomLTDScheduler`` and
    ``routing.wrap_layers`` take it as it is. Its ``__post_init__`` is the one place that checks the layer ids.
    """

    enabled: bool = False
    """Turn random layerwise token dropping on."""
    total_layer_num: int | None = None
    """Number of transformer layers of the model."""
    random_ltd_layer_num: int | None = None
    """How many layers drop tokens; must equal len(random_ltd_layer_id)."""
    random_ltd_layer_id: list[int] | None = None
    """0-based ids of the token-dropping layers (the recipes use 1..L-2: first and last layer keep all tokens)."""
    model_mask_name: str | None = None
    """Keyword name of the attention mask argument of a layer (Megatron: attention_mask)."""
    model_type: ModelType | None = None
    """decoder: causal mask sliced top-left; encoder: mask gathered by rows and columns."""
    hidden_state_order: HiddenStateOrder | None = None
    """Layout of hidden states: [b, s, h] or [s, b, h] (Megatron)."""
    random_ltd_schedule: RandomLTDScheduleConfig | None = None
    """Kept-token schedule."""
    layer_token_lr_schedule: LayerTokenLRScheduleConfig = field(default_factory=LayerTokenLRScheduleConfig)
    """Must stay disabled."""

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        for key in ("total_layer_num", "random_ltd_layer_num", "random_ltd_layer_id", "model_mask_name",
                    "model_type", "hidden_state_order", "random_ltd_schedule"):
            require(getattr(self, key) is not None, key, "required when random_ltd is enabled")
        ids = self.random_ltd_layer_id
        require(self.total_layer_num >= 1, "total_layer_num", f"must be >= 1, got {self.total_layer_num}")
        require(self.random_ltd_layer_num == len(ids), "random_ltd_layer_num",
                 f"{self.random_ltd_layer_num} does not match the {len(ids)} ids in random_ltd_layer_id")
        require(len(ids) >= 1, "random_ltd_layer_id", "is empty; name at least one layer (the recipes use 1..L-2)")
        require(len(set(ids)) == len(ids), "random_ltd_layer_id", f"contains duplicates: {ids}")
        for i, layer in enumerate(ids):
            require(0 <= layer < self.total_layer_num, f"random_ltd_layer_id[{i}]",
                     f"layer {layer} is outside [0, total_layer_num) = [0, {self.total_layer_num})")

    @property
    def layer_ids(self) -> list[int]:
        """The token-dropping layers in ascending order (the order the wrapped layers run in)."""
        return sorted(self.random_ltd_layer_id or [])


@dataclass(kw_only=True)
class DataRoutingConfig:
    """``data_efficiency.data_routing``."""

    enabled: bool = False
    """Parent switch of data routing; must be on when random_ltd is."""
    random_ltd: RandomLTDConfig = field(default_factory=RandomLTDConfig)
    """Random-LTD settings."""

    def __post_init__(self) -> None:
        require(self.enabled or not self.random_ltd.enabled, "enabled",
                 "is false but random_ltd.enabled is true; set both to true (or disable random_ltd)")


# --------------------------------------------------------------------------------------------------------------
# Legacy seqlen warm-up and the whole section
# --------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class LegacyCurriculumConfig:
    """DeepSpeed's legacy top-level ``curriculum_learning`` block: sequence-length warm-up of every batch."""

    enabled: bool = False
    """Turn the seqlen warm-up on."""
    curriculum_type: Literal["seqlen"] = "seqlen"
    """Only seqlen exists."""
    min_difficulty: int = 1
    """Sequence length at the first step."""
    max_difficulty: int = 1
    """Final sequence length (normally the model's seq_length)."""
    schedule_type: ScheduleType = "fixed_linear"
    """Pacing function, as for curriculum metrics."""
    schedule_config: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Parameters of the pacing function."""

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        require(self.min_difficulty >= 1, "min_difficulty",
                f"a sequence length must be >= 1, got {self.min_difficulty}")
        require(self.min_difficulty <= self.max_difficulty, "min_difficulty",
                 f"{self.min_difficulty} is greater than max_difficulty {self.max_difficulty}")
        try:
            self.schedule_config.check(self.schedule_type, self.min_difficulty, self.max_difficulty)
        except ConfigKeyError as e:
            raise e.under("schedule_config") from None


@dataclass(kw_only=True)
class DataEfficiencyConfig:
    """The whole ``data_efficiency`` section plus the legacy top-level ``curriculum_learning`` block."""

    enabled: bool = False
    """Parent switch; must be on when curriculum learning or random-LTD is."""
    seed: int = 1234
    """Seed of the curriculum sampler's random stream."""
    data_sampling: DataSamplingConfig = field(default_factory=DataSamplingConfig)
    """Curriculum learning (sampling side)."""
    data_routing: DataRoutingConfig = field(default_factory=DataRoutingConfig)
    """Random-LTD (routing side)."""
    legacy_curriculum: LegacyCurriculumConfig = field(default_factory=LegacyCurriculumConfig)
    """Top-level ``curriculum_learning`` of a DeepSpeed config (not part of the data_efficiency section)."""

    def __post_init__(self) -> None:
        require(self.enabled or not self.data_sampling.curriculum_learning.enabled, "enabled",
                 "is false but data_sampling.curriculum_learning.enabled is true; set both to true")
        require(self.enabled or not self.data_routing.random_ltd.enabled, "enabled",
                 "is false but data_routing.random_ltd.enabled is true; set both to true")
        if self.legacy_curriculum.enabled and self.curriculum_enabled:
            seqlen = self.data_sampling.curriculum_learning.seqlen_metric
            if seqlen is not None:
                raise ConfigKeyError(
                    f"data_sampling.curriculum_learning.curriculum_metrics.{seqlen}",
                    "the legacy top-level curriculum_learning seqlen warm-up is enabled too; both would change "
                    "the sequence length, keep only one",
                )

    @property
    def curriculum_enabled(self) -> bool:
        """True iff data-efficiency curriculum learning is on."""
        return self.data_sampling.curriculum_learning.enabled

    @property
    def random_ltd_enabled(self) -> bool:
        """True iff random-LTD is on."""
        return self.data_routing.random_ltd.enabled


# --------------------------------------------------------------------------------------------------------------
# JSON -> dataclasses with key paths
# --------------------------------------------------------------------------------------------------------------

_SECTION_KEYS = ("enabled", "seed", "data_sampling", "data_routing")


def parse_data_efficiency_config(data: Mapping[str, Any]) -> DataEfficiencyConfig:
    """Parse a bare ``data_efficiency`` section or a whole DeepSpeed config dict.

    A dict with one of the section's own keys (enabled, seed, data_sampling, data_routing) at the top and no
    ``data_efficiency``/``curriculum_learning`` key is the section itself (unknown keys are errors); any other dict
    is a whole DeepSpeed config, whose other keys (train_batch_size, fp16, ...) belong to the training room
    (``training.deepspeed_config``), except the legacy top-level ``curriculum_learning``.

    Raises:
        ValueError: unknown key, missing key, wrong type or inconsistent value, naming the key path.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a data efficiency config must be a JSON object, got {type(data).__name__}")
    legacy = LegacyCurriculumConfig()
    # A bare section has at least one of its own keys at the top; anything else is a whole DeepSpeed config (maybe
    # without a data_efficiency section: a baseline recipe's batch/precision settings only).
    bare = "data_efficiency" not in data and "curriculum_learning" not in data and any(k in data for k in _SECTION_KEYS)
    if not bare:
        section = data.get("data_efficiency", {})
        if "curriculum_learning" in data:
            legacy = from_mapping(LegacyCurriculumConfig, data["curriculum_learning"], "curriculum_learning")
    else:
        unknown = sorted(set(data) - set(_SECTION_KEYS))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown key; a bare data_efficiency section has keys {list(_SECTION_KEYS)} "
                "(or pass a whole DeepSpeed config with a 'data_efficiency' key)"
            )
        section = data
    parsed = from_mapping(_SectionOnly, section, "data_efficiency")
    try:
        return DataEfficiencyConfig(
            enabled=parsed.enabled, seed=parsed.seed, data_sampling=parsed.data_sampling,
            data_routing=parsed.data_routing, legacy_curriculum=legacy,
        )
    except ConfigKeyError as e:
        raise e.under("data_efficiency") from None


@dataclass(kw_only=True)
class _SectionOnly:
    """The JSON-visible keys of ``data_efficiency`` (``legacy_curriculum`` lives at the DeepSpeed top level)."""

    enabled: bool = False
    """See DataEfficiencyConfig."""
    seed: int = 1234
    """See DataEfficiencyConfig."""
    data_sampling: DataSamplingConfig = field(default_factory=DataSamplingConfig)
    """See DataEfficiencyConfig."""
    data_routing: DataRoutingConfig = field(default_factory=DataRoutingConfig)
    """See DataEfficiencyConfig."""


def load_data_efficiency_config(path: str | os.PathLike) -> DataEfficiencyConfig:
    """Read a JSON file holding a bare ``data_efficiency`` section or a whole DeepSpeed config.

    Raises:
        ValueError: the file is not valid JSON (with line/column) or the config is invalid (with the key path).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    try:
        return parse_data_efficiency_config(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------------------
# Command line (Megatron-DeepSpeed spellings)
# --------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DataEfficiencyArgs:
    """Megatron-DeepSpeed's data-efficiency switches; ``--train-data-exact-num-epochs`` belongs to DataConfig."""

    deepspeed: bool = False
    """Accepted for Megatron-DeepSpeed scripts; requires --deepspeed-config (there is no DeepSpeed engine here)."""
    deepspeed_config: str | None = field(default=None, metadata={"aliases": ["--deepspeed_config"]})
    """JSON file with a data_efficiency section (a whole DeepSpeed config or the bare section)."""
    data_efficiency_curriculum_learning: bool = False
    """Train with the curriculum sampler; the JSON's data_sampling.curriculum_learning must be enabled."""
    random_ltd: bool = False
    """Wrap the transformer layers with random-LTD; the JSON's data_routing.random_ltd must be enabled."""

    def __post_init__(self) -> None:
        if self.deepspeed and not self.deepspeed_config:
            raise ValueError("deepspeed is set but deepspeed_config is not; pass the JSON file holding data_efficiency")
        if (self.data_efficiency_curriculum_learning or self.random_ltd) and not self.deepspeed_config:
            raise ValueError(
                "data_efficiency_curriculum_learning / random_ltd need deepspeed_config: the JSON file holding "
                "the data_efficiency section"
            )

    def load(self) -> DataEfficiencyConfig:
        """Read ``deepspeed_config`` (default config when None) and check it agrees with the switches.

        Raises:
            ValueError: a switch is on but the JSON section is off, or the other way round.
        """
        if self.deepspeed_config is None:
            return DataEfficiencyConfig()
        cfg = load_data_efficiency_config(self.deepspeed_config)
        pairs = (
            ("data_efficiency_curriculum_learning", cfg.curriculum_enabled,
             "data_efficiency.data_sampling.curriculum_learning.enabled"),
            ("random_ltd", cfg.random_ltd_enabled, "data_efficiency.data_routing.random_ltd.enabled"),
        )
        for flag, json_on, key in pairs:
            if getattr(self, flag) != json_on:
                raise ValueError(
                    f"{self.deepspeed_config}: {key} is {str(json_on).lower()} but {flag} is "
                    f"{getattr(self, flag)}; turn both on or both off"
                )
        return cfg
