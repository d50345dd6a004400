"""The resume guard against checkpoints written before an architecture option existed."""

from __future__ import annotations

import pytest

from megatron.training.config import PretrainConfig
from megatron.training.resume import check_resume, run_record

FLAGS = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
         "--max-position-embeddings", "16", "--micro-batch-size", "2", "--global-batch-size", "2",
         "--train-iters", "2", "--tokenizer-type", "NullTokenizer", "--vocab-size", "64", "--mock-data"]
NEW_FIELDS = ("normalization", "swiglu", "group_query_attention", "num_query_groups")


def _record(*extra: str) -> dict:
    return run_record(PretrainConfig.from_args([*FLAGS, *extra]), [])


def _older(record: dict) -> dict:
    """The record as a checkpoint written before the Llama-style options would hold it: without their keys."""
    old = dict(record, model={k: v for k, v in record["model"].items() if k not in NEW_FIELDS})
    assert set(record["model"]) - set(old["model"]) == set(NEW_FIELDS)
    return old


def test_a_checkpoint_older_than_an_option_resumes_when_the_option_is_at_its_default():
    """A checkpoint whose record lacks the new architecture keys resumes in a run that leaves them at their
    defaults (the architecture it was trained with), and is refused, naming the key, when the run turns one on."""
    saved = _older(_record())
    check_resume(saved, _record(), extra_state_names=[], consumers=[], finetune=False, override=False, where="ckpt")
    with pytest.raises(ValueError, match=r"model\.swiglu: checkpoint '<off>', this run True"):
        check_resume(saved, _record("--swiglu"), extra_state_names=[], consumers=[], finetune=False,
                     override=False, where="ckpt")
