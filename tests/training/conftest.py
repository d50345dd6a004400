"""Training-room fixtures: a tiny real corpus with a tiny trained vocabulary, and in-process ``pretrain_gpt`` runs.

The corpus is 40 KJV chapters (``data.conftest``), a 512-token GPT-2-style BPE trained on it by
``tools/train_tokenizer.py`` and tokenized by ``tools/preprocess_data.py`` (STYLE 3.8: fixtures go through the real
tools). A tiny vocabulary keeps the output layer, not the tokenizer, from dominating CPU step time.
``tests/e2e`` imports these helpers too (``from training.conftest import ...``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from data.conftest import kjv_chapters, preprocess_data, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="session")
def _single_thread_fixtures():
    """One intra-op thread from the start of the session: module- and session-scoped fixtures that train (a
    pretrained checkpoint, say) run before the suite's per-test one-thread fixture, and a run at the machine's
    default thread count is not bit-identical to the same run inside a test (docs/fault_cases.md)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def load_entry_script(name: str = "pretrain_gpt.py") -> ModuleType:
    """Import a repository-root entry script (not on ``sys.path`` under pytest) as a module."""
    module_name = Path(name).stem
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def build_tiny_corpus(root: Path) -> dict[str, str]:
    """Write the corpus, train the 512-token BPE and preprocess; returns data prefix and vocab/merge files."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = write_jsonl(root / "corpus.jsonl", kjv_chapters(40))
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--input", str(corpus), "--type", "gpt2bpe",
         "--vocab-size", "512", "--output-dir", str(root / "tok")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    vocab, merges = root / "tok" / "vocab.json", root / "tok" / "merges.txt"
    preprocess_data(["--input", corpus, "--output-prefix", root / "kjv", "--append-eod", "--workers", "1",
                     "--vocab-file", vocab, "--merge-file", merges])
    return {"data_path": str(root / "kjv_text_document"), "vocab_file": str(vocab), "merge_file": str(merges)}


def build_tiny_bert_corpus(root: Path) -> dict[str, str]:
    """The same 40 chapters with a 1,024-token lower-case WordPiece vocabulary, split into sentences (BERT's
    input); returns the data prefix and the vocab file."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = write_jsonl(root / "corpus.jsonl", kjv_chapters(40))
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--input", str(corpus), "--type", "wordpiece",
         "--lowercase", "--vocab-size", "1024", "--output-dir", str(root / "tok")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    vocab = root / "tok" / "vocab.txt"
    preprocess_data(["--input", corpus, "--output-prefix", root / "kjv", "--split-sentences", "--workers", "1",
                     "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab])
    return {"data_path": str(root / "kjv_text_sentence"), "vocab_file": str(vocab)}


@pytest.fixture(scope="session")
def tiny_bert_corpus(tmp_path_factory) -> dict[str, str]:
    """Session-wide sentence-split corpus for BERT (read-only): ``{"data_path", "vocab_file"}``."""
    return build_tiny_bert_corpus(tmp_path_factory.mktemp("tiny_bert_corpus"))


def bert_args(corpus: dict[str, str], **flags) -> list[str]:
    """Flags of a small, fast ``pretrain_bert.py`` run on ``corpus`` (debug flavor, sequence 64, 2 x 2
    micro-batches); ``flags`` override as in :func:`gpt_args`."""
    base = {"tokenizer_type": "BertWordPieceLowerCase", "merge_file": None, "seq_length": 64, "lr": 5e-4,
            "lr_decay_style": "linear", **flags}
    return gpt_args(corpus, **base)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, str]:
    """Session-wide tiny corpus (read-only): ``{"data_path", "vocab_file", "merge_file"}``."""
    return build_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))


def gpt_args(corpus: dict[str, str], **flags) -> list[str]:
    """Flags of a small, fast ``pretrain_gpt.py`` run on ``corpus``; ``flags`` override (``None`` drops a flag,
    ``True`` is a bare switch)."""
    base = {
        "model_flavor": "debug", "seq_length": 32, "micro_batch_size": 2, "global_batch_size": 4,
        "train_iters": 20, "lr": 1e-3, "min_lr": 1e-4, "lr_decay_style": "cosine", "lr_warmup_iters": 3,
        "data_path": corpus["data_path"], "vocab_file": corpus["vocab_file"], "merge_file": corpus.get("merge_file"),
        "split": "90,8,2", "eval_interval": 10, "eval_iters": 2, "log_interval": 1, "seed": 1234,
    }
    base.update(flags)
    argv: list[str] = []
    for key, value in base.items():
        if value is None or value is False:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return argv


def read_metrics(path: Path) -> list[dict]:
    """Records of a ``--metrics-file``."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]



@pytest.fixture
def megatron_logs(caplog):
    """``caplog`` that also sees the ``megatron`` loggers (``setup_logging`` stops them propagating to the root),
    at INFO."""
    logger = logging.getLogger("megatron")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
