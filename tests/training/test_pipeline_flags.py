"""Start-up rules of ``--pipeline-model-parallel-size`` / ``--num-layers-per-virtual-pipeline-stage``: the flags
live in the parallel section, the data-parallel size is world / (TP x PP), and every bad combination fails in
``validate()`` (before any process group) with a message naming the flags to change."""

from __future__ import annotations

import pytest

from training.conftest import bert_args, gpt_args, load_entry_script
from megatron.training.config import PretrainConfig


def _cfg(corpus: dict, world_size: int, rampup: str | None = None, **flags) -> PretrainConfig:
    extra = ["--rampup-batch-size", *rampup.split()] if rampup else []
    return PretrainConfig.from_args(gpt_args(corpus, **flags) + extra).validate(world_size=world_size)


def test_pipeline_flags_parse_into_the_parallel_section(tiny_corpus):
    """The Megatron spellings parse into ParallelConfig; DP = world / (TP x PP) sets the micro-batch count."""
    cfg = _cfg(tiny_corpus, 8, pipeline_model_parallel_size=2, tensor_model_parallel_size=2,
               num_layers_per_virtual_pipeline_stage=1, global_batch_size=8, micro_batch_size=2)
    assert cfg.parallel.pipeline_model_parallel_size == 2
    assert cfg.parallel.num_layers_per_virtual_pipeline_stage == 1
    assert cfg.data_parallel_size == 2 and cfg.num_microbatches == 2


@pytest.mark.parametrize("world,flags,error,match", [
    (3, dict(pipeline_model_parallel_size=2), ValueError,
     r"world size \(3\) must be divisible by tensor_model_parallel_size \(1\) x pipeline_model_parallel_size \(2\)"),
    (3, dict(pipeline_model_parallel_size=3, global_batch_size=6), ValueError,
     r"num_layers \(4\) must be divisible by pipeline_model_parallel_size \(3\).*--num-layers"),
    (2, dict(pipeline_model_parallel_size=2, num_layers_per_virtual_pipeline_stage=3), ValueError,
     r"num_layers_per_virtual_pipeline_stage \(3\) must divide the layers per pipeline stage"),
    (1, dict(num_layers_per_virtual_pipeline_stage=2), ValueError,
     r"num_layers_per_virtual_pipeline_stage needs pipeline_model_parallel_size > 1"),
    (2, dict(pipeline_model_parallel_size=2, global_batch_size=2), ValueError,
     r"1F1B pipeline schedule needs at least --pipeline-model-parallel-size \(2\) micro-batches per step, got 1"),
    (2, dict(pipeline_model_parallel_size=2, num_layers_per_virtual_pipeline_stage=1, global_batch_size=6),
     ValueError, r"interleaved pipeline schedule .* multiple of --pipeline-model-parallel-size \(2\).*got \[3\]"),
    (2, dict(pipeline_model_parallel_size=2, num_layers_per_virtual_pipeline_stage=1, global_batch_size=8,
             rampup="2 2 16"), ValueError, r"got \[1, 3\]"),
    (2, dict(pipeline_model_parallel_size=2, standalone_embedding_stage=True), NotImplementedError,
     r"--standalone-embedding-stage"),
])
def test_bad_pipeline_settings_fail_at_start_naming_the_flags(tiny_corpus, world, flags, error, match):
    """Uneven layer splits, too few (or, interleaved, not a multiple of PP) micro-batches in any step of a
    ramp-up, and an embedding-only first stage are refused by validate() with the flag to change."""
    with pytest.raises(error, match=match):
        _cfg(tiny_corpus, world, **flags)


def test_bert_refuses_pipeline_parallelism(tiny_bert_corpus):
    """pretrain_bert.py has no pipeline stages: the flag is refused at start, named."""
    with pytest.raises(NotImplementedError, match="BERT with --pipeline-model-parallel-size"):
        load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, pipeline_model_parallel_size=2))
