"""Start-up rules of pipeline parallelism (``--pipeline-model-parallel-size``,
``--num-layers-per-virtual-pipeline-stage``), run by ``PretrainConfig.validate`` before any process group exists.

Each rule names the flags to change: the layers must split evenly over the (virtual) stages, every step must have
enough micro-batches for the schedule (1F1B: at least one per stage; interleaved 1F1B: a multiple of the stages,
torch's and Megatron's rule), and the combinations not built with pipeline stages are refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from megatron.config import flag_name
from megatron.parallel.pipeline_state import num_virtual_stages

if TYPE_CHECKING:
    from megatron.training.config import PretrainConfig

__all__ = ["check_pipeline_parallel", "step_microbatch_counts"]

_PP, _VPP = flag_name("pipeline_model_parallel_size"), flag_name("num_layers_per_virtual_pipeline_stage")


def step_microbatch_counts(cfg: PretrainConfig) -> list[int]:
    """Micro-batches per data-parallel rank of every distinct step size: the full global batch's, plus each size a
    ``--rampup-batch-size`` passes through."""
    t, unit = cfg.training, cfg.training.micro_batch_size * cfg.data_parallel_size
    sizes = {cfg.global_batch_size}
    if t.rampup_batch_size is not None:
        start, increment, _ = (int(v) for v in t.rampup_batch_size)
        sizes.update(range(start, cfg.global_batch_size, max(increment, 1)))
    return sorted({size // unit for size in sizes})


def _refuse_with_pipeline(cfg: PretrainConfig) -> None:
    """Combinations that are not built with pipeline stages fail at start, naming both flags."""
    model: Any = cfg.model
    # Sequence parallelism would shard the activations the stages exchange ([s/tp, b, h]); the stages' static
    # shapes are the full sequence's.
    if getattr(model, "sequence_parallel", False) or getattr(cfg.parallel, "sequence_parallel", False):
        raise NotImplementedError(f"{_PP} with {flag_name('sequence_parallel')}: pipeline stages exchange full-sequence"
                                  f" activations; drop one of the two flags")


def check_pipeline_parallel(cfg: PretrainConfig) -> None:
    """Layers divisible by PP (and PP x chunks with virtual stages); enough micro-batches for the schedule.

    Raises:
        ValueError / NotImplementedError naming the flags and values to change.
    """
    p = cfg.parallel
    pp, vpp = p.pipeline_model_parallel_size, p.num_layers_per_virtual_pipeline_stage
    if pp == 1 and vpp is None:
        return
    try:
        num_virtual_stages(cfg.model.num_layers, pp, vpp)
    except ValueError as err:
        raise ValueError(f"{err} ({flag_name('num_layers')}, {_PP}, {_VPP})") from None
    _refuse_with_pipeline(cfg)
    counts = step_microbatch_counts(cfg)
    mbs, dp = cfg.training.micro_batch_size, cfg.data_parallel_size
    how = (f"micro-batches per step = global batch / (micro_batch_size {mbs} x data-parallel size {dp}); raise "
           "--global-batch-size (or START of --rampup-batch-size) or lower --micro-batch-size")
    if vpp is None and counts[0] < pp:
        raise ValueError(f"the 1F1B pipeline schedule needs at least {_PP} ({pp}) micro-batches per step, got "
                         f"{counts[0]}: {how}")
    bad = [m for m in counts if m % pp]
    if vpp is not None and bad:
        raise ValueError(f"the interleaved pipeline schedule ({_VPP} {vpp}) needs a multiple of {_PP} ({pp}) "
                         f"micro-batches per step, got {bad}: {how}")
