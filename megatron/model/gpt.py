"""GPT language model: embeddings, transformer stack, tied vocab-parallel output layer and per-token loss.

Reads top to bottom like nanoGPT's ``model.py`` with parallel layers where ``nn.Linear`` stood. Every parameter is
initialized from a generator seeded by ``(seed, its name)``, as the full unsharded tensor, so the model is the same
function at every tensor-parallel size.
"""

from __future__ import annotations

import torch
from torch import nn

from megatron.model.config import TransformerConfig
from megatron.model.language_model import build_compiled_loss, per_token_cross_entropy, tied_vocab_parallel_logits
from megatron.model.transformer import TransformerBlock, rotary_embedding
from megatron.parallel.layers import ColumnParallelLinear, VocabParallelEmbedding, init_master_weight, normal_init
from megatron.parallel.random import RNGStatesTracker, derive_seed
from megatron.parallel.state import ParallelState
from megatron.parallel.utils import ensure_divisibility

__all__ = ["GPTModel", "check_tensor_parallel_divisibility"]


def check_tensor_parallel_divisibility(config: TransformerConfig, vocab_size: int, tp_size: int) -> None:
    """Raise ``ValueError`` naming the field unless heads, key/value groups, ffn size and padded vocab all split
    evenly over TP."""
    what = "tensor_model_parallel_size"
    ensure_divisibility(config.num_attention_heads, tp_size, "num_attention_heads", what)
    if config.group_query_attention:
        ensure_divisibility(config.num_query_groups, tp_size, "num_query_groups", what)
    ensure_divisibility(config.ffn_hidden_size, tp_size, "ffn_hidden_size", what)
    ensure_divisibility(vocab_size, tp_size, "padded vocab_size", what)


class GPTModel(nn.Module):
    """Decoder-only transformer LM with tensor-parallel layers.

    Args:
        config: architecture (see :class:`TransformerConfig`).
        parallel_state: groups and ranks; TP size must divide heads, query groups, ffn size and ``vocab_size``.
        vocab_size: the padded vocabulary size V (Megatron pads to a multiple of 128 * TP).
        seed: initialization seed and base of the RNG tracker's streams (``self.rng_tracker``, which training
            checkpoints with ``get_states()``).

    Attributes:
        decoder: :class:`TransformerBlock`; ``decoder.layers`` (also ``self.layers``) may be wrapped element-wise.
        rng_tracker: the model-parallel / token-routing RNG streams shared by all layers.
    """

    def __init__(self, config: TransformerConfig, parallel_state: ParallelState, vocab_size: int, seed: int = 1234):
        super().__init__()
        check_tensor_parallel_divisibility(config, vocab_size, parallel_state.tp_size)
        self.config, self.parallel_state, self.vocab_size = config, parallel_state, vocab_size
        self.rng_tracker = RNGStatesTracker.build(seed, parallel_state)
        h, dtype, std = config.hidden_size, config.torch_params_dtype, config.init_method_std

        self.word_embeddings = VocabParallelEmbedding(
            vocab_size, h, parallel_state=parallel_state, init_method=normal_init(std),
            init_seed=derive_seed(seed, "word_embeddings"), params_dtype=dtype,
        )
        if config.position_embedding_type == "learned_absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, h, dtype=dtype)
            init_master_weight(self.position_embeddings.weight, (config.max_position_embeddings, h), -1,
                               normal_init(std), derive_seed(seed, "position_embeddings", "weight"), parallel_state)
        else:
            self.position_embeddings = None
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.decoder = TransformerBlock(config, parallel_state, rng_tracker=self.rng_tracker,
                                        init_seed=derive_seed(seed, "decoder"))
        if config.untie_embeddings_and_output_weights:
            self.output_layer = ColumnParallelLinear(
                h, vocab_size, parallel_state=parallel_state, init_method=normal_init(std),
                init_seed=derive_seed(seed, "output_layer"), bias=False, params_dtype=dtype,
            )
        else:
            self.output_layer = None
        self._compiled_loss = build_compiled_loss(config, parallel_state)

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers (``self.decoder.layers``), the hook point for layer wrappers."""
        return self.decoder.layers

    def forward(
        self, tokens: torch.Tensor, position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Language-model forward pass.

        Args:
            tokens: ``[b, s]`` token ids in ``[0, vocab_size)``.
            position_ids: ``[b, s]`` (or ``[1, s]``); None means ``0..s-1`` for every sample.
            attention_mask: bool ``[b|1, 1, s, s]``, True = masked (must include the causal part); None means plain
                causal attention, which lets SDPA use its fused kernels.
            labels: ``[b, s]`` next-token targets, or None.

        Returns:
            With ``labels``: per-token loss ``[b, s]`` fp32 (identical on all TP ranks; mask and average it outside).
            Without: vocab-parallel logits ``[b, s, V/tp]``, this rank's vocabulary slice.
        """
        b, s = tokens.shape
        if s > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {s} exceeds max_position_embeddings ({self.config.max_position_embeddings})"
            )
        if position_ids is None:
            position_ids = torch.arange(s, device=tokens.device).unsqueeze(0)  # [1, s]

        hidden = self.word_embeddings(tokens)  # [b, s, h]
        if self.position_embeddings is not None:
            hidden = hidden + self.position_embeddings(position_ids)
        hidden = self.embedding_dropout(hidden.transpose(0, 1).contiguous())  # [s, b, h]
        rotary = None
        if self.config.position_embedding_type == "rope":
            rotary = rotary_embedding(position_ids, self.config.rotary_dim, self.config.rotary_base)  # [s, b|1, 1, d]

        hidden = self.decoder(hidden, attention_mask=attention_mask, rotary_pos_emb=rotary, is_causal=True)

        # Back to batch-first before the output layer: transposing [s, b, h] is V/h times cheaper than the logits.
        logits = self._logits(hidden.transpose(0, 1).contiguous())  # [b, s, V/tp]
        if labels is None:
            return logits
        return per_token_cross_entropy(logits, labels, self.parallel_state.tp_group, self._compiled_loss)  # [b, s]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[b, s, h] -> [b, s, V/tp]`` through the output layer or the tied word embedding."""
        if self.output_layer is not None:
            return self.output_layer(hidden)
        return tied_vocab_parallel_logits(hidden, self.word_embeddings.weight, self.parallel_state.tp_group)
