"""Transformer architecture config (Megatron flag names), named model flavours and the FLOP count per iteration.

``TransformerConfig`` is the model room's section of the run config. Architecture fields left ``None`` are filled
from ``model_flavor`` (explicit values win), so ``--model-flavor gpt-125m --num-layers 6`` means "125M but six
layers". ``num_floating_point_operations`` is Megatron-LM's training FLOP formula, extended to per-layer token counts
for random-LTD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch

__all__ = ["TransformerConfig", "ModelFlavor", "FLAVORS", "num_floating_point_operations"]

ModelFlavor = Literal["debug", "gpt-125m", "gpt-350m", "gpt-1.3b", "bert-large"]
PositionEmbeddingType = Literal["learned_absolute", "rope"]
# Megatron-LM spells the norms LayerNorm / RMSNorm, Megatron-DeepSpeed layernorm / rmsnorm; both parse, and
# __post_init__ stores Megatron-LM's spelling.
Normalization = Literal["LayerNorm", "RMSNorm", "layernorm", "rmsnorm"]
RecomputeGranularity = Literal["full", "selective"]
RecomputeMethod = Literal["uniform", "block"]
ParamsDtype = Literal["float32", "bfloat16", "float16"]

# Architecture presets. GPT sizes and init std follow the DeepSpeed data-efficiency GPT-3 recipes (125M: std 0.02,
# 350M: 0.018, 1.3B: 0.013); bert-large is BERT's 24 x 1024 x 16 at 512 positions. "debug" is small enough for CPU
# tests and end-to-end runs yet has layers 1..L-2 for random-LTD.
FLAVORS: dict[str, dict[str, Any]] = {
    "debug": dict(num_layers=4, hidden_size=64, num_attention_heads=4, max_position_embeddings=512,
                  init_method_std=0.02),
    "gpt-125m": dict(num_layers=12, hidden_size=768, num_attention_heads=12, max_position_embeddings=2048,
                     init_method_std=0.02),
    "gpt-350m": dict(num_layers=24, hidden_size=1024, num_attention_heads=16, max_position_embeddings=2048,
                     init_method_std=0.018),
    "gpt-1.3b": dict(num_layers=24, hidden_size=2048, num_attention_heads=16, max_position_embeddings=2048,
                     init_method_std=0.013),
    "bert-large": dict(num_layers=24, hidden_size=1024, num_attention_heads=16, max_position_embeddings=512,
                       init_method_std=0.02),
}
_DEFAULT_INIT_METHOD_STD = 0.02
_NORM_SPELLINGS = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(kw_only=True)
class TransformerConfig:
    """Shape, regularization, initialization and recomputation of a GPT/BERT transformer stack.

    ``__post_init__`` resolves derived fields in place (flavor values, kv_channels, ffn_hidden_size, query groups,
    the normalization's spelling, recompute defaults), so build a new config to change the architecture instead of
    ``dataclasses.replace`` on a resolved one (whose derived sizes would be kept).
    """

    model_flavor: ModelFlavor | None = None
    """Named architecture preset; fills num_layers, hidden_size, num_attention_heads, max_position_embeddings and
    init_method_std where those are not given explicitly."""
    num_layers: int | None = None
    """Number of transformer layers."""
    hidden_size: int | None = None
    """Transformer hidden size h."""
    num_attention_heads: int | None = None
    """Number of attention heads."""
    ffn_hidden_size: int | None = None
    """MLP hidden size; None means 4 * hidden_size, or with swiglu int(4 * hidden_size * 2/3 / 64) * 64 (Megatron-LM's
    rule: about the parameters of a 4h GELU MLP, a multiple of 64)."""
    kv_channels: int | None = None
    """Per-head projection size; None means hidden_size // num_attention_heads."""
    max_position_embeddings: int | None = None
    """Maximum sequence length (rows of the learned position table)."""
    position_embedding_type: PositionEmbeddingType = "learned_absolute"
    """Learned absolute position embeddings or rotary embeddings (RoPE) applied to queries and keys."""
    rotary_percent: float = 1.0
    """Fraction of each head's channels that RoPE rotates."""
    rotary_base: int = 10000
    """RoPE base period."""
    hidden_dropout: float = 0.1
    """Dropout on embeddings and on attention/MLP outputs before the residual add."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    init_method_std: float | None = None
    """Std of the normal initializer (flavor's value, else 0.02); residual-output projections use std/sqrt(2L)."""
    layernorm_epsilon: float = 1e-5
    """Epsilon of every LayerNorm / RMSNorm (Megatron-LM: --norm-epsilon)."""
    normalization: Normalization = "LayerNorm"
    """Norm of every layer and of the final norm: LayerNorm, or RMSNorm (x / rms(x) * weight, no bias)."""
    swiglu: bool = False
    """SwiGLU MLP: the first projection yields gate and up halves (each ffn_hidden_size), silu(gate) * up."""
    group_query_attention: bool = False
    """Grouped-query attention: num_query_groups key/value heads, each shared by heads / groups query heads."""
    num_query_groups: int | None = field(default=None, metadata={"aliases": ["--num-key-value-heads"]})
    """Key/value heads with group_query_attention (None: 1, Megatron-LM's default). Megatron-DeepSpeed's
    --num-key-value-heads sets it too; a value other than num_attention_heads turns group_query_attention on."""
    apply_residual_connection_post_layernorm: bool = False
    """Take the residual from the LayerNorm output instead of its input (original BERT/Megatron option)."""
    untie_embeddings_and_output_weights: bool = False
    """Use a separate output projection instead of the word embedding matrix."""
    add_bias_linear: bool = True
    """Biases in the QKV, attention output and MLP linear layers (Megatron --disable-bias-linear = --no-add-bias-linear)."""
    recompute_activations: bool = False
    """Shorthand for recompute_granularity=selective (Megatron)."""
    recompute_granularity: RecomputeGranularity | None = None
    """Activation recomputation: full (whole layers) or selective (the attention core only)."""
    recompute_method: RecomputeMethod | None = None
    """With full recomputation: uniform (checkpoint groups of recompute_num_layers layers) or block (checkpoint only
    the first recompute_num_layers layers). None means uniform."""
    recompute_num_layers: int | None = None
    """Layers per checkpointed group (uniform) or number of checkpointed layers (block); None means 1 (uniform) or
    all layers (block)."""
    torch_compile: bool = False
    """Compile each transformer layer (and, at TP=1, the loss) with torch.compile: fuses bias, GELU, dropout,
    residual and LayerNorm kernels on GPU. Off by default (first steps pay the compilation)."""
    params_dtype: ParamsDtype = field(default="float32", metadata={"cli": False})
    """Storage dtype of parameters; set by the training config from --fp16/--bf16."""

    def __post_init__(self) -> None:
        if self.model_flavor is not None:
            if self.model_flavor not in FLAVORS:
                raise ValueError(f"model_flavor {self.model_flavor!r} is unknown; choose one of {sorted(FLAVORS)}")
            for name, value in FLAVORS[self.model_flavor].items():
                if getattr(self, name) is None:
                    setattr(self, name, value)
        if self.init_method_std is None:
            self.init_method_std = _DEFAULT_INIT_METHOD_STD
        for name in ("num_layers", "hidden_size", "num_attention_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if value is None:
                raise ValueError(f"{name} is required: set it or choose a model_flavor from {sorted(FLAVORS)}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.normalization = _NORM_SPELLINGS.get(self.normalization, self.normalization)
        if self.normalization not in ("LayerNorm", "RMSNorm"):
            raise ValueError(f"normalization must be LayerNorm or RMSNorm, got {self.normalization!r}")
        self._derive_sizes()
        self._resolve_query_groups()
        self._check_ranges()
        self._resolve_recompute()

    def _derive_sizes(self) -> None:
        if self.kv_channels is None:
            if self.hidden_size % self.num_attention_heads != 0:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                    f"({self.num_attention_heads}), or set kv_channels explicitly"
                )
            self.kv_channels = self.hidden_size // self.num_attention_heads
        if self.ffn_hidden_size is None:
            if self.swiglu:
                # Two input projections instead of one: 2/3 of 4h keeps the MLP's parameter count, rounded down to a
                # multiple of 64 (Megatron-LM's arguments.py).
                self.ffn_hidden_size = int(4 * self.hidden_size * 2 / 3 / 64) * 64
                if self.ffn_hidden_size < 1:
                    raise ValueError(f"swiglu derives ffn_hidden_size = int(4 * hidden_size ({self.hidden_size}) * "
                                     "2/3 / 64) * 64 = 0; set ffn_hidden_size explicitly")
            else:
                self.ffn_hidden_size = 4 * self.hidden_size
        for name in ("kv_channels", "ffn_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _resolve_query_groups(self) -> None:
        heads = self.num_attention_heads
        if not self.group_query_attention and self.num_query_groups is not None:
            # Megatron-DeepSpeed's --num-key-value-heads alone means grouped-query attention; as many groups as
            # heads is plain multi-head attention, stored as "no groups" so a later change of heads keeps it so.
            if self.num_query_groups == heads:
                self.num_query_groups = None
            else:
                self.group_query_attention = True
        if not self.group_query_attention:
            return
        if self.num_query_groups is None:
            self.num_query_groups = 1
        if self.num_query_groups < 1 or heads % self.num_query_groups:
            raise ValueError(
                f"num_query_groups ({self.num_query_groups}) must be >= 1 and divide num_attention_heads ({heads}): "
                "every key/value head serves the same number of query heads"
            )

    def _check_ranges(self) -> None:
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.init_method_std <= 0:
            raise ValueError(f"init_method_std must be > 0, got {self.init_method_std}")
        if self.layernorm_epsilon <= 0:
            raise ValueError(f"layernorm_epsilon must be > 0, got {self.layernorm_epsilon}")
        if not 0.0 < self.rotary_percent <= 1.0:
            raise ValueError(f"rotary_percent must be in (0, 1], got {self.rotary_percent}")
        if self.position_embedding_type == "rope" and self.rotary_dim % 2 != 0:
            raise ValueError(
                f"RoPE needs an even number of rotated channels: kv_channels ({self.kv_channels}) * rotary_percent "
                f"({self.rotary_percent}) = {self.rotary_dim}; change rotary_percent or kv_channels"
            )

    def _resolve_recompute(self) -> None:
        if self.recompute_activations:
            if self.recompute_granularity not in (None, "selective"):
                raise ValueError(
                    f"recompute_activations means selective recomputation but recompute_granularity is "
                    f"{self.recompute_granularity!r}; set only one of them"
                )
            self.recompute_granularity = "selective"
        if self.recompute_granularity != "full":
            if self.recompute_method is not None or self.recompute_num_layers is not None:
                raise ValueError(
                    f"recompute_method ({self.recompute_method}) and recompute_num_layers ({self.recompute_num_layers})"
                    f" apply only to recompute_granularity='full', got {self.recompute_granularity!r}"
                )
            return
        if self.recompute_method is None:
            self.recompute_method = "uniform"
        if self.recompute_num_layers is None:
            self.recompute_num_layers = 1 if self.recompute_method == "uniform" else self.num_layers
        if not 1 <= self.recompute_num_layers <= self.num_layers:
            raise ValueError(
                f"recompute_num_layers must be in [1, num_layers={self.num_layers}], got {self.recompute_num_layers}"
            )

    @classmethod
    def flavor(cls, name: ModelFlavor, **overrides: Any) -> TransformerConfig:
        """The preset ``name`` with fields in ``overrides`` replaced, e.g. ``flavor("debug", hidden_dropout=0.0)``."""
        return cls(model_flavor=name, **overrides)

    @property
    def query_groups(self) -> int:
        """Key/value heads: ``num_query_groups`` with grouped-query attention, else ``num_attention_heads``."""
        return self.num_query_groups if self.group_query_attention else self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Channels per head rotated by RoPE."""
        return int(self.kv_channels * self.rotary_percent)

    @property
    def torch_params_dtype(self) -> torch.dtype:
        """``params_dtype`` as a ``torch.dtype``."""
        return _DTYPES[self.params_dtype]


def num_floating_point_operations(
    cfg: TransformerConfig, batch_size: int, seq_length: int, vocab_size: int,
    layer_seq_lengths: Sequence[int] | None = None,
) -> float:
    """Training FLOPs (forward + backward, no recomputation) of one iteration, Megatron-LM's formula.

    Megatron-LM (``training.py``, ``num_floating_point_operations``) counts, with B = batch size, s = sequence length,
    L = layers, h = hidden size, n = heads, g = key/value heads (query groups), q = kv_channels * n,
    f = ffn_hidden_size, V = padded vocab, G = 3/2 with SwiGLU else 1::

        12 * B * s * L * h^2 * [(1 + g/n + s/h) * (q/h) + (f/h) * k * G + V / (2 * L * h)]

    This model has no MoE (k = 1). The factor 12 is 3 (backward costs two forwards) x 2 (FLOPs per multiply-add)
    x 2 (the bracket counts multiply-adds per token in units of 2 h^2: Q and output projections are 2 h q, K and V
    2 h q g/n, a GELU MLP 2 h f and SwiGLU's gate, up and down projections 3 h f). Attention scores are counted in
    full (causal masking is not subtracted) and over all n query heads, as Megatron does. For g = n, q = h and
    f = 4h this is the familiar 72 B s L h^2 (1 + s/6h + V/12Lh).

    Per layer l with ``s_l`` tokens the layer term is ``12 * B * (s_l * h * (q (1 + g/n) + f G) + s_l^2 * q)``; the
    logit term ``6 * B * s * h * V`` always uses the full ``seq_length``. With ``layer_seq_lengths=None`` every layer
    sees ``seq_length`` tokens and the sum equals the formula above. Random-LTD passes the kept-token count of each
    layer.

    Raises:
        ValueError: if ``layer_seq_lengths`` does not have ``num_layers`` entries.
    """
    h, q, f = cfg.hidden_size, cfg.kv_channels * cfg.num_attention_heads, cfg.ffn_hidden_size
    kv_ratio = cfg.query_groups / cfg.num_attention_heads
    gated = 1.5 if cfg.swiglu else 1.0
    if layer_seq_lengths is None:
        layer_seq_lengths = [seq_length] * cfg.num_layers
    if len(layer_seq_lengths) != cfg.num_layers:
        raise ValueError(
            f"layer_seq_lengths has {len(layer_seq_lengths)} entries, expected num_layers={cfg.num_layers}"
        )
    per_token_gemm = h * (q * (1.0 + kv_ratio) + f * gated)  # QKV + attention output projection + MLP
    layers = sum(float(s_l) * per_token_gemm + float(s_l) ** 2 * q for s_l in layer_seq_lengths)
    logits = 0.5 * float(seq_length) * h * vocab_size
    return 12.0 * batch_size * (layers + logits)
