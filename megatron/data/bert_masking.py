"""BERT's masked-LM corruption of one sample: whole-word n-gram masking with Megatron's 80/10/10 replacement.

``mask_tokens`` reproduces megatron-core's ``MaskedWordPieceDataset._create_masked_lm_predictions`` +
``BERTMaskedWordPieceDataset._get_token_mask`` with ``pretrain_bert.py``'s settings (n-grams up to 3 with
P(n) proportional to 1/n, whole words, no permutation), drawing from the caller's ``RandomState`` in exactly the
same order, so a sample's masked positions and replacements equal megatron-core's for the same seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

__all__ = ["MaskingVocab", "mask_tokens", "pad_token_id"]

MASK_REPLACE_PROB = 0.8  # a chosen position becomes [MASK]; of the rest, half a random id, half unchanged
RANDOM_REPLACE_PROB = 0.5


@dataclasses.dataclass(frozen=True)
class MaskingVocab:
    """The vocabulary facts masking needs."""

    cls: int
    """Id of [CLS] (never masked)."""
    sep: int
    """Id of [SEP] (never masked)."""
    mask: int
    """Id of [MASK]."""
    continuation: tuple[bool, ...]
    """``continuation[i]``: piece ``i`` starts with ``##`` (it continues the previous word)."""
    lookup: tuple[int, ...]
    """Ids a random replacement draws from: the tokenizer's ``inv_vocab`` keys in their order (as Megatron)."""

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> MaskingVocab:
        """From a WordPiece tokenizer (``cls``, ``sep``, ``mask``, ``inv_vocab``)."""
        inv_vocab = tokenizer.inv_vocab
        continuation = [False] * (max(inv_vocab) + 1)
        for i, piece in inv_vocab.items():
            continuation[i] = piece.startswith("##")
        return cls(int(tokenizer.cls), int(tokenizer.sep), int(tokenizer.mask), tuple(continuation),
                   tuple(int(i) for i in inv_vocab))


def pad_token_id(tokenizer: Any) -> int:
    """Megatron's padding id: the tokenizer's ``pad``, or -1 when it has none or it equals another special token
    (``special_tokens_dict`` values, else ``eos``/``eod``), so that no real token is taken for padding."""
    try:
        pad = int(tokenizer.pad)
    except Exception:  # noqa: BLE001 - any tokenizer without a usable pad id
        return -1
    try:
        specials = [v for k, v in tokenizer.special_tokens_dict.items() if k != "pad_token"]
    except (AttributeError, IndexError, ValueError):
        specials = []
    if not specials:
        for name in ("eos", "eod"):
            try:
                specials.append(getattr(tokenizer, name))
            except (AttributeError, NotImplementedError):
                pass
    return -1 if pad in specials else pad


def _word_candidates(tokens: list[int], vocab: MaskingVocab) -> list[list[int]]:
    """Positions grouped into whole words; a ``##`` piece joins the last word even across a [SEP]."""
    candidates: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token == vocab.cls or token == vocab.sep:
            continue
        if vocab.continuation[token] and candidates:
            candidates[-1].append(i)
        else:
            candidates.append([i])
    return candidates


def _replacement(rng: np.random.RandomState, vocab: MaskingVocab) -> Optional[int]:
    if rng.random() < MASK_REPLACE_PROB:
        return vocab.mask
    if rng.random() >= RANDOM_REPLACE_PROB:
        return vocab.lookup[rng.randint(0, len(vocab.lookup))]
    return None


def _ngram_probabilities(max_ngram: int) -> tuple[np.ndarray, np.ndarray]:
    # Computed with the same operations as Megatron so that rng.choice sees bit-identical probabilities.
    nvals = np.arange(max_ngram, dtype=np.int64) + 1
    nprobs = 1.0 / nvals
    nprobs = nprobs / nprobs.sum(keepdims=True)
    return nvals, nprobs / nprobs.sum(keepdims=True)


def mask_tokens(
    tokens: list[int], target_length: int, rng: np.random.RandomState, mask_prob: float, vocab: MaskingVocab,
    max_ngram: int = 3,
) -> tuple[list[int], list[int], list[int]]:
    """Choose and corrupt the positions to predict.

    About ``mask_prob`` of the tokens, at most ``mask_prob * target_length``: whole words are visited in a
    shuffled order, each starting an n-gram of n words (n drawn with P(n) proportional to 1/n, shortened until it
    fits the budget); positions already chosen are not chosen twice. A chosen position becomes [MASK] (80%), a
    random vocabulary id (10%) or stays (10%).

    Args:
        tokens: the framed sample ``[CLS] A [SEP] B [SEP]`` (ids).
        target_length: the sample's target length (caps the number of predictions).
        rng: the sample's random state (consumed as Megatron consumes it).
        mask_prob: fraction of tokens to predict.
        vocab: see ``MaskingVocab``.
        max_ngram: longest n-gram, in words.

    Returns:
        The corrupted tokens, the chosen positions (ascending) and their original ids.
    """
    candidates = _word_candidates(tokens, vocab)
    budget = min(mask_prob * target_length, max(1, int(round(len(tokens) * mask_prob))))
    nvals, probs = _ngram_probabilities(max_ngram)
    order = list(range(len(candidates)))
    rng.shuffle(order)
    masked = list(tokens)
    chosen: dict[int, int] = {}  # position -> original id, in the order chosen
    for start in order:
        if len(chosen) >= budget:
            break
        n = int(rng.choice(nvals, p=probs))
        while True:  # shorten the n-gram until it fits the remaining budget
            positions = [i for word in candidates[start : start + n] for i in word]
            n -= 1
            if budget >= len(chosen) + len(positions) or n == 0:
                break
        if budget < len(chosen) + len(positions) or any(i in chosen for i in positions):
            continue
        for i in positions:
            chosen[i] = tokens[i]
            replacement = _replacement(rng, vocab)
            if replacement is not None:
                masked[i] = replacement
    ordered = sorted(chosen)
    return masked, ordered, [chosen[i] for i in ordered]
