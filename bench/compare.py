"""Side-by-side timing that survives a shared machine: ours and a peer interleaved, min and median per side.

On the 2-core project machine other jobs (test suites, a reproduction run) come and go. Timing one side, then the
other, lets a load change land on one side only. Here the sides run in alternating blocks, in ABBA order (A B, then
B A, ...), so load that rises or falls steadily over the run hits both alike; every call is timed on its own.

Per side we report the min (the least disturbed call: the best estimate of the quiet-machine time) and the median
(what a typical call cost under the load of the day), and the peer/ours ratio of each. The run is **too noisy to
conclude** when either side's spread (max / min over its calls) exceeds ``SPREAD_LIMIT`` = 1.5, or the min and
median ratios disagree by more than ``RATIO_AGREEMENT`` = 1.25x. Why these numbers: the claims made from these
ratios ("within 2x of C++", "10x DeepSpeed") need about 25% precision. Load that stays level during a run slows
both sides alike and cancels in the ratio; what breaks a comparison is load that changes between calls. On two
cores, a spread past 1.5 means some call lost a third or more of its CPU time to other processes, i.e. roughly one
busy process came or went during the run: then one side's min may come from a quieter moment than the other's.
And if the min ratio and the median ratio differ by more than 25%, the load hit one side's typical call and not
the other's, which is exactly the error the ratio must not carry.

A peer that must run in another interpreter (its ``megatron`` package collides with ours, or it needs another
``PYTHONPATH``) is driven through ``PeerProcess``: the child calls ``serve`` with named functions, the parent asks
for one call at a time and gets back the child's own timing, so interleaving works across processes too.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["SPREAD_LIMIT", "RATIO_AGREEMENT", "HEADER", "Timed", "Side", "Comparison", "interleave", "compare",
           "machine_line", "PeerProcess", "python_code", "serve"]

SPREAD_LIMIT = 1.5
RATIO_AGREEMENT = 1.25
_PROTOCOL = "@compare-peer "


@dataclass(frozen=True)
class Timed:
    """What a side's callable may return to report its own measured time (e.g. timed inside a child process)."""

    seconds: float
    value: Any = None


@dataclass
class Side:
    """The seconds of every timed call of one side."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """max / min over the calls (1.0 = perfectly steady)."""
        return max(self.seconds) / min(self.seconds)


@dataclass
class Comparison:
    """Ours against a peer: ratios are peer time / our time (> 1: ours is faster)."""

    ours: Side
    peer: Side

    @property
    def ratio_min(self) -> float:
        return self.peer.min / self.ours.min

    @property
    def ratio_median(self) -> float:
        return self.peer.median / self.ours.median

    def problems(self) -> list[str]:
        """Why the run is too noisy to conclude (empty: it is not)."""
        out = [f"{s.name} spread {s.spread:.2f} > {SPREAD_LIMIT}" for s in (self.ours, self.peer)
               if s.spread > SPREAD_LIMIT]
        agree = max(self.ratio_min, self.ratio_median) / min(self.ratio_min, self.ratio_median)
        if agree > RATIO_AGREEMENT:
            out.append(f"min and median ratios differ by {agree:.2f}x > {RATIO_AGREEMENT}")
        return out

    @property
    def conclusive(self) -> bool:
        return not self.problems()

    def verdict(self) -> str:
        problems = self.problems()
        return "conclusive" if not problems else "TOO NOISY TO CONCLUDE (" + "; ".join(problems) + ")"

    def row(self, label: str, unit: float = 1.0, digits: int = 3) -> str:
        """One markdown table row (see ``HEADER``): min and median per side in ``unit`` seconds, both ratios,
        spreads and the verdict."""
        o, p = self.ours, self.peer
        return (f"| {label} | {o.min / unit:.{digits}f} / {o.median / unit:.{digits}f} | "
                f"{p.min / unit:.{digits}f} / {p.median / unit:.{digits}f} | {self.ratio_min:.2f}x | "
                f"{self.ratio_median:.2f}x | {o.spread:.2f} / {p.spread:.2f} | {self.verdict()} |")

    def as_dict(self) -> dict:
        return {"ours": self.ours.seconds, "peer": self.peer.seconds, "ratio_min": self.ratio_min,
                "ratio_median": self.ratio_median, "conclusive": self.conclusive, "problems": self.problems()}


HEADER = ("| measurement | ours min / median | peer min / median | ratio of mins (peer/ours) | ratio of medians | "
          "spread ours / peer | verdict |\n|---|---|---|---|---|---|---|")


def interleave(sides: Mapping[str, Callable[[], Any]], repeats: int, block: int = 1,
               warmup: int = 1) -> tuple[dict[str, Side], dict[str, Any]]:
    """Time each side ``repeats`` x ``block`` calls, in blocks of ``block`` consecutive calls, ABBA order.

    ``warmup`` untimed calls per side come first (caches, lazy imports, compiled code). A callable returning
    ``Timed`` reports its own seconds. Returns the sides' times and each side's last return value.
    """
    if repeats < 1 or block < 1:
        raise ValueError(f"repeats ({repeats}) and block ({block}) must be >= 1")
    names = list(sides)
    last: dict[str, Any] = {}
    for name in names:
        for _ in range(warmup):
            last[name] = _unwrap(sides[name]())[1]
    timed = {name: Side(name) for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            for _ in range(block):
                start = time.perf_counter()
                out = sides[name]()
                wall = time.perf_counter() - start
                seconds, last[name] = _unwrap(out)
                timed[name].seconds.append(wall if seconds is None else seconds)
    return timed, last


def compare(ours: Callable[[], Any], peer: Callable[[], Any], repeats: int, block: int = 1,
            warmup: int = 1) -> tuple[Comparison, Any, Any]:
    """``interleave`` of two sides; returns the comparison and each side's last return value."""
    timed, last = interleave({"ours": ours, "peer": peer}, repeats, block, warmup)
    return Comparison(timed["ours"], timed["peer"]), last["ours"], last["peer"]


def _unwrap(out: Any) -> tuple[float | None, Any]:
    return (out.seconds, out.value) if isinstance(out, Timed) else (None, out)


def machine_line() -> str:
    """CPUs and load average, for the head of a benchmark's output (the load is part of the result)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)"


class PeerProcess:
    """A child interpreter that runs named peer functions on request (see ``serve``).

    Args:
        argv: the child interpreter's arguments: a script file that ends by calling ``serve({...})``, or
            ``python_code(source)`` for source text that does.
        env: extra environment (e.g. ``PYTHONPATH`` of the peer's install).
        cwd: the child's working directory.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self._proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env={**os.environ, **(env or {})},
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._expect_ready()

    def _reply(self, doing: str) -> dict:
        """The child's next protocol line; anything else it printed (e.g. C++ code writing to fd 1) is passed
        on to our stderr."""
        for line in self._proc.stdout:
            if line.startswith(_PROTOCOL):
                return json.loads(line[len(_PROTOCOL):])
            sys.stderr.write(line)
        raise RuntimeError(f"peer process died {doing} (exit code {self._proc.wait()}); see its stderr above")

    def _expect_ready(self) -> None:
        try:
            self._reply("starting")
        except RuntimeError:
            self._proc.kill()
            raise

    def call(self, name: str, *args: Any) -> Timed:
        """Run the child's function ``name`` once; its own timing and JSON result come back."""
        self._proc.stdin.write(json.dumps([name, list(args)]) + "\n")
        reply = self._reply(f"running {name!r}")
        return Timed(reply["seconds"], reply["value"])

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)

    def __enter__(self) -> "PeerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def python_code(source: str, *args: str) -> list[str]:
    """Child arguments that run ``source`` with this module importable (``from compare import serve``)."""
    return ["-c", f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n" + source,
            *args]


def serve(functions: Mapping[str, Callable[..., Any]]) -> None:
    """Child side of ``PeerProcess``: answer ``[name, args]`` lines with the call's seconds and JSON result (a
    function returning ``Timed`` reports its own seconds).

    Protocol lines carry a prefix, so whatever else the child writes to stdout is told apart.
    """
    out = sys.stdout
    sys.stdout = sys.stderr
    out.write(_PROTOCOL + json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        name, args = json.loads(line)
        start = time.perf_counter()
        value = functions[name](*args)
        seconds = time.perf_counter() - start
        if isinstance(value, Timed):  # the function timed the part that counts itself
            seconds, value = value.seconds, value.value
        out.write(_PROTOCOL + json.dumps({"seconds": seconds, "value": value}) + "\n")
        out.flush()
