"""Named RNG streams for tensor parallelism and RNG-preserving activation recomputation.

``RNGStatesTracker`` keeps extra generator states beside torch's default one and swaps them in with ``fork(name)``
(CPU generator always, the current CUDA device's generator when CUDA is available). Streams and their rules:

* default (torch's global generator, seeded with ``seed`` by the training setup): everything that must match on
  all TP ranks of a group, e.g. hidden dropout on the replicated ``[s, b, h]`` activations.
* ``MODEL_PARALLEL_RNG`` = ``seed + 2718 + tp_rank`` (Megatron's offset): randomness inside TP regions, which must
  differ across TP ranks (attention dropout on this rank's heads).
* ``DATA_PARALLEL_RNG`` = ``seed``: Megatron's name for a stream identical on all ranks.
* ``TOKEN_ROUTING_RNG`` = ``seed + 3141``, identical on every TP rank: random-LTD draws its kept-token indices from
  ``tracker.generator(TOKEN_ROUTING_RNG, device)`` so every TP rank keeps the same tokens, and recomputation replays
  the draw.

``checkpoint(fn, *args, rng_tracker=...)`` recomputes ``fn`` in backward with the CPU, CUDA and tracker states it
saw in forward, so dropout masks (and token choices) are reproduced bit for bit.

Under ``torch.compile`` the state swap itself cannot be traced (Dynamo breaks the graph at ``get_rng_state`` and
``set_rng_state``), so compiled code never forks: it runs inside a fork taken outside the graph and draws from any
other stream through explicit state tensors. :func:`dropout` with ``rng_state`` is that draw: a custom op that takes
the stream's state tensor as a mutated argument (functional, ordered and never recomputed by the compiler) and
makes exactly the draw ``F.dropout`` would make from that state on CPU. Host code that needs a stream without the
swap uses :meth:`RNGStatesTracker.generator`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from megatron.parallel.state import ParallelState

__all__ = [
    "MODEL_PARALLEL_RNG",
    "DATA_PARALLEL_RNG",
    "TOKEN_ROUTING_RNG",
    "MODEL_PARALLEL_SEED_OFFSET",
    "TOKEN_ROUTING_SEED_OFFSET",
    "RNGState",
    "RNGStatesTracker",
    "checkpoint",
    "derive_seed",
    "dropout",
]

MODEL_PARALLEL_RNG = "model-parallel-rng"
DATA_PARALLEL_RNG = "data-parallel-rng"
TOKEN_ROUTING_RNG = "token-routing-rng"
MODEL_PARALLEL_SEED_OFFSET = 2718
TOKEN_ROUTING_SEED_OFFSET = 3141

RNGState = dict[str, torch.Tensor]  # {"cpu": ByteTensor, "cuda": ByteTensor (only when CUDA is available)}


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``keys`` (e.g. a parameter's name), stable across runs and hosts.

    Used to seed each parameter's initializer separately, so adding a module never shifts another's weights.
    """
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _cuda_active() -> bool:
    return torch.cuda.is_available()


def _fresh_state(seed: int) -> RNGState:
    state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
    if _cuda_active():
        gen = torch.Generator(device=torch.device("cuda", torch.cuda.current_device()))
        state["cuda"] = gen.manual_seed(seed).get_state()
    return state


def _current_state() -> RNGState:
    state = {"cpu": torch.get_rng_state()}
    if _cuda_active():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _install(state: RNGState) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and _cuda_active():
        torch.cuda.set_rng_state(state["cuda"])


def _state_key(device: torch.device) -> str:
    """The ``RNGState`` entry that drives draws on ``device``: one CUDA generator state serves every CUDA device
    (Philox seed and offset, as ``torch.cuda.get_rng_state`` of the current device), the CPU state all others."""
    return "cuda" if device.type == "cuda" else "cpu"


class RNGStatesTracker:
    """Named generator states that ``fork(name)`` swaps in for torch's default generators.

    Inside ``with tracker.fork(name):`` every draw from the default CPU (and current CUDA) generator, e.g. dropout,
    advances the named stream instead; on exit the default generators are back where they were.
    """

    def __init__(self) -> None:
        self._states: dict[str, RNGState] = {}
        self._seeds: dict[str, int] = {}

    @classmethod
    def build(cls, seed: int, parallel_state: ParallelState) -> RNGStatesTracker:
        """The standard streams for this rank (see module docstring); does not touch the default generators."""
        tracker = cls()
        tracker.add(DATA_PARALLEL_RNG, seed)
        tracker.add(MODEL_PARALLEL_RNG, seed + MODEL_PARALLEL_SEED_OFFSET + parallel_state.tp_rank)
        tracker.add(TOKEN_ROUTING_RNG, seed + TOKEN_ROUTING_SEED_OFFSET)
        return tracker

    @property
    def names(self) -> list[str]:
        """Names of the tracked streams, in insertion order."""
        return list(self._states)

    def add(self, name: str, seed: int) -> None:
        """Start a new stream ``name`` from ``seed``.

        Raises:
            ValueError: if ``name`` exists or ``seed`` already seeds another stream (two streams would be equal).
        """
        if name in self._states:
            raise ValueError(f"RNG state {name!r} already exists (seed {self._seeds[name]})")
        for other, other_seed in self._seeds.items():
            if other_seed == seed:
                raise ValueError(f"seed {seed} for RNG state {name!r} is already used by {other!r}")
        self._states[name] = _fresh_state(seed)
        self._seeds[name] = seed

    def get_states(self) -> dict[str, RNGState]:
        """A copy of every stream's state, for checkpoints and recomputation."""
        return {name: {k: v.clone() for k, v in st.items()} for name, st in self._states.items()}

    def set_states(self, states: dict[str, RNGState]) -> None:
        """Restore states from :meth:`get_states`; the set of names must match exactly.

        Raises:
            ValueError: if a stream is missing or unknown (a checkpoint from a differently configured run).
        """
        if set(states) != set(self._states):
            raise ValueError(
                f"RNG tracker states have names {sorted(states)}, expected {sorted(self._states)}"
            )
        self._states = {name: {k: v.clone() for k, v in st.items()} for name, st in states.items()}

    @contextlib.contextmanager
    def fork(self, name: str = MODEL_PARALLEL_RNG) -> Iterator[RNGState]:
        """Run the body with stream ``name`` installed as the default generator state.

        Yields the default generators' states as they were on entry (a fresh ``RNGState``): the body may draw from
        the outer stream through them with :func:`dropout` (``rng_state=``); on exit the default generators are
        reinstalled from them, so such draws advance the outer stream exactly as draws outside the fork would.

        Raises:
            KeyError: if ``name`` was never added.
        """
        if name not in self._states:
            raise KeyError(f"RNG state {name!r} is not tracked; known: {self.names}")
        outer = _current_state()
        _install(self._states[name])
        try:
            yield outer
        finally:
            self._states[name] = _current_state()
            _install(outer)

    @contextlib.contextmanager
    def generator(self, name: str, device: torch.device | str) -> Iterator[torch.Generator]:
        """A ``torch.Generator`` on ``device`` holding stream ``name``, for ops that take ``generator=``.

        Unlike :meth:`fork` the default generators are not touched; on exit the generator's state becomes the
        stream's. Draws equal those the same calls would make under ``fork(name)`` without ``generator=``.

        Raises:
            KeyError: if ``name`` was never added, or ``device`` is CUDA and the stream has no CUDA state (the
                tracker was built before CUDA was available).
        """
        if name not in self._states:
            raise KeyError(f"RNG state {name!r} is not tracked; known: {self.names}")
        device = torch.device(device)
        key = _state_key(device)
        if key not in self._states[name]:
            raise KeyError(f"RNG state {name!r} has no {key} state (states: {sorted(self._states[name])})")
        gen = torch.Generator(device=device)
        gen.set_state(self._states[name][key])
        try:
            yield gen
        finally:
            self._states[name][key] = gen.get_state()


# --------------------------------------------------------------------------------------------------------------
# Dropout from an explicit stream state (traceable by torch.compile)
# --------------------------------------------------------------------------------------------------------------
# nondeterministic_seeded keeps the compiler from constant-folding or recomputing the draw (torch >= 2.5 accepts tags).
_SEEDED = ({"tags": (torch.Tag.nondeterministic_seeded,)}
           if "tags" in inspect.signature(torch.library.custom_op).parameters else {})


@torch.library.custom_op("megatron_de::dropout_keep_mask", mutates_args=("rng_state",), **_SEEDED)
def _dropout_keep_mask(rng_state: torch.Tensor, like: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """Bool keep mask shaped like ``like``, drawn as ``F.dropout`` draws its noise on CPU (``bernoulli_`` on an
    ``empty_like``), from the generator state ``rng_state``, which is advanced in place."""
    gen = torch.Generator(device=like.device)
    gen.set_state(rng_state)
    keep = torch.empty_like(like).bernoulli_(keep_prob, generator=gen)
    rng_state.copy_(gen.get_state())
    return keep.bool()


@_dropout_keep_mask.register_fake
def _(rng_state: torch.Tensor, like: torch.Tensor, keep_prob: float) -> torch.Tensor:
    return torch.empty_like(like, dtype=torch.bool)


def dropout(x: torch.Tensor, p: float, training: bool, rng_state: RNGState | None = None) -> torch.Tensor:
    """``F.dropout(x, p, training)``, drawing from ``rng_state`` (e.g. the state :meth:`RNGStatesTracker.fork`
    yields) instead of the default generator when given.

    With ``rng_state`` the mask comes from the custom op ``megatron_de::dropout_keep_mask``, which torch.compile
    traces without a graph break; the state's CPU (or CUDA, for CUDA ``x``) entry is advanced in place. For fp32 on
    CPU the output, its gradient and the stream's advance are bitwise those of ``F.dropout`` from that state; half
    inputs are scaled in fp32 and rounded once (unbiased, like the fused CUDA kernel).
    """
    if rng_state is None or not training or p == 0.0:
        return F.dropout(x, p, training)
    key = _state_key(x.device)
    assert key in rng_state, f"dropout on {x.device} needs a {key!r} RNG state, got {sorted(rng_state)}"
    keep = torch.ops.megatron_de.dropout_keep_mask(rng_state[key], x.detach(), 1.0 - p)
    # ones / (1 - p) in the op's arithmetic: the value F.dropout's noise (bernoulli_ then div_) holds where kept.
    half = x.dtype in (torch.float16, torch.bfloat16)
    scale = torch.ones((), dtype=torch.float32 if half else x.dtype, device=x.device).div_(1.0 - p)
    return (x * torch.where(keep, scale, 0.0)).to(x.dtype)


def checkpoint(
    fn: Callable[..., Any], *args: Any, rng_tracker: RNGStatesTracker | None = None, **kwargs: Any
) -> Any:
    """``fn(*args, **kwargs)`` without keeping its activations; recomputed in backward with identical randomness.

    torch's non-reentrant checkpoint saves and restores the default CPU and CUDA generator states; on top of that
    the tracker's named states are captured before the forward call and reinstalled for the recomputation (then
    put back), so dropout under ``rng_tracker.fork(...)`` inside ``fn`` draws the same masks twice. Keyword
    arguments and non-tensor arguments pass through unchanged. Without grad mode ``fn`` simply runs.
    """
    if not torch.is_grad_enabled():
        return fn(*args, **kwargs)
    if rng_tracker is None:
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
    forward_states = rng_tracker.get_states()
    calls = 0

    def replay(*a: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the original forward: the tracker is already in its forward state
            return fn(*a, **kw)
        later_states = rng_tracker.get_states()
        rng_tracker.set_states(forward_states)
        try:
            return fn(*a, **kw)
        finally:
            rng_tracker.set_states(later_states)

    return torch.utils.checkpoint.checkpoint(replay, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
