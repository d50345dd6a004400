"""What every downstream task shares: the parsed config, the process groups, the model with its checkpoint weights,
the split of examples over data-parallel ranks, a progress bar and the results (console table and JSON file).

A task runner is ``run(ctx: TaskContext) -> TaskResult``; ``tasks/main.py`` builds the context from the command
line (:func:`build_task_config`, :func:`task_context`) and reports what the runner returns (:func:`report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from megatron.config import dataclass_from_namespace, flag_name
from megatron.data.config import DataConfig
from megatron.data.tokenizers.base import MegatronTokenizer
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.logging import get_logger, log_rank0, setup_logging
from megatron.model.bert import BertModel
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.config import ParallelConfig
from megatron.parallel.state import ParallelState
from megatron.tasks.config import TaskConfig
from megatron.training import config as training_config
from megatron.training.checkpointing import iteration_dir, read_checkpoint, read_tracker
from megatron.training.config import MegatronCompatConfig, PretrainConfig, TrainingConfig
from megatron.training.initialize import current_device, initialize_distributed, set_random_seeds

__all__ = [
    "TaskContext", "TaskResult", "build_task_config", "task_context", "load_weights", "report", "write_json_atomic",
    "checkpoint_config", "jsonl_rows",
]

logger = get_logger(__name__)

# Architecture flags: when none is given, the checkpoint's config.json supplies the model section.
_ARCH_FIELDS = ("model_flavor", "num_layers", "hidden_size", "num_attention_heads")


def check_task_parallelism(cfg: PretrainConfig) -> None:
    """What the task runner does not do (its step is the plain data-parallel one): pipeline stages, sequence
    parallelism and a batch-size ramp-up are refused, naming the flag, instead of being silently ignored."""
    p, t = cfg.parallel, cfg.training
    for flag, given in (
        ("--pipeline-model-parallel-size", p.pipeline_model_parallel_size > 1),
        ("--sequence-parallel", bool(getattr(p, "sequence_parallel", False)) or
         bool(getattr(cfg.model, "sequence_parallel", False))),
        ("--rampup-batch-size", t.rampup_batch_size is not None),
    ):
        if given:
            raise NotImplementedError(f"tasks/main.py does not support {flag}; drop it (fine-tuning and evaluation "
                                      "run tensor x data parallel with a fixed global batch)")


# Base rules of a pretraining config that also hold for a downstream task (no training data or length needed).
TASK_RULES = (
    check_task_parallelism, training_config.check_unsupported, training_config.check_world_divisible_by_tp,
    training_config.check_heads_divisible_by_tp, training_config.check_global_batch,
    training_config.check_seq_length, training_config.check_tokenizer_files,
    training_config.check_checkpoint_flags, training_config.check_megatron_compat,
)


@dataclass
class TaskResult:
    """What a task runner reports: pooled metrics, optionally per evaluation file, and free-form details."""

    metrics: dict[str, float]
    per_file: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temp file and a rename (a crash never leaves half a file)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jsonl_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """``("path:line", parsed value)`` for every non-blank line of a JSONL task file.

    Raises:
        ValueError: naming ``path:line`` for a line that is not valid JSON.
    """
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}); each line must hold one JSON object") from None


# ---- config -------------------------------------------------------------------------------------------------------
def checkpoint_config(root: str) -> dict[str, Any] | None:
    """The run config saved beside the latest checkpoint under ``root`` (``iter_*/config.json``), or None."""
    tag = read_tracker(root)
    if tag is None:
        return None
    path = iteration_dir(root, tag) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); pass the model flags explicitly instead") from None


def _checkpoint_dir(task: TaskConfig, training: TrainingConfig) -> str | None:
    """The checkpoint whose weights the task uses: --pretrained-checkpoint for fine-tuning, --load (or
    --pretrained-checkpoint) for the evaluation tasks."""
    if task.is_gpt_task:
        return training.load or task.pretrained_checkpoint
    return task.pretrained_checkpoint or training.load


def build_task_config(argv: Sequence[str] | None) -> tuple[PretrainConfig, TaskConfig]:
    """Parse the task command line: every pretraining flag plus :class:`TaskConfig`'s.

    Without architecture flags (or with ``--use-checkpoint-args``) the model and tokenizer sections, and
    ``--seq-length``, come from the checkpoint's ``config.json``; flags on the command line override them.
    """
    parser = PretrainConfig.build_parser({"task": TaskConfig})
    parser.description = "Megatron-DE downstream tasks: zero-/few-shot GPT evaluation, BERT fine-tuning"
    ns = parser.parse_args(argv)
    task = dataclass_from_namespace(TaskConfig, ns)
    if task.task is None:
        raise ValueError("--task is required (e.g. --task LAMBADA, --task MC, --task MNLI)")
    training = dataclass_from_namespace(TrainingConfig, ns)
    root = _checkpoint_dir(task, training)
    given = vars(ns)
    saved = None
    if root is not None and (task.use_checkpoint_args or not any(k in given for k in _ARCH_FIELDS)):
        saved = checkpoint_config(root)
        if saved is None and not any(k in given for k in _ARCH_FIELDS):
            raise ValueError(
                f"no architecture flags given and {root} has no config.json to take them from; pass the model "
                "flags of the pretraining run (--num-layers, --hidden-size, --num-attention-heads, ...)"
            )
        if saved is not None:
            log_rank0(logger, "model and tokenizer flags from %s/config.json (command-line flags override)", root)
    model = _with_saved(TransformerConfig, ns, (saved or {}).get("model"))
    tokenizer = _with_saved(TokenizerConfig, ns, (saved or {}).get("tokenizer"))
    data_saved = {"seq_length": saved["data"]["seq_length"]} if saved and "data" in saved else None
    data = _with_saved(DataConfig, ns, data_saved)
    cfg = PretrainConfig(
        model=model, data=data, tokenizer=tokenizer, parallel=dataclass_from_namespace(ParallelConfig, ns),
        training=training, compat=_compat_without(TaskConfig, ns), extras={"task": task},
    )
    return cfg, task


def _compat_without(section: type, ns: Any) -> MegatronCompatConfig:
    """The compat placeholders, minus the ones ``section`` implements (they stepped aside in the parser, e.g.
    ``--pretrained-checkpoint``): a task flag must not read as a refused Megatron flag."""
    taken = {f.name for f in dataclasses.fields(section)}
    return dataclass_from_namespace(MegatronCompatConfig, argparse.Namespace(
        **{k: v for k, v in vars(ns).items() if k not in taken}))


def _with_saved(cls: type, ns: Any, saved: dict[str, Any] | None) -> Any:
    """``cls`` built from ``saved`` (its command-line fields only), then the flags given in ``ns`` on top."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    if saved:
        cli = {f.name for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True) is not False}
        kwargs = {k: v for k, v in saved.items() if k in cli}
    kwargs.update({k: v for k, v in vars(ns).items() if k in names})
    return cls(**kwargs)


# ---- runtime context --------------------------------------------------------------------------------------------
@dataclass
class TaskContext:
    """The resolved config and this process's place, device, tokenizer and padded vocabulary size."""

    cfg: PretrainConfig
    task: TaskConfig
    pstate: ParallelState
    device: torch.device
    tokenizer: MegatronTokenizer
    vocab_size: int
    checkpoint: str | None

    @property
    def eval_micro_batch_size(self) -> int:
        return self.task.eval_micro_batch_size or self.cfg.training.micro_batch_size

    @property
    def seq_length(self) -> int:
        return self.cfg.data.seq_length

    @property
    def is_rank0(self) -> bool:
        return self.pstate.rank == 0

    def build_gpt(self, load: bool = True) -> GPTModel:
        """The GPT of the config on this rank's device, in eval mode, with the checkpoint's weights if ``load``."""
        model = GPTModel(self.cfg.model, self.pstate, self.vocab_size, seed=self.cfg.training.seed)
        if load:
            load_weights(model, self._require_checkpoint(), self.pstate)
        return model.to(self.device).eval()

    def build_bert(self, add_binary_head: bool = True) -> BertModel:
        """A freshly initialized BERT of the config (on CPU); fine-tuning wraps it and loads the weights."""
        return BertModel(self.cfg.model, self.pstate, self.vocab_size, add_binary_head=add_binary_head,
                         seed=self.cfg.training.seed)

    def _require_checkpoint(self) -> str:
        if self.checkpoint is None:
            flag = "--load" if self.task.is_gpt_task else "--pretrained-checkpoint"
            raise ValueError(f"task {self.task.task} needs a checkpoint: pass {flag} DIR")
        return self.checkpoint

    def shard(self, num_examples: int) -> range:
        """This data-parallel rank's examples: every ``dp_size``-th from ``dp_rank`` (no example twice, unlike
        Megatron's padding with duplicates, so pooled counts are exact at any DP size)."""
        return range(self.pstate.dp_rank, num_examples, self.pstate.dp_size)

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` over the data-parallel ranks (tensor-parallel ranks hold the same numbers)."""
        if self.pstate.dp_group is None:
            return [float(v) for v in values]
        buf = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(buf, group=self.pstate.dp_group)
        return buf.tolist()

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterator:
        """``iterable`` with a progress bar on rank 0 (stderr; plain iteration elsewhere)."""
        if not self.is_rank0:
            yield from iterable
            return
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True,
                        disable=os.environ.get("MEGATRON_DE_NO_PROGRESS") == "1")


def _check_task_files(cfg: PretrainConfig) -> None:
    task: TaskConfig = cfg.extras["task"]
    for name in ("train_data", "valid_data"):
        for path in getattr(task, name) or ():
            if not os.path.exists(path):
                raise ValueError(f"{flag_name(name)} {path!r} does not exist; check the path")
    root = _checkpoint_dir(task, cfg.training)
    if root is not None and read_tracker(root) is None:
        read_checkpoint(root)  # raises with the hint about iter_* directories


@contextmanager
def task_context(cfg: PretrainConfig, task: TaskConfig) -> Iterator[TaskContext]:
    """Validate, start the process groups (torchrun or one process), seed, build the tokenizer; tear down after."""
    setup_logging()
    owns_group = not (dist.is_available() and dist.is_initialized())
    cfg.validate(world_size=None if owns_group else dist.get_world_size(), rules=TASK_RULES,
                 extra_rules=(_check_task_files,))
    pstate = initialize_distributed(cfg.parallel)
    try:
        set_random_seeds(cfg.training.seed, pstate)
        tokenizer = build_tokenizer(cfg.tokenizer)
        vocab = padded_vocab_size(tokenizer.vocab_size, cfg.tokenizer.make_vocab_size_divisible_by, pstate.tp_size)
        yield TaskContext(cfg=cfg, task=task, pstate=pstate, device=current_device(), tokenizer=tokenizer,
                          vocab_size=vocab, checkpoint=_checkpoint_dir(task, cfg.training))
    finally:
        if owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


# ---- weights ------------------------------------------------------------------------------------------------------
def _shape_hint(name: str, saved: tuple[int, ...], built: tuple[int, ...]) -> str:
    """The flags that decide the dimension in which ``saved`` and ``built`` differ."""
    rows_differ = len(saved) == len(built) and saved[0] != built[0]
    if "word_embeddings" in name or "lm_head.bias" in name:
        return ("--tokenizer-type/--vocab-file/--make-vocab-size-divisible-by" if rows_differ else "--hidden-size")
    if "position_embeddings" in name:
        return "--max-position-embeddings" if rows_differ else "--hidden-size"
    if "query_key_value" in name:
        return "--hidden-size/--num-attention-heads/--kv-channels"
    if "dense_h_to_4h" in name or "dense_4h_to_h" in name:
        return "--hidden-size/--ffn-hidden-size"
    return "--hidden-size and the other architecture flags"


def load_weights(module: nn.Module, root: str, pstate: ParallelState, *,
                 missing_ok: Sequence[str] = ()) -> dict[str, Any]:
    """Load the model weights of the latest checkpoint under ``root`` into ``module`` (this TP rank's shard).

    Every checkpoint tensor must exist in ``module`` with the same shape, and every ``module`` tensor must be in the
    checkpoint unless its name starts with one of ``missing_ok`` (heads a fine-tuning task adds). Returns the
    checkpoint's payload without the tensors (iteration, config).

    Raises:
        ValueError: naming the tensor, both shapes and the flag that decides it, or the TP size to use.
    """
    payload, tag, path = read_checkpoint(root, pstate.tp_rank)
    saved_tp = payload.get("tensor_model_parallel_size", 1)
    if saved_tp != pstate.tp_size:
        raise ValueError(
            f"checkpoint {root} was saved at tensor_model_parallel_size {saved_tp}, this run uses {pstate.tp_size}; "
            f"pass --tensor-model-parallel-size {saved_tp} or reshard it with tools/checkpoint/convert.py "
            "--target-tensor-parallel-size"
        )
    state, own = payload["model"], module.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(tuple(missing_ok)))
    if unexpected or missing:
        raise ValueError(
            f"checkpoint {path} does not fit the model built from the flags: "
            + (f"unexpected tensors {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}; " if unexpected else "")
            + (f"missing tensors {missing[:6]}{' ...' if len(missing) > 6 else ''}; " if missing else "")
            + "check --num-layers, --position-embedding-type, --untie-embeddings-and-output-weights and "
              "--add-bias-linear against the pretraining run (or use --use-checkpoint-args)"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            hint = _shape_hint(name, tuple(tensor.shape), tuple(own[name].shape))
            raise ValueError(
                f"checkpoint {path}: tensor {name} has shape {tuple(tensor.shape)} but the model built from the "
                f"flags has {tuple(own[name].shape)}; check {hint} against the pretraining run "
                "(or use --use-checkpoint-args)"
            )
    module.load_state_dict(state, strict=False)
    log_rank0(logger, "loaded weights of %s (iteration %s)", root, tag)
    return {k: v for k, v in payload.items() if k != "model" and k != "optimizer"}


# ---- results ------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def format_table(task: str, result: TaskResult) -> str:
    """A markdown table: one row per evaluation file (if several) and the pooled row."""
    names = sorted({k for m in (result.metrics, *result.per_file.values()) for k in m})
    rows = [(f, m) for f, m in result.per_file.items()] if len(result.per_file) > 1 else []
    rows.append(("overall" if rows else task, result.metrics))
    lines = [f"| {task} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_fmt(m.get(n, "")) for n in names) + " |" for label, m in rows]
    return "\n".join(lines)


def report(ctx: TaskContext, result: TaskResult) -> None:
    """Print the results table (rank 0) and write ``--results-file``."""
    if not ctx.is_rank0:
        return
    print(format_table(ctx.task.task, result), flush=True)
    if ctx.task.results_file:
        out = {"task": ctx.task.task, "metrics": result.metrics}
        if result.per_file:
            out["per_file"] = result.per_file
        if result.details:
            out["details"] = result.details
        write_json_atomic(ctx.task.results_file, out)
        log_rank0(logger, "results written to %s", ctx.task.results_file)
