"""Random layerwise token dropping (random-LTD, arXiv 2211.11586): the layer wrapper and its shared controller.

``wrap_layers`` replaces chosen entries of a transformer ``nn.ModuleList`` by :class:`RandomLTDLayer` wrappers with
the layer's own call signature. In training each wrapped layer runs on a random, sorted subset of ``r`` tokens per
sample (mask rows/columns and rotary angles gathered at the kept positions) and the dropped tokens pass through
unchanged; the :class:`RandomLTDController` holds ``r`` (from the scheduler), draws the indices of all wrapped
layers at once under the RNG tracker's token-routing stream, and does the layer-token accounting.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence, get_args

import torch
from torch import nn

from megatron.data_efficiency.config import ModelType, RandomLTDConfig
from megatron.data_efficiency.routing.scheduler import RandomLTDScheduler
from megatron.kernels.random_ltd import gather_tokens, sample_tokens, scatter_tokens, slice_attention_mask
from megatron.logging import get_logger
from megatron.parallel.random import TOKEN_ROUTING_RNG, RNGStatesTracker

__all__ = [
    "default_layer_ids",
    "gather_rotary_pos_emb",
    "RandomLTDController",
    "RandomLTDLayer",
    "resolve_layer_ids",
    "wrap_layers",
]

logger = get_logger(__name__)

_METRIC_KEPT = "data_efficiency/ltd_kept_tokens"
_METRIC_LAYER_TOKENS = "data_efficiency/consumed_layer_tokens"


def default_layer_ids(num_layers: int) -> list[int]:
    """The paper's choice: every layer but the first and the last, ``[1, ..., L-2]``."""
    return list(range(1, num_layers - 1))


def gather_rotary_pos_emb(rotary_pos_emb: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """RoPE angles at the kept positions: ``out[i, j] = rotary_pos_emb[indices[j, i], j or 0]``.

    A kept token keeps its original position, so it must be rotated by that position's angles, not by those of
    position ``i`` (Megatron-DeepSpeed slices ``freqs[:r]``, which silently renumbers the kept tokens 0..r-1).

    Args:
        rotary_pos_emb: ``[s, b|1, 1, d]`` angles of the full sequence.
        indices: ``[b, r]`` kept positions per sample.

    Returns:
        ``[r, b, 1, d]`` (per-sample, since every sample keeps different positions).
    """
    s, rb, heads, d = rotary_pos_emb.shape
    b, r = indices.shape
    if rb not in (1, b) or heads != 1:
        raise ValueError(
            f"rotary_pos_emb must be [s, b|1, 1, d] with b = {b}, got shape {tuple(rotary_pos_emb.shape)}"
        )
    index = indices.t().reshape(r, b, 1, 1).expand(r, b, 1, d)
    return torch.gather(rotary_pos_emb.expand(s, b, 1, d), 0, index)


class RandomLTDController:
    """State shared by the wrapped layers of one model: kept tokens, index draws, layer-token accounting.

    The training loop calls :meth:`set_step` before each optimizer step (with the number of steps already taken,
    0 for the first), :meth:`consume` once per step with the global batch, and logs :meth:`metrics`.
    :meth:`state_dict` goes into the checkpoint; the index stream itself lives in the RNG tracker (checkpointed by
    the training loop with the tracker's other streams).

    Index draws: the first wrapped layer (ordinal 0) of every training forward draws ``[n, b, r]`` indices for all
    ``n`` wrapped layers in one :func:`sample_tokens` call from ``rng_tracker.generator(TOKEN_ROUTING_RNG, ...)``
    (an explicit generator: the default generators are not touched); that stream is seeded alike on all TP ranks, so
    every rank keeps the same tokens. The draw is cached under the stream's state *after* the draw, and the later
    layers look it up by the stream's current state. That makes activation recomputation exact without knowing
    whether a call is a recomputation: the RNG-aware ``checkpoint`` reinstalls the tracker states the chunk saw in
    forward, so a replayed ordinal 0 redraws the same indices from the same state and a replayed later layer finds
    the draw of its own forward, even when several micro-batches ran forward before any backward. The cache is
    cleared by :meth:`set_step` (all backward passes of the previous step are done by then) and capped at
    ``max_cached_draws`` entries; a lookup that misses raises instead of guessing.
    """

    def __init__(
        self, scheduler: RandomLTDScheduler, rng_tracker: RNGStatesTracker, layer_ids: Sequence[int],
        num_layers: int, model_type: ModelType = "decoder", *, max_cached_draws: int = 64,
    ) -> None:
        self.scheduler = scheduler
        self.rng_tracker = rng_tracker
        self.layer_ids = tuple(layer_ids)
        self.num_layers = num_layers
        self.model_type = model_type
        self.max_cached_draws = max_cached_draws
        self._draws: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.last_indices: torch.Tensor | None = None
        """The most recent draw, int64 ``[n, b, r]`` (row l belongs to ``layer_ids[l]``), or None."""

    # ------------------------------------------------------------------------------------------------------------
    # Schedule and accounting (thin over the scheduler, which owns the formulas)
    # ------------------------------------------------------------------------------------------------------------
    @property
    def kept_tokens(self) -> int:
        """Kept tokens per sample ``r`` of the current step (before capping at the batch's sequence length)."""
        return self.scheduler.current_value

    def set_step(self, step: int, seq_length: int | None = None) -> int:
        """Move to optimizer step ``step`` (steps already taken; 0 for the first) and return ``min(r, seq_length)``."""
        self.scheduler.update(step)
        self._draws.clear()
        return self.kept_for(seq_length)

    def kept_for(self, seq_length: int | None) -> int:
        """Tokens a wrapped layer processes per sample for a batch of length ``seq_length`` (all if ``r >= s``)."""
        r = self.scheduler.current_value
        return r if seq_length is None else min(r, seq_length)

    def drops_tokens(self, seq_length: int) -> bool:
        """Whether a training forward with sequences of ``seq_length`` tokens drops any (``r < s``)."""
        return self.scheduler.current_value < seq_length

    def layer_tokens(self, seq_length: int, num_samples: int) -> int:
        """Layer tokens ``num_samples * (S * (L - n) + min(r, S) * n)`` of a batch, without counting them."""
        return self.scheduler.layer_tokens(seq_length, num_samples)

    def effective_tokens(self, seq_length: int, num_samples: int) -> int:
        """Layer-averaged tokens ``num_samples * ((S * (L - n) + min(r, S) * n) // L)``: the count that drives the
        token-based LR schedule and ``train_tokens`` (Megatron-DeepSpeed's rounding)."""
        return self.scheduler.effective_tokens(seq_length, num_samples)

    def consume(self, seq_length: int, num_samples: int) -> int:
        """Add one step's layer tokens (global batch ``num_samples`` of length ``seq_length``); return them."""
        return self.scheduler.consume(seq_length, num_samples)

    @property
    def consumed_layer_tokens(self) -> int:
        """Layer tokens consumed so far (resumed from checkpoints)."""
        return self.scheduler.consumed_layer_tokens

    def metrics(self, seq_length: int | None = None) -> dict[str, float]:
        """``data_efficiency/ltd_kept_tokens`` (capped at ``seq_length`` when given) and
        ``data_efficiency/consumed_layer_tokens`` for the log line."""
        return {_METRIC_KEPT: float(self.kept_for(seq_length)),
                _METRIC_LAYER_TOKENS: float(self.scheduler.consumed_layer_tokens)}

    # ------------------------------------------------------------------------------------------------------------
    # Index draws
    # ------------------------------------------------------------------------------------------------------------
    def _stream_key(self, hidden: torch.Tensor) -> tuple:
        state = self.rng_tracker.get_states()[TOKEN_ROUTING_RNG]
        s, b = hidden.shape[:2]
        blob = b"".join(state[k].cpu().numpy().tobytes() for k in sorted(state))
        return (str(hidden.device), b, s, self.kept_for(s), blob)

    def layer_indices(self, ordinal: int, hidden: torch.Tensor) -> torch.Tensor:
        """Kept positions ``[b, r]`` (int64, ascending per sample) of wrapped layer ``ordinal`` in this forward.

        Ordinal 0 draws for every wrapped layer; the others read that draw (see the class docstring).

        Raises:
            RuntimeError: a later layer ran without its forward's draw (ordinal 0 was skipped, or more than
                ``max_cached_draws`` forwards are waiting for their backward).
        """
        if ordinal == 0:
            s, b = hidden.shape[:2]
            with self.rng_tracker.generator(TOKEN_ROUTING_RNG, hidden.device) as gen:
                drawn = sample_tokens(len(self.layer_ids), b, s, self.kept_for(s), gen, hidden.device)
            key = self._stream_key(hidden)
            self._draws[key] = drawn
            self._draws.move_to_end(key)
            while len(self._draws) > self.max_cached_draws:
                self._draws.popitem(last=False)
            self.last_indices = drawn
            return drawn[0]
        drawn = self._draws.get(self._stream_key(hidden))
        if drawn is None:
            raise RuntimeError(
                f"random-LTD layer {self.layer_ids[ordinal]} (ordinal {ordinal}) found no index draw for this forward: "
                f"the first wrapped layer ({self.layer_ids[0]}) must run first in every training forward, and at most "
                f"max_cached_draws={self.max_cached_draws} forwards may await their backward"
            )
        return drawn[ordinal]

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoint
    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-container state (``torch.load(weights_only=True)`` safe): the scheduler and the wrapped layer ids."""
        return {"scheduler": self.scheduler.state_dict(), "layer_ids": list(self.layer_ids),
                "num_layers": self.num_layers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the scheduler (step, kept tokens, consumed layer tokens).

        Raises:
            ValueError: if keys are missing or the checkpoint wrapped other layers (its layer-token count would mean
                something else).
        """
        missing = {"scheduler", "layer_ids", "num_layers"} - state.keys()
        if missing:
            raise ValueError(f"random-LTD state is missing keys {sorted(missing)}; got {sorted(state)}")
        saved = (list(state["layer_ids"]), int(state["num_layers"]))
        if saved != (list(self.layer_ids), self.num_layers):
            raise ValueError(
                f"random-LTD checkpoint wrapped layers {saved[0]} of {saved[1]}, but this model wraps "
                f"{list(self.layer_ids)} of {self.num_layers}; use the same random_ltd_layer_id and num_layers"
            )
        self.scheduler.load_state_dict(state["scheduler"])
        self._draws.clear()
        self.last_indices = None


class RandomLTDLayer(nn.Module):
    """A transformer layer that, in training, processes only the controller's kept tokens.

    Same call signature as ``TransformerLayer.forward``. With ``r < s`` in training: gather the kept tokens
    ``[r, b, h]``, slice the attention mask by rows and columns (exact for causal, document-reset and padding
    masks; with no mask a decoder keeps ``is_causal=True``, exact because kept positions are ascending), gather the
    rotary angles at the kept positions, run the layer, and scatter its output back; dropped tokens pass through in
    value and gradient. Learned absolute positions were added at the embedding, so they need nothing. In eval mode,
    or when ``r >= s`` (e.g. a curriculum-truncated batch), the wrapped layer runs as is.

    ``state_dict`` keys are those of the unwrapped layer (no ``layer.`` infix), so checkpoints move freely between
    runs with and without random-LTD (DeepSpeed needs ``remove_random_ltd_state_dict`` for that).
    """

    def __init__(self, layer: nn.Module, controller: RandomLTDController, ordinal: int) -> None:
        super().__init__()
        self.layer = layer
        self.ordinal = ordinal
        self.layer_id = controller.layer_ids[ordinal]
        self.controller = controller  # shared by all wrappers; a plain object, so no parameters or state_dict keys
        self.register_state_dict_post_hook(_strip_layer_prefix)
        self.register_load_state_dict_pre_hook(_add_layer_prefix)

    def extra_repr(self) -> str:
        return f"layer_id={self.layer_id}, ordinal={self.ordinal}, model_type={self.controller.model_type}"

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
        rotary_pos_emb: torch.Tensor | None = None, *, is_causal: bool = True,
    ) -> torch.Tensor:
        """``[s, b, h] -> [s, b, h]``; arguments as ``TransformerLayer.forward`` (full-sequence mask and angles)."""
        self._check_attention(attention_mask, is_causal)
        s = hidden_states.size(0)
        if not self.training or not self.controller.drops_tokens(s):
            return self.layer(hidden_states, attention_mask=attention_mask, rotary_pos_emb=rotary_pos_emb,
                              is_causal=is_causal)
        if rotary_pos_emb is not None and rotary_pos_emb.size(0) != s:
            raise ValueError(f"rotary_pos_emb covers {rotary_pos_emb.size(0)} tokens but hidden_states has {s}")
        indices = self.controller.layer_indices(self.ordinal, hidden_states)  # [b, r]
        kept = gather_tokens(hidden_states, indices)  # [r, b, h]
        mask = None if attention_mask is None else slice_attention_mask(attention_mask, indices)  # [b, 1, r, r]
        angles = None if rotary_pos_emb is None else gather_rotary_pos_emb(rotary_pos_emb, indices)  # [r, b, 1, d]
        out = self.layer(kept, attention_mask=mask, rotary_pos_emb=angles, is_causal=is_causal)
        return scatter_tokens(hidden_states, out, indices)

    def _check_attention(self, attention_mask: torch.Tensor | None, is_causal: bool) -> None:
        if attention_mask is not None:
            return
        model_type = self.controller.model_type
        if model_type == "decoder" and not is_causal:
            raise ValueError(
                f"random-LTD layer {self.layer_id}: model_type='decoder' but called with no attention_mask and "
                "is_causal=False; pass a mask or is_causal=True, or wrap with model_type='encoder'"
            )
        if model_type == "encoder" and is_causal:
            raise ValueError(
                f"random-LTD layer {self.layer_id}: model_type='encoder' but called with is_causal=True and no mask; "
                "an encoder attends bidirectionally (is_causal=False), or wrap with model_type='decoder'"
            )


def _strip_layer_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    inner = prefix + "layer."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _add_layer_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    inner = prefix + "layer."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


def resolve_layer_ids(layer_ids: Sequence[int] | None, num_layers: int, config: RandomLTDConfig) -> list[int]:
    """The layers to wrap, ascending: ``layer_ids`` (None: the paper's ``1 .. L-2``), which must be the config's.

    The config has already checked its ids (``RandomLTDConfig.__post_init__``: distinct, in range, counted); here
    they only have to describe this model, since the layer-token accounting uses the config's.

    Raises:
        ValueError: the ids or the layer count disagree with the config.
    """
    ids = default_layer_ids(num_layers) if layer_ids is None else sorted(layer_ids)
    if config.total_layer_num != num_layers or config.layer_ids != ids:
        raise ValueError(
            f"random-LTD wraps layers {ids} of {num_layers}, but the scheduler config counts layer tokens for "
            f"random_ltd_layer_id={config.layer_ids} of total_layer_num={config.total_layer_num}; make them agree"
        )
    ends = [i for i in ids if i in (0, num_layers - 1)]
    if ends:
        logger.warning("random-LTD wraps layer(s) %s: the paper keeps all tokens in the first and last layers", ends)
    return ids


def wrap_layers(
    layers: nn.ModuleList, layer_ids: Sequence[int] | None, scheduler: RandomLTDScheduler,
    rng_tracker: RNGStatesTracker, *, model_type: ModelType = "decoder",
) -> RandomLTDController:
    """Replace ``layers[i]`` for ``i in layer_ids`` by :class:`RandomLTDLayer` wrappers sharing one controller.

    Call before building the optimizer (parameters stay the same objects, their names gain a ``layer.`` infix;
    ``state_dict`` keys do not). Layers must be called in index order within a forward.

    Args:
        layers: the model's transformer layers (e.g. ``GPTModel.layers``), each callable as
            ``layer(hidden [s, b, h], attention_mask=..., rotary_pos_emb=..., is_causal=...)``.
        layer_ids: 0-based layers that drop tokens; None means the paper's ``1 .. L-2``. Must equal the scheduler
            config's ``random_ltd_layer_id`` (which its layer-token accounting uses).
        scheduler: kept-token schedule and layer-token counter.
        rng_tracker: the model's tracker (``GPTModel.rng_tracker``); needs the ``TOKEN_ROUTING_RNG`` stream.
        model_type: ``decoder`` (causal) or ``encoder`` (bidirectional, optional padding mask).

    Returns:
        The controller (call ``set_step`` each step; checkpoint its ``state_dict``).

    Raises:
        ValueError: ids that disagree with the scheduler config (``resolve_layer_ids``), a layer already wrapped,
            an unknown ``model_type``, or a tracker without the token-routing stream.
    """
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"random-LTD wrap_layers needs an nn.ModuleList of layers, got {type(layers).__name__}")
    if model_type not in get_args(ModelType):
        raise ValueError(f"random-LTD model_type must be one of {get_args(ModelType)}, got {model_type!r}")
    if TOKEN_ROUTING_RNG not in rng_tracker.names:
        raise ValueError(f"RNG tracker has no {TOKEN_ROUTING_RNG!r} stream (streams: {rng_tracker.names}); "
                         "build it with RNGStatesTracker.build")
    num_layers = len(layers)
    ids = resolve_layer_ids(layer_ids, num_layers, scheduler.config)
    wrapped = [i for i in ids if isinstance(layers[i], RandomLTDLayer)]
    if wrapped:
        raise ValueError(f"random-LTD layers {wrapped} are already wrapped; wrap each model once")
    controller = RandomLTDController(scheduler, rng_tracker, ids, num_layers, model_type)
    for ordinal, i in enumerate(ids):
        layers[i] = RandomLTDLayer(layers[i], controller, ordinal)
    return controller
