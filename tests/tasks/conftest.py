"""Task-room fixtures: small GPT and BERT checkpoints pretrained here (through the real entry scripts on the tiny
KJV corpus of ``training.conftest``), and a helper that runs ``tasks/main.py`` in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.conftest import bert_args, build_tiny_bert_corpus, build_tiny_corpus, gpt_args, load_entry_script


@pytest.fixture(scope="session")
def gpt_checkpoint(tmp_path_factory) -> dict[str, str]:
    """A debug-flavor GPT (sequence 32, 512-token BPE) pretrained for 30 iterations:
    ``{"load", "vocab_file", "merge_file", "data_path"}``."""
    root = tmp_path_factory.mktemp("gpt_ckpt")
    corpus = build_tiny_corpus(root / "corpus")
    save = root / "ckpt"
    load_entry_script("pretrain_gpt.py").main(gpt_args(corpus, train_iters=30, save=str(save), eval_iters=0,
                                                       skip_test=True, log_interval=10))
    return {"load": str(save), **corpus}


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory) -> dict[str, str]:
    """A debug-flavor BERT (sequence 64, 1,024-token lower-case WordPiece, with the binary head) pretrained for 20
    iterations: ``{"load", "vocab_file", "data_path"}``."""
    root = tmp_path_factory.mktemp("bert_ckpt")
    corpus = build_tiny_bert_corpus(root / "corpus")
    save = root / "ckpt"
    load_entry_script("pretrain_bert.py").main(bert_args(corpus, train_iters=20, save=str(save), eval_iters=0,
                                                         skip_test=True, log_interval=10))
    return {"load": str(save), **corpus}


def run_task(*argv: str):
    """``tasks/main.py`` in-process with ``argv`` (strings or paths); returns its TaskResult."""
    return load_entry_script("tasks/main.py").main([str(a) for a in argv])


def read_json(path: str | Path) -> dict:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))
