"""Pre-norm transformer layer and stack with tensor-parallel attention and MLP (sequence-first ``[s, b, h]``).

Attention heads (and grouped-query attention's key/value groups) are split over the TP ranks (fused QKV
column-parallel projection, row-parallel output projection) and the core runs through
``torch.nn.functional.scaled_dot_product_attention``. Norms are LayerNorm or RMSNorm, the MLP GELU or SwiGLU. A
layer keeps no state tied to the sequence length, so random-LTD can run it on any sorted subset of tokens with the
matching slice of the mask and of the rotary angles. Activation recomputation goes through
``megatron.parallel.random.checkpoint`` so dropout is replayed exactly.

With attention dropout in training, a layer's computation runs inside the RNG tracker's model-parallel fork, taken
once per layer call outside any compiled graph: attention dropout draws from the (per-TP-rank) default generator
inside SDPA's fused kernels, and hidden dropout from the replicated stream's state that the fork yields, passed
explicitly. ``TransformerLayer.compile`` compiles just that computation, so ``torch.compile`` sees no RNG state swap
and traces each layer without a graph break.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.model.config import TransformerConfig
from megatron.parallel.layers import ColumnParallelLinear, RowParallelLinear, normal_init, scaled_normal_init
from megatron.parallel.random import MODEL_PARALLEL_RNG, RNGState, RNGStatesTracker, checkpoint, derive_seed, dropout
from megatron.parallel.state import ParallelState
from megatron.parallel.utils import divide

__all__ = [
    "build_norm",
    "rotary_embedding",
    "apply_rotary_pos_emb",
    "ParallelAttention",
    "ParallelMLP",
    "TransformerLayer",
    "TransformerBlock",
]


def build_norm(config: TransformerConfig) -> nn.Module:
    """The ``config.normalization`` module over the hidden size: ``nn.LayerNorm`` or ``nn.RMSNorm`` (weight only),
    both with ``layernorm_epsilon`` and torch's fused kernels."""
    norm = nn.RMSNorm if config.normalization == "RMSNorm" else nn.LayerNorm
    return norm(config.hidden_size, eps=config.layernorm_epsilon, dtype=config.torch_params_dtype)


def rotary_embedding(position_ids: torch.Tensor, dim: int, base: int = 10000) -> torch.Tensor:
    """RoPE angles for ``position_ids [b|1, s]``: ``[s, b|1, 1, dim]`` fp32 (frequencies repeated twice, as Megatron).

    Angles are a pure function of the positions, so a caller keeping a subset of tokens takes the same subset of
    this tensor along dim 0.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=position_ids.device) / dim))
    angles = position_ids.transpose(0, 1).float().unsqueeze(-1) * inv_freq  # [s, b, dim/2]
    return torch.cat((angles, angles), dim=-1).unsqueeze(2)  # [s, b, 1, dim]


def apply_rotary_pos_emb(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``angles.size(-1)`` channels of ``t [s, b, n, d_head]`` by ``angles [s, b|1, 1, d]``."""
    dim = angles.size(-1)
    t_rot, t_pass = t[..., :dim], t[..., dim:]
    cos, sin = angles.cos().to(t.dtype), angles.sin().to(t.dtype)
    x1, x2 = t_rot.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((t_rot * cos + rotated * sin, t_pass), dim=-1)


class ParallelAttention(nn.Module):
    """Self-attention with heads split over TP ranks: ``[s, b, h] -> [s, b, h]``.

    The fused QKV weight is laid out per key/value group (rows ``[q heads of group g; k_g; v_g]``, megatron-core's
    layout; without grouped-query attention every head is its own group, ``[q_i; k_i; v_i]``, Megatron's legacy
    layout), so the contiguous TP split of its rows hands each rank whole groups. Attention dropout draws from the
    default generator, which the calling :class:`TransformerLayer` has set to the tracker's model-parallel stream:
    each rank owns different heads, so their masks must be independent.
    """

    def __init__(self, config: TransformerConfig, parallel_state: ParallelState, *, init_seed: int) -> None:
        super().__init__()
        tp = parallel_state.tp_size
        self.heads_per_rank = divide(config.num_attention_heads, tp, "num_attention_heads",
                                     "tensor_model_parallel_size")
        self.groups_per_rank = divide(config.query_groups, tp, "num_query_groups", "tensor_model_parallel_size")
        self.kv_channels = config.kv_channels
        projection = config.kv_channels * config.num_attention_heads
        qkv_size = projection + 2 * config.kv_channels * config.query_groups
        dtype = config.torch_params_dtype
        self.query_key_value = ColumnParallelLinear(
            config.hidden_size, qkv_size, parallel_state=parallel_state,
            init_method=normal_init(config.init_method_std), init_seed=derive_seed(init_seed, "query_key_value"),
            bias=config.add_bias_linear, params_dtype=dtype,
        )
        self.dense = RowParallelLinear(
            projection, config.hidden_size, parallel_state=parallel_state,
            init_method=scaled_normal_init(config.init_method_std, config.num_layers),
            init_seed=derive_seed(init_seed, "dense"), bias=config.add_bias_linear, params_dtype=dtype,
        )
        self.attention_dropout = config.attention_dropout
        self.recompute_core = config.recompute_granularity == "selective"

    def _core_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        s, b = q.shape[:2]
        grouped = self.groups_per_rank != self.heads_per_rank
        if grouped and attention_mask is not None:
            # SDPA's own GQA runs only in its flash and math kernels, and flash takes no mask: with a mask, share
            # the key/value heads explicitly (head i reads group i // (heads / groups)) so the memory-efficient
            # kernel stays usable.
            repeat = self.heads_per_rank // self.groups_per_rank
            k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
            grouped = False
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [b, np/tp, s, hn]; k, v [b, ng/tp, s, hn]
        dropout_p = self.attention_dropout if self.training else 0.0
        # SDPA's boolean mask marks positions that take part; ours (Megatron's) marks the masked ones.
        sdpa_mask = None if attention_mask is None else ~attention_mask
        # Softmax statistics are accumulated in fp32 inside SDPA's kernels for half inputs.
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=sdpa_mask, dropout_p=dropout_p, is_causal=is_causal and attention_mask is None,
            enable_gqa=grouped,
        )  # [b, np/tp, s, hn]
        return ctx.permute(2, 0, 1, 3).reshape(s, b, self.heads_per_rank * self.kv_channels)  # [s, b, h/tp]

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
        rotary_pos_emb: torch.Tensor | None, is_causal: bool,
    ) -> torch.Tensor:
        s, b = hidden_states.shape[:2]
        d, groups = self.kv_channels, self.groups_per_rank
        heads_per_group = self.heads_per_rank // groups
        qkv = self.query_key_value(hidden_states)  # [s, b, (np + 2 ng) hn / tp]
        qkv = qkv.view(s, b, groups, (heads_per_group + 2) * d)
        q, k, v = qkv.split([heads_per_group * d, d, d], dim=-1)  # [s, b, ng/tp, np/ng hn], k, v [s, b, ng/tp, hn]
        if heads_per_group > 1:
            q = q.reshape(s, b, self.heads_per_rank, d)  # [s, b, np/tp, hn]
        if rotary_pos_emb is not None:
            q, k = apply_rotary_pos_emb(q, rotary_pos_emb), apply_rotary_pos_emb(k, rotary_pos_emb)
        if self.recompute_core:
            # torch's checkpoint replays the default generator, i.e. the model-parallel stream the layer installed.
            ctx = checkpoint(self._core_attention, q, k, v, attention_mask, is_causal)
        else:
            ctx = self._core_attention(q, k, v, attention_mask, is_causal)
        return self.dense(ctx)  # [s, b, h]


class ParallelMLP(nn.Module):
    """``h -> ffn/tp -> h`` MLP: column-parallel up projection, GELU (or SwiGLU), row-parallel down projection.

    With SwiGLU the up projection stacks gate and up (``dense_h_to_4h.weight`` is ``[2, ffn/tp, h]``): each rank
    holds the gate and up rows of the same ffn channels, so ``silu(gate) * up`` needs no communication.
    """

    def __init__(self, config: TransformerConfig, parallel_state: ParallelState, *, init_seed: int) -> None:
        super().__init__()
        divide(config.ffn_hidden_size, parallel_state.tp_size, "ffn_hidden_size", "tensor_model_parallel_size")
        dtype = config.torch_params_dtype
        self.swiglu = config.swiglu
        stacked = 2 if config.swiglu else 1
        self.dense_h_to_4h = ColumnParallelLinear(
            config.hidden_size, stacked * config.ffn_hidden_size, parallel_state=parallel_state,
            init_method=normal_init(config.init_method_std), init_seed=derive_seed(init_seed, "dense_h_to_4h"),
            bias=config.add_bias_linear, params_dtype=dtype, stacked=stacked,
        )
        self.dense_4h_to_h = RowParallelLinear(
            config.ffn_hidden_size, config.hidden_size, parallel_state=parallel_state,
            init_method=scaled_normal_init(config.init_method_std, config.num_layers),
            init_seed=derive_seed(init_seed, "dense_4h_to_h"), bias=config.add_bias_linear, params_dtype=dtype,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.dense_h_to_4h(hidden_states).chunk(2, dim=-1)  # each [s, b, ffn/tp]
            intermediate = F.silu(gate) * up
        else:
            intermediate = F.gelu(self.dense_h_to_4h(hidden_states))  # [s, b, ffn/tp]
        return self.dense_4h_to_h(intermediate)  # [s, b, h]


class TransformerLayer(nn.Module):
    """Pre-norm block: ``x + drop(attn(ln1(x)))``, then ``y + drop(mlp(ln2(y)))``.

    Hidden dropout acts on the replicated ``[s, b, h]`` stream and therefore draws from torch's default stream, which
    the training setup seeds identically on all TP ranks. With attention dropout in training, :meth:`forward` runs
    the layer inside ``rng_tracker.fork(MODEL_PARALLEL_RNG)`` and hidden dropout draws from the default stream's
    state the fork yields (:func:`megatron.parallel.random.dropout`): the same masks as outside the fork, without a
    state swap inside the layer's computation (:meth:`compile` compiles only that computation).
    """

    def __init__(
        self, config: TransformerConfig, parallel_state: ParallelState, layer_number: int, *,
        rng_tracker: RNGStatesTracker, init_seed: int,
    ) -> None:
        super().__init__()
        self.layer_number = layer_number
        self.input_layernorm = build_norm(config)
        self.self_attention = ParallelAttention(config, parallel_state,
                                                init_seed=derive_seed(init_seed, "self_attention"))
        self.post_attention_layernorm = build_norm(config)
        self.mlp = ParallelMLP(config, parallel_state, init_seed=derive_seed(init_seed, "mlp"))
        self.hidden_dropout = config.hidden_dropout
        self.residual_post_layernorm = config.apply_residual_connection_post_layernorm
        self.rng_tracker = rng_tracker
        self._compiled_body = None

    def compile(self, *args, **kwargs) -> None:
        """Compile the layer's computation with ``torch.compile(*args, **kwargs)``, in place.

        Unlike ``nn.Module.compile`` this leaves :meth:`forward`'s RNG fork outside the graph (Dynamo cannot trace
        ``get_rng_state``/``set_rng_state``), so dropout and attention dropout compile without a graph break.
        Wrappers that replace this layer in a ``ModuleList`` (random-LTD) still call the compiled computation.
        """
        self._compiled_body = torch.compile(TransformerLayer._body, *args, **kwargs)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
        rotary_pos_emb: torch.Tensor | None = None, *, is_causal: bool = True,
    ) -> torch.Tensor:
        """Run the layer on ``s`` tokens (any ``s``: the full sequence or a kept subset).

        Args:
            hidden_states: ``[s, b, h]``.
            attention_mask: bool ``[b|1, 1, s, s]``, True = masked; None means causal (``is_causal``) or no mask.
                An explicit mask is used as given (it must contain the causal part itself).
            rotary_pos_emb: RoPE angles ``[s, b|1, 1, d]`` for exactly these tokens, or None.
            is_causal: with no mask, attend causally (lets SDPA use its flash / memory-efficient kernels).

        Returns:
            ``[s, b, h]``.
        """
        s = hidden_states.size(0)
        if rotary_pos_emb is not None and rotary_pos_emb.size(0) != s:
            raise ValueError(
                f"rotary_pos_emb covers {rotary_pos_emb.size(0)} tokens but hidden_states has {s}; "
                "slice the angles at the kept positions"
            )
        if attention_mask is not None and tuple(attention_mask.shape[-2:]) != (s, s):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match {s} tokens")
        body = TransformerLayer._body if self._compiled_body is None else self._compiled_body
        if not (self.training and self.self_attention.attention_dropout > 0):
            return body(self, hidden_states, attention_mask, rotary_pos_emb, is_causal, None)
        with self.rng_tracker.fork(MODEL_PARALLEL_RNG) as replicated_rng_state:
            return body(self, hidden_states, attention_mask, rotary_pos_emb, is_causal, replicated_rng_state)

    def _body(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, rotary_pos_emb: torch.Tensor | None,
        is_causal: bool, hidden_rng_state: RNGState | None,
    ) -> torch.Tensor:
        """The layer's computation (what :meth:`compile` compiles); hidden dropout draws from ``hidden_rng_state``
        when given, else from the default generator."""
        ln_out = self.input_layernorm(hidden_states)
        attn = self.self_attention(ln_out, attention_mask, rotary_pos_emb, is_causal)
        residual = ln_out if self.residual_post_layernorm else hidden_states
        hidden = residual + dropout(attn, self.hidden_dropout, self.training, hidden_rng_state)
        ln_out = self.post_attention_layernorm(hidden)
        residual = ln_out if self.residual_post_layernorm else hidden
        return residual + dropout(self.mlp(ln_out), self.hidden_dropout, self.training, hidden_rng_state)


class TransformerBlock(nn.Module):
    """``num_layers`` transformer layers and the final norm.

    ``layers`` is a plain ``nn.ModuleList``: entries may be replaced by wrappers (random-LTD) that accept
    ``wrapper(hidden_states, attention_mask=..., rotary_pos_emb=..., is_causal=...)``; the block always calls layers
    with those keywords and passes the full-sequence mask and rotary angles for the wrapper to slice.
    """

    def __init__(
        self, config: TransformerConfig, parallel_state: ParallelState, *, rng_tracker: RNGStatesTracker,
        init_seed: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(config, parallel_state, i, rng_tracker=rng_tracker,
                             init_seed=derive_seed(init_seed, "layers", i))
            for i in range(config.num_layers)
        )
        self.final_layernorm = build_norm(config)
        if config.torch_compile:
            for layer in self.layers:
                layer.compile()  # in place: wrappers (random-LTD) that replace the entry still call the compiled body
        self.rng_tracker = rng_tracker
        self.recompute_full = config.recompute_granularity == "full"
        self.recompute_method = config.recompute_method
        self.recompute_num_layers = config.recompute_num_layers

    def _run_layers(
        self, hidden_states: torch.Tensor, start: int, end: int, attention_mask: torch.Tensor | None,
        rotary_pos_emb: torch.Tensor | None, is_causal: bool,
    ) -> torch.Tensor:
        for layer in self.layers[start:end]:
            hidden_states = layer(
                hidden_states, attention_mask=attention_mask, rotary_pos_emb=rotary_pos_emb, is_causal=is_causal
            )
        return hidden_states

    def _chunks(self) -> list[tuple[int, int, bool]]:
        """``(start, end, recompute)`` spans covering all layers, per the recomputation settings."""
        n = len(self.layers)
        if not (self.recompute_full and self.training):
            return [(0, n, False)]
        k = self.recompute_num_layers
        if self.recompute_method == "uniform":
            return [(i, min(i + k, n), True) for i in range(0, n, k)]
        return [(i, i + 1, i < k) for i in range(n)]  # block: the first k layers, one checkpoint each

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
        rotary_pos_emb: torch.Tensor | None = None, *, is_causal: bool = True,
    ) -> torch.Tensor:
        """``[s, b, h] -> [s, b, h]`` (after the final norm); arguments as :meth:`TransformerLayer.forward`."""
        for start, end, recompute in self._chunks():
            if recompute:
                hidden_states = checkpoint(
                    self._run_layers, hidden_states, start, end, attention_mask, rotary_pos_emb, is_causal,
                    rng_tracker=self.rng_tracker,
                )
            else:
                hidden_states = self._run_layers(hidden_states, start, end, attention_mask, rotary_pos_emb, is_causal)
        return self.final_layernorm(hidden_states)
