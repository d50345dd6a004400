"""BERT: word + position + token-type embeddings, a bidirectional transformer stack, the masked-LM head (tied
vocab-parallel logits plus an output bias) and the optional binary (next-sentence / sentence-order) head.

The same function as megatron-core's ``BertModel`` with its local layer spec: pre-LayerNorm layers and a final
LayerNorm (the layer stack is GPT's, run with ``is_causal=False`` and a padding mask), dropout once on the summed
embeddings. As in :mod:`megatron.model.gpt`, every parameter is initialized from ``(seed, its name)`` as the full
unsharded tensor, so the model is the same at every tensor-parallel size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.model.config import TransformerConfig
from megatron.model.gpt import check_tensor_parallel_divisibility
from megatron.model.language_model import build_compiled_loss, per_token_cross_entropy, tied_vocab_parallel_logits
from megatron.model.transformer import TransformerBlock, build_norm, rotary_embedding
from megatron.parallel.layers import InitMethod, VocabParallelEmbedding, init_master_weight, normal_init
from megatron.parallel.random import RNGStatesTracker, derive_seed
from megatron.parallel.state import ParallelState
from megatron.parallel.utils import divide, set_tensor_model_parallel_attributes

__all__ = ["BertModel", "BertLMHead", "padding_attention_mask"]


def padding_attention_mask(padding_mask: torch.Tensor) -> torch.Tensor:
    """``padding_mask [b, s]`` (1 = real token, 0 = padding) -> bool ``[b, 1, s, s]``, True where the key is padding.

    megatron-core's BERT also masks every key of a padded *query* row (mask = query pad OR key pad, applied as a
    -10000 fill, so such rows attend uniformly to all keys). Masking keys only gives identical outputs at every real
    position (a real query sees the same keys either way) and never hands SDPA a fully masked row. The result is an
    expanded view (no ``s * s`` allocation); random-LTD gathers its rows and columns like any other mask.
    """
    if padding_mask.dim() != 2:
        raise ValueError(f"padding_mask must be [b, s], got shape {tuple(padding_mask.shape)}")
    b, s = padding_mask.shape
    key_is_pad = padding_mask < 0.5  # megatron-core's binarization; accepts bool, int and float masks
    return key_is_pad[:, None, None, :].expand(b, 1, s, s)


def _replicated_linear(
    in_features: int, out_features: int, init_method: InitMethod, seed: int, parallel_state: ParallelState,
    dtype: torch.dtype,
) -> nn.Linear:
    """An ``nn.Linear`` kept whole on every TP rank: weight from ``seed``, bias zero, no draw from the global RNG."""
    linear = nn.utils.skip_init(nn.Linear, in_features, out_features, dtype=dtype)
    init_master_weight(linear.weight, (out_features, in_features), -1, init_method, seed, parallel_state)
    with torch.no_grad():
        linear.bias.zero_()
    return linear


def _replicated_embedding(
    num: int, dim: int, init_method: InitMethod, seed: int, parallel_state: ParallelState, dtype: torch.dtype,
) -> nn.Embedding:
    """An ``nn.Embedding`` kept whole on every TP rank, initialized from ``seed``."""
    embedding = nn.utils.skip_init(nn.Embedding, num, dim, dtype=dtype)
    init_master_weight(embedding.weight, (num, dim), -1, init_method, seed, parallel_state)
    return embedding


class BertLMHead(nn.Module):
    """Masked-LM head: ``dense h->h``, GELU, norm, then logits through the tied word embedding plus a bias.

    ``dense`` and ``layer_norm`` are replicated over TP; ``bias`` is this rank's ``[V/tp]`` slice of the output bias
    (zero at init, as megatron-core's output layer bias), tagged as TP-split along dim 0.
    """

    def __init__(self, config: TransformerConfig, parallel_state: ParallelState, vocab_size: int, *,
                 init_seed: int) -> None:
        super().__init__()
        h, dtype = config.hidden_size, config.torch_params_dtype
        self.tp_group = parallel_state.tp_group
        # megatron-core initializes this dense layer with the plain init_method, N(0, init_method_std).
        self.dense = _replicated_linear(h, h, normal_init(config.init_method_std),
                                        derive_seed(init_seed, "dense", "weight"), parallel_state, dtype)
        self.layer_norm = build_norm(config)  # megatron-core's head norm follows --normalization too
        per_rank = divide(vocab_size, parallel_state.tp_size, "padded vocab_size", "tensor_model_parallel_size")
        self.bias = nn.Parameter(torch.zeros(per_rank, dtype=dtype))
        set_tensor_model_parallel_attributes(self.bias, True, 0)

    def forward(self, hidden: torch.Tensor, word_embedding_weight: torch.Tensor) -> torch.Tensor:
        """``hidden [b, s, h]`` and this rank's embedding rows ``[V/tp, h]`` -> logits ``[b, s, V/tp]``."""
        hidden = self.layer_norm(F.gelu(self.dense(hidden)))
        return tied_vocab_parallel_logits(hidden, word_embedding_weight, self.tp_group, self.bias)


class BertModel(nn.Module):
    """Bidirectional transformer encoder with the masked-LM head and an optional binary head.

    Args:
        config: architecture (see :class:`TransformerConfig`); learned or rotary positions.
        parallel_state: groups and ranks; TP size must divide heads, ffn size and ``vocab_size``.
        vocab_size: the padded vocabulary size V.
        add_binary_head: add the pooler (dense + tanh on the first token) and the ``h -> 2`` binary classifier.
        num_tokentypes: rows of the token-type (segment) embedding; 0 means none.
        seed: initialization seed and base of the RNG tracker's streams (``self.rng_tracker``).

    Attributes:
        encoder: :class:`TransformerBlock`; ``encoder.layers`` (also ``self.layers``) may be wrapped element-wise.
        rng_tracker: the model-parallel / token-routing RNG streams shared by all layers.
    """

    def __init__(
        self, config: TransformerConfig, parallel_state: ParallelState, vocab_size: int, *,
        add_binary_head: bool = True, num_tokentypes: int = 2, seed: int = 1234,
    ) -> None:
        super().__init__()
        check_tensor_parallel_divisibility(config, vocab_size, parallel_state.tp_size)
        if num_tokentypes < 0:
            raise ValueError(f"num_tokentypes must be >= 0, got {num_tokentypes}")
        self.config, self.parallel_state, self.vocab_size = config, parallel_state, vocab_size
        self.num_tokentypes = num_tokentypes
        self.rng_tracker = RNGStatesTracker.build(seed, parallel_state)
        h, dtype, std = config.hidden_size, config.torch_params_dtype, config.init_method_std
        init = normal_init(std)

        self.word_embeddings = VocabParallelEmbedding(
            vocab_size, h, parallel_state=parallel_state, init_method=init,
            init_seed=derive_seed(seed, "word_embeddings"), params_dtype=dtype,
        )
        self.position_embeddings = None
        if config.position_embedding_type == "learned_absolute":
            self.position_embeddings = _replicated_embedding(
                config.max_position_embeddings, h, init, derive_seed(seed, "position_embeddings", "weight"),
                parallel_state, dtype)
        self.tokentype_embeddings = None
        if num_tokentypes > 0:
            self.tokentype_embeddings = _replicated_embedding(
                num_tokentypes, h, init, derive_seed(seed, "tokentype_embeddings", "weight"), parallel_state, dtype)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.encoder = TransformerBlock(config, parallel_state, rng_tracker=self.rng_tracker,
                                        init_seed=derive_seed(seed, "encoder"))
        self.lm_head = BertLMHead(config, parallel_state, vocab_size, init_seed=derive_seed(seed, "lm_head"))
        self.pooler = self.binary_head = None
        if add_binary_head:
            # megatron-core builds both with the plain init_method as well.
            self.pooler = _replicated_linear(h, h, init, derive_seed(seed, "pooler", "weight"), parallel_state, dtype)
            self.binary_head = _replicated_linear(h, 2, init, derive_seed(seed, "binary_head", "weight"),
                                                  parallel_state, dtype)
        self._compiled_loss = build_compiled_loss(config, parallel_state)

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers (``self.encoder.layers``), the hook point for layer wrappers."""
        return self.encoder.layers

    def _embed(self, tokens: torch.Tensor, tokentype_ids: torch.Tensor | None) -> torch.Tensor:
        """``[b, s]`` ids -> ``[s, b, h]``: word + position + token type, then (one) embedding dropout."""
        hidden = self.word_embeddings(tokens)  # [b, s, h]
        if self.position_embeddings is not None:
            hidden = hidden + self.position_embeddings.weight[: tokens.size(1)]  # positions 0..s-1
        if self.tokentype_embeddings is not None:
            hidden = hidden + self.tokentype_embeddings(tokentype_ids)
        return self.embedding_dropout(hidden.transpose(0, 1).contiguous())

    def _check_inputs(self, tokens: torch.Tensor, padding_mask: torch.Tensor,
                      tokentype_ids: torch.Tensor | None) -> torch.Tensor | None:
        """Validate shapes; returns the token types to use (all zeros when None and the model has types)."""
        s = tokens.size(1)
        if s > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {s} exceeds max_position_embeddings ({self.config.max_position_embeddings})"
            )
        if padding_mask.shape != tokens.shape:
            raise ValueError(f"padding_mask shape {tuple(padding_mask.shape)} must equal tokens shape "
                             f"{tuple(tokens.shape)}")
        if tokentype_ids is not None and self.tokentype_embeddings is None:
            raise ValueError("tokentype_ids given but the model has num_tokentypes=0; build it with "
                             "num_tokentypes > 0 or pass tokentype_ids=None")
        if tokentype_ids is None and self.tokentype_embeddings is not None:
            return torch.zeros_like(tokens)  # a single segment
        return tokentype_ids

    def encode(self, tokens: torch.Tensor, padding_mask: torch.Tensor,
               tokentype_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings and the transformer stack only (no head): the final hidden states ``[s, b, h]``.

        Arguments as :meth:`forward`. Fine-tuning heads start from here, so they never pay for the LM logits.
        """
        tokentype_ids = self._check_inputs(tokens, padding_mask, tokentype_ids)
        hidden = self._embed(tokens, tokentype_ids)  # [s, b, h]
        rotary = None
        if self.config.position_embedding_type == "rope":
            positions = torch.arange(tokens.size(1), device=tokens.device).unsqueeze(0)  # [1, s]
            rotary = rotary_embedding(positions, self.config.rotary_dim, self.config.rotary_base)  # [s, 1, 1, d]
        return self.encoder(hidden, attention_mask=padding_attention_mask(padding_mask), rotary_pos_emb=rotary,
                            is_causal=False)  # [s, b, h]

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooler: ``tanh(dense(hidden[0]))``, the first ([CLS]) token of ``[s, b, h]`` -> ``[b, h]``."""
        if self.pooler is None:
            raise ValueError("this BertModel has no pooler; build it with add_binary_head=True")
        return torch.tanh(self.pooler(hidden[0]))

    def forward(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor, tokentype_ids: torch.Tensor | None = None,
        lm_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masked-LM (and binary-head) forward pass.

        Args:
            tokens: ``[b, s]`` token ids in ``[0, vocab_size)``.
            padding_mask: ``[b, s]``, 1 at real tokens and 0 at padding (no query attends to a padded key).
            tokentype_ids: ``[b, s]`` segment ids in ``[0, num_tokentypes)``; None means segment 0 everywhere.
            lm_labels: ``[b, s]`` targets; negative values (-1 at unpredicted positions) are read as token 0 and
                give a finite loss that the caller must mask out.

        Returns:
            ``(lm_out, binary_logits)``. ``lm_out``: with ``lm_labels`` the per-token loss ``[b, s]`` fp32
            (identical on all TP ranks), otherwise vocab-parallel logits ``[b, s, V/tp]``. ``binary_logits``:
            ``[b, 2]`` fp32 from the first token, or None without the binary head.
        """
        hidden = self.encode(tokens, padding_mask, tokentype_ids)  # [s, b, h]
        binary_logits = None
        if self.binary_head is not None:
            binary_logits = self.binary_head(self.pool(hidden)).float()  # [b, 2]

        # Batch-first before the head: transposing [s, b, h] is V/h times cheaper than transposing the logits.
        logits = self.lm_head(hidden.transpose(0, 1).contiguous(), self.word_embeddings.weight)  # [b, s, V/tp]
        if lm_labels is None:
            return logits, binary_logits
        # Clamped so -1 never reaches an index (the compiled F.cross_entropy path would fail on it).
        loss = per_token_cross_entropy(logits, lm_labels.clamp(min=0), self.parallel_state.tp_group,
                                       self._compiled_loss)  # [b, s] fp32
        return loss, binary_logits
