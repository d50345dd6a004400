"""Running the project's own command-line tools as the harness's steps: each step is an ordinary command whose line
is printed and stored (so any cell can be rerun by hand), whose output goes to a log file, and whose success is
recorded by a marker written only after it exits cleanly.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["REPO", "StepFailed", "run_step", "shell_line", "write_json", "read_json"]

REPO = Path(__file__).resolve().parents[2]


class StepFailed(RuntimeError):
    """A step's command exited non-zero; the message holds the command and the tail of its log."""


def shell_line(argv: Sequence[str]) -> str:
    """The command as one line a user can paste into a shell from the repository root, on any machine: paths inside
    the repository are written relative to it, and an interpreter outside it as plain ``python``."""

    def portable(arg: str, is_program: bool) -> str:
        path = Path(arg)
        if not path.is_absolute():
            return arg
        if path.is_relative_to(REPO):
            return str(path.relative_to(REPO))
        return "python" if is_program else arg

    return shlex.join(portable(str(a), i == 0) for i, a in enumerate(argv))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass
class StepResult:
    seconds: float
    argv: list[str]


def run_step(argv: Sequence[str], log: str | os.PathLike, *, echo: bool = True,
             env: dict[str, str] | None = None) -> StepResult:
    """Run ``argv`` from the repository root with stdout and stderr appended to ``log``; returns its duration.

    Raises:
        StepFailed: non-zero exit, with the command line and the last lines of the log.
    """
    argv = [str(a) for a in argv]
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    if echo:
        print(f"$ {shell_line(argv)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shell_line(argv)}\n")
        f.flush()
        proc = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "MEGATRON_DE_NO_PROGRESS": "1", **(env or {})})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        raise StepFailed(f"exit {proc.returncode}: {shell_line(argv)}\n--- last lines of {log} ---\n{tail}")
    return StepResult(seconds, argv)
