"""Training-room config and the composed ``PretrainConfig`` with its command line and cross-room validation.

``TrainingConfig`` holds the optimizer, schedule, precision, evaluation, logging, checkpoint and exit knobs with
Megatron's flag names and defaults. ``PretrainConfig`` composes every room's dataclass, generates one argparse
parser from them (a flag defined by two rooms is a programming error), and ``validate()`` runs the cross-room
rules, one small named function each, before any process group exists, so every rank fails the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

from megatron.config import add_dataclass_arguments, dataclass_from_namespace, dataclass_to_dict, flag_name
from megatron.data.config import DataConfig
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.model.config import TransformerConfig
from megatron.parallel.config import ParallelConfig
from megatron.training.compat import MegatronCompatConfig, check_refused_flags
from megatron.training.compat_megatron_lm import FLAG_ALIASES, VALUE_ALIASES
from megatron.training.lr_schedule import LRDecayStyle, LRScheduleSpec
from megatron.training.microbatches import BatchSizeSchedule, check_rampup
from megatron.training.pipeline_rules import check_pipeline_parallel

__all__ = ["TrainingConfig", "MegatronCompatConfig", "PretrainConfig", "format_config"]


@dataclass(kw_only=True)
class TrainingConfig:
    """Optimization, precision, evaluation, logging, checkpointing and exit (Megatron's flags and defaults)."""

    micro_batch_size: int = 1
    """Samples per micro-batch per data-parallel rank."""
    global_batch_size: int | None = None
    """Samples per optimizer step over all ranks; default micro_batch_size x data-parallel size. With
    --rampup-batch-size: the size the ramp ends at."""
    rampup_batch_size: list[int] | None = None
    """Megatron's batch-size ramp-up, START INCREMENT SAMPLES: the global batch starts at START and grows by
    INCREMENT in equal sample intervals until it reaches --global-batch-size after SAMPLES consumed samples (every
    value a multiple of micro batch x data-parallel size). Evaluation always uses the full global batch."""
    train_iters: int | None = None
    """Optimizer steps to train for (exclusive with --train-samples)."""
    train_samples: int | None = None
    """Samples to train for (exclusive with --train-iters)."""
    train_tokens: int | None = None
    """Stop once this many tokens (counted from the actual batches) have been consumed; alone or as a further
    stop with --train-iters/--train-samples as an upper bound (as Megatron-DeepSpeed's recipes do)."""
    lr: float | None = None
    """Peak learning rate (required)."""
    min_lr: float = 0.0
    """Learning rate floor at the end of decay."""
    lr_decay_style: LRDecayStyle = "linear"
    """Decay after warmup."""
    lr_decay_iters: int | None = None
    """Decay length in iterations (x global batch = samples); default the training length."""
    lr_decay_samples: int | None = None
    """Decay length in samples; default the training length."""
    lr_decay_tokens: int | None = None
    """Decay length in tokens: switches the schedule to token counting (Megatron-DeepSpeed)."""
    lr_warmup_fraction: float | None = None
    """Warmup as a fraction of the decay length."""
    lr_warmup_iters: int = 0
    """Warmup length in iterations."""
    lr_warmup_samples: int = 0
    """Warmup length in samples."""
    lr_warmup_tokens: int | None = None
    """Warmup length in tokens."""
    lr_warmup_init: float = 0.0
    """Learning rate at the start of warmup."""
    override_opt_param_scheduler: bool = field(default=False, metadata={"aliases": ["--override-opt_param-scheduler"]})
    """On resume, use the command line's schedule and ignore the checkpoint's."""
    use_checkpoint_opt_param_scheduler: bool = field(
        default=False, metadata={"aliases": ["--use-checkpoint-opt_param-scheduler"]}
    )
    """On resume, take the schedule from the checkpoint."""
    optimizer: Literal["adam"] = "adam"
    """Optimizer (AdamW with decoupled weight decay, as Megatron's Adam)."""
    weight_decay: float = 0.01
    """Weight decay of matrices (biases and norms get none)."""
    adam_beta1: float = 0.9
    """Adam first-moment decay."""
    adam_beta2: float = 0.999
    """Adam second-moment decay."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Global gradient-norm clipping threshold (0 disables)."""
    fp16: bool = False
    """fp16 model with fp32 master weights and loss scaling."""
    bf16: bool = False
    """bf16 model with fp32 master weights and fp32 gradient accumulation."""
    loss_scale: float | None = None
    """Static loss scale for fp16; default dynamic scaling."""
    initial_loss_scale: float = 2.0**32
    """Initial dynamic loss scale."""
    min_loss_scale: float = 1.0
    """Dynamic loss scale floor."""
    loss_scale_window: int = 1000
    """Clean steps before the dynamic loss scale doubles."""
    hysteresis: int = 2
    """Overflows tolerated before the dynamic loss scale halves."""
    check_for_nan_in_loss_and_grad: bool = True
    """Stop with an error on a non-finite loss or gradient norm (bf16/fp32); fp16 overflows are always skipped."""
    seed: int = 1234
    """Random seed (python, numpy, torch, model-parallel RNG tracker)."""
    torch_num_threads: int | None = None
    """CPU intra-op threads (torch.set_num_threads); default torch's own choice, which follows the process's CPU
    affinity. CPU runs are bit-identical only at equal thread counts (docs/fault_cases.md)."""
    eval_interval: int = 1000
    """Evaluate on the validation split every this many iterations."""
    eval_iters: int = 100
    """Global batches per evaluation (0 disables evaluation)."""
    skip_test: bool = False
    """Do not evaluate the test split at the end of training."""
    log_interval: int = 100
    """Iterations between console/metrics lines."""
    tensorboard_dir: str | None = None
    """Write TensorBoard scalars here."""
    metrics_file: str | None = None
    """Append one JSON object per log interval and per evaluation to this file."""
    peak_tflops: float | None = None
    """Peak TFLOP/s of one device for MFU; default a table of known GPUs (MFU omitted on CPU)."""
    save: str | None = None
    """Checkpoint directory to write."""
    save_interval: int | None = None
    """Iterations between checkpoints."""
    load: str | None = None
    """Checkpoint directory to resume from; one that holds no checkpoint is an error unless
    --allow-missing-checkpoint."""
    allow_missing_checkpoint: bool = False
    """Start from scratch when --load holds no checkpoint (first run of a resumable recipe). Without it a --load
    that finds nothing is an error, so a mistyped path never trains a fresh model silently."""
    exit_on_missing_checkpoint: bool = False
    """Megatron's flag: stop with an error when --load holds no checkpoint; that is the default here."""
    overwrite_checkpoints: bool = False
    """Let this run save into a --save directory whose latest checkpoint is newer than the iteration the run starts
    at (its saves then replace those iterations and move latest_checkpointed_iteration.txt back)."""
    override_checkpoint_args: bool = False
    """Resume although the checkpoint was saved with other defining arguments (architecture, tokenizer,
    seq_length, data efficiency): the command line wins and the differences are logged."""
    no_load_optim: bool = False
    """Load model weights (and counters) but not the optimizer, loss scaler and LR schedule."""
    no_load_rng: bool = False
    """Do not restore random states."""
    finetune: bool = False
    """Load model weights only and start counting at iteration 0."""
    exit_interval: int | None = None
    """Save (if --save) and exit when the iteration is a multiple of this."""
    exit_duration_in_mins: float | None = None
    """Save (if --save) and exit after this many minutes of training."""
    exit_signal_handler: bool = False
    """On SIGTERM, save (if --save) and exit cleanly after the current iteration."""

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "log_interval", "eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1; change {flag_name(name)}")
        if self.fp16 and self.bf16:
            raise ValueError("fp16 and bf16 are both set; pass only one of --fp16 / --bf16")
        warmups = [n for n in ("lr_warmup_fraction", "lr_warmup_tokens") if getattr(self, n) is not None]
        warmups += [n for n in ("lr_warmup_iters", "lr_warmup_samples") if getattr(self, n)]
        if len(warmups) > 1:
            raise ValueError(
                f"several warmup lengths given ({', '.join(flag_name(n) for n in warmups)}); pass only one"
            )
        if self.lr_warmup_fraction is not None and not 0.0 <= self.lr_warmup_fraction <= 1.0:
            raise ValueError(f"lr_warmup_fraction ({self.lr_warmup_fraction}) must be in [0, 1]")
        decays = [n for n in ("lr_decay_iters", "lr_decay_samples", "lr_decay_tokens") if getattr(self, n) is not None]
        if len(decays) > 1:
            raise ValueError(f"several decay lengths given ({', '.join(flag_name(n) for n in decays)}); pass one")

    def total_train_samples(self, batches: BatchSizeSchedule, seq_length: int) -> int:
        """Upper bound of training samples: the dataset size to build (tokens-only: the iteration boundary at or
        past ceil(tokens / seq_length) samples)."""
        if self.train_samples is not None:
            return self.train_samples
        if self.train_iters is not None:
            return batches.samples_after(self.train_iters)
        assert self.train_tokens is not None, "validate() requires one of train_iters/train_samples/train_tokens"
        return batches.samples_reaching(-(-self.train_tokens // seq_length))

    def total_train_iters(self, batches: BatchSizeSchedule, seq_length: int) -> int:
        """Iterations of the run (tokens-only: the upper bound at full-length sequences)."""
        if self.train_iters is not None:
            return self.train_iters
        return batches.iterations_within(self.total_train_samples(batches, seq_length))

    def lr_schedule_spec(self, batches: BatchSizeSchedule, seq_length: int) -> LRScheduleSpec:
        """Resolve the schedule into samples/tokens (Megatron counts its scheduler in samples). A length in
        iterations becomes the samples those iterations consume, which a batch-size ramp-up makes fewer than
        iterations x global batch size."""
        assert self.lr is not None, "validate() requires lr"
        decay_tokens = self.lr_decay_tokens
        decay_samples = self.lr_decay_samples
        if self.lr_decay_iters is not None:
            decay_samples = batches.samples_after(self.lr_decay_iters)
        if decay_samples is None and decay_tokens is None:
            if self.train_samples is not None or self.train_iters is not None:
                decay_samples = self.total_train_samples(batches, seq_length)
            else:
                decay_tokens = self.train_tokens
        warmup_samples = self.lr_warmup_samples or batches.samples_after(self.lr_warmup_iters)
        warmup_tokens = self.lr_warmup_tokens
        if self.lr_warmup_fraction is not None:
            if decay_tokens is not None:
                warmup_tokens = int(self.lr_warmup_fraction * decay_tokens)
            else:
                warmup_samples = int(self.lr_warmup_fraction * decay_samples)
        return LRScheduleSpec(
            max_lr=self.lr, min_lr=self.min_lr, warmup_init=self.lr_warmup_init, decay_style=self.lr_decay_style,
            warmup_samples=warmup_samples, decay_samples=decay_samples, warmup_tokens=warmup_tokens,
            decay_tokens=decay_tokens,
        )


# Megatron-LM / Megatron-DeepSpeed spellings of our flags: switch -> (room, field, value); flag -> (field, type).
_ALIASES, _VALUE_ALIASES = FLAG_ALIASES, VALUE_ALIASES


def _flag_spellings(cls: type, only: dataclasses.Field | None = None) -> list[str]:
    """Every command-line spelling of ``cls``'s fields (or of the field ``only``)."""
    fields = [only] if only is not None else [f for f in dataclasses.fields(cls) if f.init]
    return [s for f in fields for s in (flag_name(f.name), *f.metadata.get("aliases", ()))]


_ROOMS: dict[str, type] = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "parallel": ParallelConfig,
    "model": TransformerConfig,
    "training": TrainingConfig,
    "compat": MegatronCompatConfig,
}


@dataclass(kw_only=True)
class PretrainConfig:
    """Every room's config for one pretraining run, plus the world size it was validated for."""

    model: TransformerConfig
    """The model room's section (required: it has no default architecture; use TransformerConfig.flavor)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data room's section."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer section of the data room."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """The parallel room's section."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """This room's section."""
    compat: MegatronCompatConfig = field(default_factory=MegatronCompatConfig)
    """Megatron flags accepted for script compatibility."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Further rooms' configs by name (e.g. data efficiency), added by the entry script via ``extra_sections``."""
    world_size: int = 1
    """Number of processes; set by validate() from WORLD_SIZE."""
    explicit_flags: frozenset[str] = frozenset()
    """Fields set on the command line (``from_args``), by field name: a DeepSpeed config may fill the others but
    must agree with these (``training.deepspeed_config``). Not part of ``to_dict``."""

    # ---- command line -------------------------------------------------------------------------------------
    @staticmethod
    def build_parser(extra_sections: Mapping[str, type] | None = None) -> argparse.ArgumentParser:
        """One parser over every room's dataclass (and ``extra_sections``); a flag defined twice is a bug."""
        sections = {**_ROOMS, **(extra_sections or {})}
        owner: dict[str, str] = {}
        for room, cls in sections.items():
            for f in dataclasses.fields(cls):
                if f.init and f.metadata.get("cli", True) is not False:
                    if f.name in owner and owner[f.name] != "compat":  # a compat placeholder steps aside
                        raise TypeError(
                            f"flag {flag_name(f.name)} is defined by both the {owner[f.name]!r} and {room!r} configs;"
                            " rename one field"
                        )
                    owner[f.name] = room
        parser = argparse.ArgumentParser(
            description="Megatron-DE pretraining", allow_abbrev=False,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        extra_flags = {s for cls in (extra_sections or {}).values() for s in _flag_spellings(cls)}
        for room, cls in sections.items():
            # A compat placeholder steps aside for an extra section that implements the same spelling.
            exclude = [f.name for f in dataclasses.fields(cls) if set(_flag_spellings(cls, f)) & extra_flags] \
                if room == "compat" else []
            add_dataclass_arguments(parser, cls, title=f"{room} ({cls.__name__})", exclude=exclude)
        aliases = parser.add_argument_group("Megatron aliases")
        for flag, (name, kind) in _VALUE_ALIASES.items():
            if name in owner:
                aliases.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS,
                                     help=f"Same as {flag_name(name)}.")
        for flag, (room, name, value) in _ALIASES.items():
            if name not in owner:
                continue
            if value is True or value is False:
                same = flag_name(name) if value else f"--no-{flag_name(name)[2:]}"
            else:
                same = f"{flag_name(name)} {value}"
            aliases.add_argument(flag, dest=name, action="store_const", const=value, default=argparse.SUPPRESS,
                                 help=f"Same as {same}.")
        return parser

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, *, extra_sections: Mapping[str, type] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> PretrainConfig:
        """Parse ``argv`` (default ``sys.argv[1:]``) into a config; unknown flags are errors.

        ``defaults`` (field name -> value) replace dataclass defaults for flags not given, as Megatron's entry
        scripts' ``args_defaults`` do (``pretrain_bert.py``: the WordPiece tokenizer)."""
        parser = cls.build_parser(extra_sections)
        ns = parser.parse_args(argv)
        given = frozenset(vars(ns))
        for name, value in (defaults or {}).items():
            if name not in given:
                setattr(ns, name, value)
        extras = {room: dataclass_from_namespace(klass, ns) for room, klass in (extra_sections or {}).items()}
        taken = {f.name for klass in (extra_sections or {}).values() for f in dataclasses.fields(klass)}
        rooms = {room: dataclass_from_namespace(klass, argparse.Namespace(**{  # compat steps aside (build_parser)
            k: v for k, v in vars(ns).items() if room != "compat" or k not in taken})) for room, klass in _ROOMS.items()}
        if rooms["compat"].zero_stage == 1:
            rooms["parallel"].use_distributed_optimizer = True
        return cls(**rooms, extras=extras, explicit_flags=given)

    # ---- derived quantities -------------------------------------------------------------------------------
    @property
    def data_parallel_size(self) -> int:
        p = self.parallel
        return self.world_size // (p.tensor_model_parallel_size * p.pipeline_model_parallel_size)

    @property
    def global_batch_size(self) -> int:
        t = self.training
        return t.global_batch_size if t.global_batch_size is not None else t.micro_batch_size * self.data_parallel_size

    @property
    def num_microbatches(self) -> int:
        """Gradient-accumulation steps: global batch / (micro batch x data-parallel size)."""
        return self.global_batch_size // (self.training.micro_batch_size * self.data_parallel_size)

    def batch_schedule(self) -> BatchSizeSchedule:
        """The global batch size of every iteration (constant, or ramped up by --rampup-batch-size)."""
        t = self.training
        rampup = tuple(t.rampup_batch_size) if t.rampup_batch_size is not None else None
        return BatchSizeSchedule(self.global_batch_size, t.micro_batch_size, self.data_parallel_size, rampup)

    def lr_schedule_spec(self) -> LRScheduleSpec:
        return self.training.lr_schedule_spec(self.batch_schedule(), self.data.seq_length)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready resolved config (saved beside checkpoints)."""
        out = dataclass_to_dict(self)
        out.pop("explicit_flags", None)
        out["extras"] = {k: dataclass_to_dict(v) for k, v in self.extras.items()}
        out["derived"] = {"data_parallel_size": self.data_parallel_size, "global_batch_size": self.global_batch_size,
                          "num_microbatches": self.num_microbatches}
        return json.loads(json.dumps(out, default=str))

    # ---- validation ---------------------------------------------------------------------------------------
    def validate(
        self, world_size: int | None = None, extra_rules: Sequence[Callable[[PretrainConfig], None]] = (),
        rules: Sequence[Callable[[PretrainConfig], None]] | None = None,
    ) -> PretrainConfig:
        """Run every cross-room rule (before any process group exists) and fill in the global batch size.

        Args:
            world_size: number of processes; default ``$WORLD_SIZE`` (1 without torchrun).
            extra_rules: further ``rule(cfg)`` checks of extension rooms.
            rules: the base rules to run instead of all of :data:`RULES` (downstream tasks need no training data
                or length, for instance).
        Raises:
            ValueError / NotImplementedError naming the values and the flag to change.
        """
        self.world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
        for rule in (*(RULES if rules is None else rules), *extra_rules):
            rule(self)
        self.training.global_batch_size = self.global_batch_size
        # The model stores its parameters in the training precision; fp32 master copies live in the optimizer.
        t = self.training
        self.model.params_dtype = "bfloat16" if t.bf16 else "float16" if t.fp16 else "float32"
        return self


# ---- cross-room rules: one small function each ---------------------------------------------------------------
def check_unsupported(cfg: PretrainConfig) -> None:
    c = cfg.compat
    for name, ok in (
        ("context_parallel_size", c.context_parallel_size == 1),
        ("zero_stage", c.zero_stage in (0, 1)),
    ):
        if not ok:
            raise NotImplementedError(
                f"{flag_name(name)} {getattr(c, name)} is not supported (no context parallelism, ZeRO <= 1);"
                f" remove {flag_name(name)}"
            )


def check_megatron_compat(cfg: PretrainConfig) -> None:
    """Megatron flags that ask for something not built here (``training.compat``) fail with what to use instead."""
    check_refused_flags(cfg.compat, rope=cfg.model.position_embedding_type == "rope",
                        num_attention_heads=cfg.model.num_attention_heads)


def check_gradient_accumulation(cfg: PretrainConfig) -> None:
    """A DeepSpeed config's ``gradient_accumulation_steps`` x micro batch x data-parallel size is the global batch;
    it fills a global batch the flags leave open, and must match one they set."""
    steps, t = cfg.compat.deepspeed_gradient_accumulation_steps, cfg.training
    if steps is None:
        return
    want = steps * t.micro_batch_size * cfg.data_parallel_size
    if t.global_batch_size is None:
        t.global_batch_size = want
    elif t.global_batch_size != want:
        raise ValueError(
            f"the DeepSpeed config's gradient_accumulation_steps ({steps}) x micro batch size ({t.micro_batch_size}) x "
            f"data-parallel size ({cfg.data_parallel_size}) = {want}, but the global batch size is "
            f"{t.global_batch_size} (--global-batch-size / train_batch_size); make them agree"
        )


def check_world_divisible_by_tp(cfg: PretrainConfig) -> None:
    tp, pp = cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size
    if cfg.world_size % (tp * pp):
        raise ValueError(
            f"world size ({cfg.world_size}) must be divisible by tensor_model_parallel_size ({tp}) x "
            f"pipeline_model_parallel_size ({pp}); change --tensor-model-parallel-size, "
            "--pipeline-model-parallel-size or the number of processes (torchrun --nproc-per-node)"
        )


def check_heads_divisible_by_tp(cfg: PretrainConfig) -> None:
    heads, tp = cfg.model.num_attention_heads, cfg.parallel.tensor_model_parallel_size
    if heads % tp:
        raise ValueError(
            f"num_attention_heads ({heads}) must be divisible by tensor_model_parallel_size ({tp}); change "
            "--num-attention-heads or --tensor-model-parallel-size"
        )
    groups = cfg.model.num_query_groups if cfg.model.group_query_attention else None
    if groups is not None and groups % tp:  # each rank holds whole key/value heads
        raise ValueError(f"num_query_groups ({groups}) must be divisible by tensor_model_parallel_size ({tp}); "
                         "change --num-query-groups or --tensor-model-parallel-size")


def check_global_batch(cfg: PretrainConfig) -> None:
    t, dp = cfg.training, cfg.data_parallel_size
    if t.global_batch_size is not None and t.global_batch_size % (t.micro_batch_size * dp):
        raise ValueError(
            f"global_batch_size ({t.global_batch_size}) must be a multiple of micro_batch_size ({t.micro_batch_size})"
            f" x data-parallel size ({dp}); change --global-batch-size or --micro-batch-size"
        )
    if t.global_batch_size is not None and t.global_batch_size < 1:
        raise ValueError(f"global_batch_size ({t.global_batch_size}) must be >= 1; change --global-batch-size")


def check_batch_rampup(cfg: PretrainConfig) -> None:
    """--rampup-batch-size: three values, ending at the global batch, every step whole micro-batches per rank."""
    t = cfg.training
    if t.rampup_batch_size is not None:
        check_rampup(t.rampup_batch_size, cfg.global_batch_size, t.micro_batch_size, cfg.data_parallel_size)


def check_seq_length(cfg: PretrainConfig) -> None:
    seq, max_pos = cfg.data.seq_length, cfg.model.max_position_embeddings
    if cfg.model.position_embedding_type == "learned_absolute" and seq > max_pos:
        raise ValueError(
            f"seq_length ({seq}) exceeds max_position_embeddings ({max_pos}); change --seq-length or "
            "--max-position-embeddings"
        )


def check_data_path(cfg: PretrainConfig) -> None:
    d = cfg.data
    if getattr(d, "mock_data", False):
        return
    if not d.data_path and not d.train_data_path:
        raise ValueError("no training data: pass --data-path PREFIX (or --train-data-path), or --mock-data")
    # Missing files fail here, on every rank before any process group exists, not later inside a collective.
    flags = ("--data-path",) * 3 if d.data_path is not None else (
        "--train-data-path", "--valid-data-path", "--test-data-path")
    for blend, flag in zip(d.blends(), flags):
        for prefix in blend.prefixes if blend is not None else ():
            missing = [p for p in (prefix + ".bin", prefix + ".idx") if not os.path.isfile(p)]
            if missing:
                raise ValueError(
                    f"{flag} {prefix!r}: {', '.join(missing)} not found; pass the prefix tools/preprocess_data.py "
                    "wrote (e.g. data/kjv_text_document for data/kjv_text_document.bin/.idx)"
                )


def check_tokenizer_files(cfg: PretrainConfig) -> None:
    tok = cfg.tokenizer
    for name in ("vocab_file", "merge_file", "tokenizer_model"):
        path = getattr(tok, name)
        if path is not None and not os.path.exists(path):
            raise ValueError(f"{name} {path!r} does not exist; change {flag_name(name)}")


def check_train_length(cfg: PretrainConfig) -> None:
    t = cfg.training
    if t.train_iters is not None and t.train_samples is not None:
        raise ValueError(
            f"train_iters ({t.train_iters}) and train_samples ({t.train_samples}) are both set; pass only one of "
            "--train-iters / --train-samples"
        )
    if t.train_iters is None and t.train_samples is None and t.train_tokens is None:
        raise ValueError("training length missing: pass --train-iters, --train-samples or --train-tokens")
    for name in ("train_iters", "train_samples", "train_tokens"):
        value = getattr(t, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} ({value}) must be >= 1; change {flag_name(name)}")
    if t.lr_decay_iters is not None and t.train_samples is not None:
        raise ValueError("--lr-decay-iters goes with --train-iters; with --train-samples use --lr-decay-samples")
    if t.lr_warmup_iters and t.train_samples is not None:
        raise ValueError("--lr-warmup-iters goes with --train-iters; with --train-samples use --lr-warmup-samples")


def check_lr(cfg: PretrainConfig) -> None:
    t = cfg.training
    if t.lr is None:
        raise ValueError("learning rate missing: pass --lr (e.g. --lr 6e-4)")
    if t.min_lr > t.lr:
        raise ValueError(f"min_lr ({t.min_lr}) exceeds lr ({t.lr}); change --min-lr or --lr")
    cfg.lr_schedule_spec()  # LRScheduleSpec raises on inconsistent lengths


def check_checkpoint_flags(cfg: PretrainConfig) -> None:
    t = cfg.training
    if t.save_interval is not None and t.save is None:
        raise ValueError(f"--save-interval {t.save_interval} needs --save DIR")
    if t.save_interval is not None and t.save_interval < 1:
        raise ValueError(f"save_interval ({t.save_interval}) must be >= 1; change --save-interval")
    if t.exit_interval is not None and t.exit_interval < 1:
        raise ValueError(f"exit_interval ({t.exit_interval}) must be >= 1; change --exit-interval")
    if t.allow_missing_checkpoint and t.exit_on_missing_checkpoint:
        raise ValueError("--allow-missing-checkpoint and --exit-on-missing-checkpoint contradict each other; pass one")
    if t.torch_num_threads is not None and t.torch_num_threads < 1:
        raise ValueError(f"torch_num_threads ({t.torch_num_threads}) must be >= 1; change --torch-num-threads")


def check_save_path(cfg: PretrainConfig) -> None:
    """``--save`` must be a directory or creatable as one: found now, not at the first save after hours of
    training."""
    save = cfg.training.save
    if save is None:
        return
    path = os.path.abspath(save)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--save {save!r} is a file, not a directory; pass the directory to write checkpoints into "
                         "(it is created if missing)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--save {save!r} cannot be created: {existing} is a file; pass another directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--save {save!r}: {existing} is not writable; pass a directory you can write to")


RULES: tuple[Callable[[PretrainConfig], None], ...] = (
    check_unsupported, check_megatron_compat, check_world_divisible_by_tp, check_heads_divisible_by_tp,
    check_gradient_accumulation, check_global_batch, check_batch_rampup, check_pipeline_parallel,
    check_seq_length, check_data_path, check_tokenizer_files, check_train_length, check_lr, check_checkpoint_flags,
    check_save_path,
)


def format_config(cfg: PretrainConfig) -> str:
    """Megatron's ``arguments`` block: one ``room.field .... value`` line per field (compat ones if given), sorted."""
    flat: dict[str, Any] = {}
    for room, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for k, v in values.items():  # compat flags only when given: there are hundreds, most never used
                flat.update({f"{room}.{k}": v} if room != "compat" or v not in (None, False) else {})
        else:
            flat[room] = values
    width = max(len(k) for k in flat) + 4
    lines = [f"  {k} {'.' * (width - len(k))} {v}" for k, v in sorted(flat.items())]
    return "\n".join(["------------------------ arguments ------------------------", *lines,
                      "-------------------- end of arguments ---------------------"])
