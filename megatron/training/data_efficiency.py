"""Curriculum learning and random-LTD as training-loop extensions, built from Megatron-DeepSpeed's flags.

``DATA_EFFICIENCY_SECTION`` registers ``--deepspeed_config/--data-efficiency-curriculum-learning/--random-ltd`` with
``PretrainConfig``; :func:`build_data_efficiency_extensions` reads the JSON, checks it against the model and data
config (before any process group exists) and returns the :class:`CurriculumExtension` (curriculum sampler + seqlen
truncation/reshape; BERT: :class:`BertCurriculumExtension`, truncation or padding trim) and
:class:`RandomLTDExtension` (wrapped layers + layer-token accounting) the loop runs.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Literal

import torch
import torch.distributed as dist
from torch import nn

from megatron.config import dataclass_to_dict, flag_name
from megatron.data.forced_indices import forced_index_epochs
from megatron.data.indexed_dataset import get_bin_path, get_idx_path
from megatron.data_efficiency.config import DataEfficiencyArgs, DataEfficiencyConfig, RandomLTDConfig
from megatron.data_efficiency.curriculum.bert_seqlen import bert_truncate, longest_real_length, padded_length
from megatron.data_efficiency.curriculum.identity import analysis_identities
from megatron.data_efficiency.curriculum.sampler import CurriculumSampler, build_curriculum_sampler
from megatron.data_efficiency.curriculum.truncation import SeqlenCurriculum
from megatron.data_efficiency.routing.random_ltd import RandomLTDController, wrap_layers
from megatron.data_efficiency.routing.scheduler import RandomLTDScheduler
from megatron.logging import get_logger, log_rank0
from megatron.training.config import PretrainConfig
from megatron.training.deepspeed_config import apply_deepspeed_config
from megatron.training.initialize import current_device
from megatron.training.loop import Batch, TrainerExtension
from megatron.training.microbatches import BatchSizeSchedule

__all__ = [
    "DATA_EFFICIENCY_SECTION",
    "ModelFamily",
    "CurriculumExtension",
    "BertCurriculumExtension",
    "RandomLTDExtension",
    "check_data_efficiency",
    "build_data_efficiency_extensions",
]

logger = get_logger(__name__)

DATA_EFFICIENCY_SECTION: dict[str, type] = {"data_efficiency": DataEfficiencyArgs}
"""``extra_sections`` for ``PretrainConfig.from_args``: the data-efficiency flags land in ``cfg.extras``."""

ModelFamily = Literal["gpt", "bert"]
"""Which entry script builds the extensions: it fixes the random-LTD ``model_type`` the layers need."""

_LTD_MODEL_TYPE: dict[str, str] = {"gpt": "decoder", "bert": "encoder"}
"""GPT layers attend causally (mask sliced top-left); BERT layers bidirectionally with a padding mask gathered by
the kept rows and columns (DeepSpeed's ``model_type`` of the Megatron-DeepSpeed GPT / BERT recipes)."""

_CL_KEY = "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics"
_LTD_KEY = "data_efficiency.data_routing.random_ltd"


# ---- extensions --------------------------------------------------------------------------------------------------
class CurriculumExtension(TrainerExtension):
    """Curriculum learning: the curriculum sampler replaces the training sampler; seqlen metrics shorten batches.

    With ``data_sampling.curriculum_learning`` on, every global batch comes from the curriculum sampler over the
    one-epoch training dataset and carries its curriculum step and difficulties (batch keys ``curriculum_step``,
    ``difficulties``, which survive worker prefetching and the tensor-parallel broadcast); a
    ``seqlen_truncate``/``seqlen_reshape`` metric then shortens the batch to its difficulty. The curriculum step
    counts global batches (optimizer steps), as DeepSpeed's: during a batch-size ramp-up (``rampup_batch_size``)
    the early steps are smaller batches, so the schedule advances per step, not per sample. With only DeepSpeed's legacy top-level ``curriculum_learning`` block, the
    default sampler stays and the seqlen warm-up runs at step = iteration (DeepSpeed's ``global_steps + 1``).
    The loop counts tokens from the shortened batches itself (``b * s`` after :meth:`process_batch`).
    """

    name = "curriculum_learning"

    def __init__(self, config: DataEfficiencyConfig, seq_length: int,
                 identities: list[dict[str, Any]] | None = None, rampup_batch_size: list[int] | None = None) -> None:
        self.config = config
        self.rampup_batch_size = list(rampup_batch_size) if rampup_batch_size is not None else None
        self.identities = identities  # of the training split, checked against each analysis (curriculum.identity)
        self.seqlen = SeqlenCurriculum.from_config(config, seq_length)
        self.sampler: CurriculumSampler | None = None
        self._pending: dict | None = None  # sampler state loaded before the sampler exists
        self._difficulties: dict[str, int] = {}

    def build_train_sampler(
        self, dataset: Any, *, consumed_samples: int, micro_batch_size: int, global_batch_size: int,
        dp_rank: int, dp_size: int,
    ) -> Iterator[list[int]] | None:
        if not self.config.curriculum_enabled:
            return None
        ramp = None
        if self.rampup_batch_size is not None:
            ramp = BatchSizeSchedule(global_batch_size, micro_batch_size, dp_size, tuple(self.rampup_batch_size)).at
        # The data stream commits each global batch when training takes it, so workers may draw ahead.
        sampler = build_curriculum_sampler(
            self.config, dataset, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size,
            dp_rank=dp_rank, dp_size=dp_size, identities=self.identities, auto_commit=False, batch_size_at=ramp,
        )
        if self._pending is not None:
            sampler.load_state_dict(self._pending)
            self._pending = None
        elif consumed_samples:
            raise ValueError(
                f"resuming at {consumed_samples} consumed samples from a checkpoint without curriculum sampler state;"
                " the curriculum stream cannot be reproduced - resume from a checkpoint of a curriculum run"
            )
        log_rank0(logger, "curriculum sampler over the %d samples of the analyzed training split x %d epochs, resuming "
                  "at step %d", sampler.layout.size, self.config.data_sampling.num_epochs, sampler.curriculum_step)
        self.sampler = sampler
        return sampler

    def _batch_state(self, batch: Batch, iteration: int) -> tuple[int, dict[str, int]]:
        """(curriculum step, difficulties) of the global batch being trained: drawn with it by the sampler."""
        if self.sampler is None:
            assert self.seqlen is not None, "a curriculum extension without sampler has the legacy seqlen warm-up"
            return iteration, self.seqlen.warmup_difficulties(iteration)
        assert "curriculum_step" in batch, "curriculum batches carry the step they were drawn at"
        return int(batch["curriculum_step"]), dict(batch["difficulties"])

    def process_batch(self, batch: Batch, iteration: int) -> Batch:
        _, self._difficulties = self._batch_state(batch, iteration)
        if self.seqlen is not None:
            batch, _num_tokens = self.seqlen.apply(batch, self._difficulties)
        return batch

    def metrics(self) -> dict[str, Any]:
        """``difficulty``: ``{metric: value}`` of the latest global batch (a nested object in the metrics file)."""
        return {"difficulty": dict(self._difficulties)} if self._difficulties else {}

    def run_config(self) -> dict[str, Any]:
        """The curriculum settings, without paths (the analyses are checked by their identity) and loader knobs."""
        out: dict[str, Any] = {"seed": self.config.seed}
        if self.config.curriculum_enabled:
            sampling = dataclass_to_dict(self.config.data_sampling)
            sampling.pop("num_workers", None)
            sampling["curriculum_learning"].pop("data_cluster_path", None)
            for metric in sampling["curriculum_learning"]["curriculum_metrics"].values():
                metric.pop("index_to_sample_path", None)
                metric.pop("index_to_metric_path", None)
            out["data_sampling"] = sampling
            if self.rampup_batch_size is not None:  # the sampler draws batches of the ramp's sizes
                out["rampup_batch_size"] = self.rampup_batch_size
        if self.config.legacy_curriculum.enabled:
            out["legacy_curriculum"] = dataclass_to_dict(self.config.legacy_curriculum)
        return out

    def state_dict(self) -> dict | None:
        if self.sampler is not None:
            return {"sampler": self.sampler.state_dict()}
        if self._pending is not None:
            return {"sampler": self._pending}
        return None  # the legacy warm-up is a pure function of the iteration

    def load_state_dict(self, state: dict) -> None:
        if "sampler" not in state:
            raise ValueError(f"curriculum checkpoint state has keys {sorted(state)}, expected 'sampler'")
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        else:
            self._pending = state["sampler"]


class BertCurriculumExtension(CurriculumExtension):
    """Curriculum learning for BERT (Megatron-DeepSpeed's ``pretrain_bert.py`` post-processing).

    The curriculum sampler works as for GPT. Each micro-batch is then shortened - tokens, types, labels, loss mask
    and padding mask alike - to the ``seqlen_truncate`` difficulty when that metric is configured, otherwise to its
    longest real sample, maximum over the data-parallel group (so every DP rank of a micro-batch step has one
    length), rounded up to a multiple of 8. The loop counts the tokens of the shortened batches.
    """

    def __init__(self, config: DataEfficiencyConfig, seq_length: int,
                 identities: list[dict[str, Any]] | None = None, rampup_batch_size: list[int] | None = None) -> None:
        super().__init__(config, seq_length, identities, rampup_batch_size)
        self.seq_length = seq_length
        self._dp_group: Any = None
        self._dp_size = 1

    def wrap_model(self, model: nn.Module) -> None:
        pstate = model.parallel_state  # BertModel's; only the DP group is needed (for the padding trim)
        self._dp_group, self._dp_size = pstate.dp_group, pstate.dp_size

    def _dp_max(self, value: int) -> int:
        if self._dp_group is None or self._dp_size == 1:
            return value
        buf = torch.tensor([value], dtype=torch.int64, device=current_device())
        dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=self._dp_group)
        return int(buf.item())

    def process_batch(self, batch: Batch, iteration: int) -> Batch:
        _, self._difficulties = self._batch_state(batch, iteration)
        if self.seqlen is not None:  # seqlen_truncate (reshape is refused for BERT by the config check)
            return bert_truncate(batch, self.seqlen.seqlen(self._difficulties))
        real = self._dp_max(longest_real_length(batch["padding_mask"]))
        return bert_truncate(batch, padded_length(real, self.seq_length))


class RandomLTDExtension(TrainerExtension):
    """Random-LTD: wraps the configured layers and does the layer-token accounting once per optimizer step.

    Token accounting (our choice, documented): the loop's ``consumed_tokens`` stays the data tokens of the actual
    batches; :meth:`adjust_tokens` returns the layer-averaged count ``rows * ((S (L - n) + min(r, S) n) // L)``,
    which the loop accumulates separately and feeds to the token-based LR schedule and ``--train-tokens`` - what
    Megatron-DeepSpeed calls ``consumed_train_tokens``, so its recipes' token budgets mean the same here. The layer
    tokens themselves (``rows * (S (L - n) + min(r, S) n)``, with the actual, possibly curriculum-shortened S,
    where DeepSpeed uses max_value) are checkpointed and logged as ``consumed_layer_tokens``. Micro-batches of one
    step may differ in length (BERT's padding trim: equal across DP ranks, not across micro-batches); each is
    counted at its own length. During a batch-size ramp-up a step has fewer micro-batches and is counted as it is;
    the kept-token schedule still advances once per optimizer step (DeepSpeed's global step).
    """

    name = "random_ltd"

    def __init__(self, config: RandomLTDConfig) -> None:
        self.config = config
        self.model_type = config.model_type
        self.controller: RandomLTDController | None = None
        self._seqs: list[int] = []  # lengths of the current step's (post-processed) micro-batches
        self._pending: dict | None = None

    def wrap_model(self, model: nn.Module) -> None:
        scheduler = RandomLTDScheduler(self.config)
        layer_ids = self.config.layer_ids
        if hasattr(model, "wrap_random_ltd"):  # a pipeline rank: each stage wraps its own layers (PipelinedGPT)
            self.controller = model.wrap_random_ltd(layer_ids, scheduler, model_type=self.model_type)
        else:
            self.controller = wrap_layers(model.layers, layer_ids, scheduler, model.rng_tracker,
                                          model_type=self.model_type)
        if self._pending is not None:
            self.controller.load_state_dict(self._pending)
            self._pending = None

    def _ctl(self) -> RandomLTDController:
        assert self.controller is not None, "wrap_model must run before training"
        return self.controller

    def on_step_begin(self, iteration: int) -> None:
        # DeepSpeed's scheduler step is engine.global_steps: optimizer steps already taken (0 for the first).
        self._ctl().set_step(iteration - 1)
        self._seqs = []

    def process_batch(self, batch: Batch, iteration: int) -> Batch:
        self._seqs.append(int(batch["tokens"].shape[1]))
        return batch

    def adjust_tokens(self, tokens: int, iteration: int) -> int:
        # Every micro-batch of a step has the same number of rows, and micro-batch k has the same length on every DP
        # rank, so tokens = rows * sum of the lengths, rows = global rows of one micro-batch step (all DP ranks).
        total = sum(self._seqs)
        assert total and tokens % total == 0, f"{tokens} tokens are not whole rows of lengths {self._seqs}"
        rows, ctl = tokens // total, self._ctl()
        for s in self._seqs:
            ctl.consume(s, rows)
        return sum(ctl.effective_tokens(s, rows) for s in self._seqs)

    def metrics(self) -> dict[str, Any]:
        """``ltd_kept_tokens`` (capped at the step's longest sequence) and ``consumed_layer_tokens``."""
        ctl = self._ctl()
        seq = max(self._seqs) if self._seqs else None
        return {"ltd_kept_tokens": ctl.kept_for(seq), "consumed_layer_tokens": ctl.consumed_layer_tokens}

    def run_config(self) -> dict[str, Any]:
        """The random-LTD section (layers, schedule, model type)."""
        return dataclass_to_dict(self.config)

    def state_dict(self) -> dict | None:
        return self._ctl().state_dict() if self.controller is not None else self._pending

    def load_state_dict(self, state: dict) -> None:
        if self.controller is not None:
            self.controller.load_state_dict(state)
        else:
            self._pending = dict(state)


# ---- validation (before any process group) -------------------------------------------------------------------------
def _check_analysis_files(de: DataEfficiencyConfig) -> None:
    for name, m in de.data_sampling.curriculum_learning.sampling_metrics.items():
        for key in ("index_to_sample_path", "index_to_metric_path"):
            paths = getattr(m, key)
            for prefix in [paths] if isinstance(paths, str) else list(paths or []):
                missing = [p for p in (get_idx_path(prefix), get_bin_path(prefix)) if not os.path.isfile(p)]
                if missing:
                    raise ValueError(
                        f"{_CL_KEY}.{name}.{key}: analysis file {missing[0]} does not exist; run tools/analyze_data.py"
                        " with the same data, split, seed and seq-length flags (and --save-path) first, or fix the path"
                    )


def _check_curriculum(cfg: PretrainConfig, de: DataEfficiencyConfig) -> None:
    cl, data = de.data_sampling.curriculum_learning, cfg.data
    if data.train_data_exact_num_epochs is None:
        # Megatron-DeepSpeed requires the flag; here one epoch is implied, or the count in the forced index files'
        # names (its BERT recipes train on a 5-epoch samples mapping, analyzed at 5 epochs).
        data.train_data_exact_num_epochs = forced_index_epochs(data) or 1
    name = cl.seqlen_metric
    if name is not None:
        m = cl.curriculum_metrics[name]
        if m.max_difficulty > data.seq_length:
            raise ValueError(f"{_CL_KEY}.{name}.max_difficulty ({m.max_difficulty}) exceeds --seq-length "
                             f"({data.seq_length}); lower it to at most the sequence length")
        if name == "seqlen_reshape" and data.reset_attention_mask:
            raise NotImplementedError(f"{_CL_KEY}.seqlen_reshape with --reset-attention-mask: rows would mix "
                                      "documents; use seqlen_truncate or drop --reset-attention-mask")
    _check_analysis_files(de)


def _check_bert_curriculum(de: DataEfficiencyConfig) -> None:
    if de.legacy_curriculum.enabled:
        raise NotImplementedError("the legacy top-level curriculum_learning seqlen warm-up is GPT's; for BERT use a "
                                  f"seqlen_truncate metric under {_CL_KEY}")
    if de.curriculum_enabled and de.data_sampling.curriculum_learning.seqlen_metric == "seqlen_reshape":
        raise NotImplementedError(f"{_CL_KEY}.seqlen_reshape cuts GPT token streams into rows; BERT samples are "
                                  "sentence pairs, use seqlen_truncate")


def _check_legacy(cfg: PretrainConfig, de: DataEfficiencyConfig) -> None:
    legacy = de.legacy_curriculum
    if legacy.max_difficulty > cfg.data.seq_length:
        raise ValueError(f"curriculum_learning.max_difficulty ({legacy.max_difficulty}) exceeds --seq-length "
                         f"({cfg.data.seq_length}); lower it to at most the sequence length")


def _check_random_ltd(cfg: PretrainConfig, ltd: RandomLTDConfig, family: ModelFamily) -> None:
    num_layers = cfg.model.num_layers
    if ltd.total_layer_num != num_layers:
        raise ValueError(f"{_LTD_KEY}.total_layer_num ({ltd.total_layer_num}) must equal --num-layers "
                         f"({num_layers}); the layer-token accounting divides by it")
    model_type = _LTD_MODEL_TYPE[family]
    if ltd.model_type != model_type:
        raise ValueError(f"{_LTD_KEY}.model_type is {ltd.model_type!r} but {family.upper()} layers need "
                         f"{model_type!r}; set \"model_type\": \"{model_type}\"")
    for key, want in (("hidden_state_order", "seq_batch_dim"), ("model_mask_name", "attention_mask")):
        if getattr(ltd, key) != want:
            raise NotImplementedError(f"{_LTD_KEY}.{key} {getattr(ltd, key)!r}: {family.upper()} layers here need "
                                      f"{want!r}")
    max_value = ltd.random_ltd_schedule.max_value
    if max_value > cfg.data.seq_length:
        raise ValueError(f"{_LTD_KEY}.random_ltd_schedule.max_value ({max_value}) exceeds --seq-length "
                         f"({cfg.data.seq_length}); the schedule would end before reaching it, set it to the length")
    if getattr(cfg.model, "sequence_parallel", False) or getattr(cfg.parallel, "sequence_parallel", False):
        raise NotImplementedError(f"random-LTD with {flag_name('sequence_parallel')}: the sequence is sharded, so "
                                  "tokens cannot be dropped per sample; drop one of them")


def check_data_efficiency(cfg: PretrainConfig, de: DataEfficiencyConfig, family: ModelFamily = "gpt") -> None:
    """Cross-room rules of the data-efficiency config against the model/data config of a ``family`` model; may set
    ``cfg.data.train_data_exact_num_epochs = 1`` (required by curriculum learning).

    Raises:
        ValueError / NotImplementedError naming the JSON key or flag, the values and what to change.
    """
    if family == "bert":
        _check_bert_curriculum(de)
    if de.curriculum_enabled:
        _check_curriculum(cfg, de)
    if de.legacy_curriculum.enabled:
        _check_legacy(cfg, de)
    if de.random_ltd_enabled:
        _check_random_ltd(cfg, de.data_routing.random_ltd, family)


def build_data_efficiency_extensions(cfg: PretrainConfig, family: ModelFamily = "gpt") -> list[TrainerExtension]:
    """Read ``--deepspeed_config`` (if any), validate it against ``cfg`` and a ``family`` model (``pretrain_gpt.py``:
    "gpt", ``pretrain_bert.py``: "bert") and build the loop extensions.

    The JSON's other keys (batch sizes, fp16/bf16 and the loss scaler, ZeRO stage, gradient clipping) are applied
    to ``cfg`` first (``training.deepspeed_config``), so a recipe trains as its DeepSpeed config says.

    Order matters: curriculum first (it shortens the batch), random-LTD second (it counts the shortened length).
    Returns an empty list when no data-efficiency feature is on.
    """
    args = cfg.extras.get("data_efficiency")
    if args is None:
        return []
    if args.deepspeed_config is not None:
        apply_deepspeed_config(cfg, args.deepspeed_config)
    de = args.load()
    check_data_efficiency(cfg, de, family)
    extensions: list[TrainerExtension] = []
    if de.curriculum_enabled or de.legacy_curriculum.enabled:
        kind = BertCurriculumExtension if family == "bert" else CurriculumExtension
        identities = None
        if de.curriculum_enabled:
            bert = cfg.extras.get("bert") if family == "bert" else None
            identities = analysis_identities(cfg.data, cfg.tokenizer, cfg.training.seed, bert)
        extensions.append(kind(de, cfg.data.seq_length, identities, cfg.training.rampup_batch_size))
    if de.random_ltd_enabled:
        extensions.append(RandomLTDExtension(de.data_routing.random_ltd))
    return extensions
