"""``tools/preprocess_data.py`` on broken inputs and when killed: a clear error naming the file, exit codes a script
can test, and never an output pair or a hidden temporary file left behind (docs/fault_cases.md)."""

from __future__ import annotations

import gzip
import os
import signal

import pytest
from data.conftest import kjv_chapters, long_preprocess_run, run_preprocess_data, write_jsonl  # noqa: F401 - fixture


def _listing(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.mark.parametrize("partitions", [1, 2])
def test_truncated_gzip_names_the_file(tmp_path, run_preprocess_data, partitions):
    """A .jsonl.gz cut short (an interrupted download) is 'error: FILE: truncated or corrupt gzip file', exit 2,
    instead of gzip's EOFError without a file name; nothing is written."""
    corpus = write_jsonl(tmp_path / "c.jsonl", kjv_chapters(40))
    whole = gzip.compress(corpus.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    proc = run_preprocess_data(["--input", corpus, cut, "--output-prefix", out / "x", "--partitions", partitions,
                                "--workers", "2"], check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {cut}: truncated or corrupt gzip file (EOFError" in proc.stderr
    assert "Traceback" not in proc.stderr and _listing(out) == []


@pytest.mark.parametrize("content", ["", "\n  \n\n"], ids=["empty file", "blank lines"])
@pytest.mark.parametrize("partitions", [1, 2])
def test_input_without_documents_is_an_error(tmp_path, run_preprocess_data, content, partitions):
    """An input without a single JSON line is an error (exit 2) naming the file, not a 0-document dataset written
    with exit 0; no output pair appears."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    proc = run_preprocess_data(["--input", empty, "--output-prefix", out / "x", "--partitions", partitions],
                               check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"error: input: {empty} holds no documents" in proc.stderr and "nothing was written" in proc.stderr
    assert _listing(out) == []


@pytest.mark.parametrize("to_group", [False, True], ids=["kill PID", "kill process group"])
@pytest.mark.parametrize("partitions", [1, 2])
def test_sigterm_leaves_no_temporary_file(tmp_path, partitions, to_group):
    """SIGTERM mid-run (a scheduler's kill, to the main process or its whole group) exits 143 and removes the
    hidden temporary .bin (or partition directory) it was writing: the output directory ends up empty."""
    with long_preprocess_run(tmp_path, partitions) as (proc, out):
        assert [n for n in _listing(out) if n.startswith(".")], "no temporary file to clean up"
        (os.killpg if to_group else os.kill)(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); no output was written" in err
    assert _listing(out) == []


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="lists worker processes through /proc/PID/task/PID/children")
def test_a_killed_worker_is_a_clear_error(tmp_path):
    """One encoding worker killed from outside (the out-of-memory killer's SIGKILL) ends the run with exit 1 and
    'error: worker process N died (exit code -9 ...)' instead of a hang or a traceback; nothing is left behind."""
    with long_preprocess_run(tmp_path, 1) as (proc, out):
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "died (exit code -9) (killed by a signal" in err and "no output was written" in err
    assert "Traceback" not in err and _listing(out) == []
