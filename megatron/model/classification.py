"""Fine-tuning heads over a BERT encoder: sequence classification / regression (GLUE) and multiple choice (RACE).

Both run the embeddings, the transformer stack and the pooler of a :class:`BertModel` (``encode`` + ``pool``), then
dropout (``hidden_dropout``) and a new linear layer initialized N(0, ``init_method_std``) with a zero bias. They
take over the BERT they wrap and drop its masked-LM and binary heads, which fine-tuning never evaluates. The new
layer is replicated over tensor-parallel ranks and initialized from ``(seed, its name)`` like every BERT
parameter, so a model is the same at every TP size.
"""

from __future__ import annotations

import torch
from torch import nn

from megatron.model.bert import BertModel, _replicated_linear
from megatron.parallel.layers import normal_init
from megatron.parallel.random import derive_seed

__all__ = ["BertClassifier", "BertMultipleChoice"]


def _adopt(bert: BertModel) -> BertModel:
    """Check that ``bert`` has a pooler and drop the pretraining heads (their weights would only take memory and
    optimizer state: nothing reads them once the task head exists)."""
    if bert.pooler is None:
        raise ValueError("fine-tuning needs the BERT pooler: build the BertModel with add_binary_head=True (a "
                         "checkpoint pretrained with --bert-no-binary-head then gets a freshly initialized pooler)")
    bert.lm_head = None
    bert.binary_head = None
    return bert


def _head(bert: BertModel, out_features: int, seed: int) -> nn.Linear:
    cfg = bert.config
    return _replicated_linear(cfg.hidden_size, out_features, normal_init(cfg.init_method_std),
                              derive_seed(seed, "head", "weight"), bert.parallel_state, cfg.torch_params_dtype)


class BertClassifier(nn.Module):
    """``[CLS]`` pooled state -> dropout -> ``Linear(h, num_classes)``; ``num_classes=1`` is a regression score.

    Args:
        bert: a :class:`BertModel` with the pooler; this module takes it over (its ``lm_head`` and ``binary_head``
            are removed, so ``bert.forward`` no longer works; use ``bert.encode``).
        num_classes: output width C (1 for STS-B-style regression).
        seed: initialization seed of the head.
    """

    def __init__(self, bert: BertModel, num_classes: int, *, seed: int = 1234) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.bert = _adopt(bert)
        self.num_classes = num_classes
        self.dropout = nn.Dropout(bert.config.hidden_dropout)
        self.head = _head(bert, num_classes, seed)

    @property
    def rng_tracker(self):
        """The wrapped BERT's RNG streams (checkpointed with the model)."""
        return self.bert.rng_tracker

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor,
                tokentype_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens``, ``padding_mask``, ``tokentype_ids``: ``[b, s]`` -> logits (or scores) ``[b, C]`` in fp32."""
        hidden = self.bert.encode(tokens, padding_mask, tokentype_ids)  # [s, b, h]
        return self.head(self.dropout(self.bert.pool(hidden))).float()  # [b, C]


class BertMultipleChoice(nn.Module):
    """Each (question, choice) sequence scored by ``Linear(h, 1)`` on its pooled state; logits over the choices.

    Args:
        bert: a :class:`BertModel` with the pooler; taken over as in :class:`BertClassifier`.
        seed: initialization seed of the head.
    """

    def __init__(self, bert: BertModel, *, seed: int = 1234) -> None:
        super().__init__()
        self.bert = _adopt(bert)
        self.dropout = nn.Dropout(bert.config.hidden_dropout)
        self.head = _head(bert, 1, seed)

    @property
    def rng_tracker(self):
        """The wrapped BERT's RNG streams (checkpointed with the model)."""
        return self.bert.rng_tracker

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor,
                tokentype_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[b, n, s]`` inputs (n choices per example) -> logits ``[b, n]`` in fp32 (softmax over the choices)."""
        if tokens.dim() != 3:
            raise ValueError(f"multiple-choice tokens must be [b, choices, s], got shape {tuple(tokens.shape)}")
        b, n, s = tokens.shape
        flat = [t.reshape(b * n, s) if t is not None else None for t in (tokens, padding_mask, tokentype_ids)]
        hidden = self.bert.encode(*flat)  # [s, b*n, h]
        scores = self.head(self.dropout(self.bert.pool(hidden)))  # [b*n, 1]
        return scores.view(b, n).float()
