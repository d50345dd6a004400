"""BERT pretraining datasets: masked-LM (+ next-sentence) samples from sentence-level ``.bin/.idx`` files.

``BertDataset`` serves one split of one file (written by ``tools/preprocess_data.py --split-sentences``: one
sequence per sentence, documents = groups of sentences). Its cached sample index (``bert_indices``) says which
sentences form each sample; ``__getitem__`` splits them into segments A and B (B a swapped-in segment half the
time: ``is_random``), trims them to the target length, frames ``[CLS] A [SEP] B [SEP]`` and masks it
(``bert_masking``). Items equal megatron-core 0.16's ``BERTMaskedWordPieceDataset`` with ``pretrain_bert.py``'s
settings. ``build_bert_datasets`` builds train/valid/test (and blends) through the shared ``builder``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional, Union

import numpy as np

from megatron.data.bert_indices import build_bert_sample_index, short_sequence_ratio
from megatron.data.bert_masking import MaskingVocab, mask_tokens, pad_token_id
from megatron.data.blending import BlendedDataset
from megatron.data.builder import build_datasets
from megatron.data.cached_dataset import CachedIndexDataset, IndexParams
from megatron.data.config import DataConfig, Split
from megatron.data.forced_indices import load_forced_bert_index
from megatron.data.gpt_dataset import tokenizer_identity
from megatron.logging import get_logger, log_rank0

__all__ = ["BertDataConfig", "BertDataset", "BertIndexParams", "build_bert_datasets", "MIN_BERT_SEQ_LENGTH"]

logger = get_logger(__name__)

SPECIAL_TOKENS_PER_SAMPLE = 3  # [CLS] A [SEP] B [SEP]
MIN_BERT_SEQ_LENGTH = SPECIAL_TOKENS_PER_SAMPLE + 2  # Megatron's packing needs a target of >= 2 tokens


@dataclasses.dataclass(kw_only=True)
class BertDataConfig:
    """BERT sample construction: masking rate, short samples, next-sentence ("binary head") segments."""

    mask_prob: float = 0.15
    """Fraction of each sample's tokens to predict (whole-word n-grams; 80% [MASK], 10% random, 10% kept)."""
    short_seq_prob: float = 0.1
    """Probability that a sample is packed to a random shorter target length instead of seq_length - 3."""
    bert_binary_head: bool = dataclasses.field(default=True, metadata={"negative_aliases": ["--bert-no-binary-head"]})
    """Next-sentence prediction: segment B follows A or, half the time, is swapped with it (is_random); samples
    need 2+ sentences. --bert-no-binary-head turns it off (masked LM alone, single-sentence documents used)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {self.mask_prob}; Megatron's default is 0.15")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}; the default is 0.1")
        if short_sequence_ratio(self.short_seq_prob) > np.iinfo(np.int32).max:
            raise ValueError(f"short_seq_prob = {self.short_seq_prob} is too small to draw short samples (one in "
                             f"{1 / self.short_seq_prob:.3g}); use 0 to turn them off")

    @property
    def min_sentences(self) -> int:
        """Fewest sentences per sample: A and B need one each with the binary head."""
        return 2 if self.bert_binary_head else 1


@dataclasses.dataclass(frozen=True)
class BertIndexParams(IndexParams):
    """What determines a BERT split's sample index: ``IndexParams`` (``num_samples``: whole epochs are packed until
    at least this many samples exist; ``seq_length``: padded tokens per sample, the packing target is
    ``seq_length - 3``; ``seed`` also seeds each item's random state, plus the item index) and these two."""

    short_seq_prob: float = dataclasses.field(kw_only=True)
    """See ``BertDataConfig.short_seq_prob``."""
    binary_head: bool = dataclasses.field(kw_only=True)
    """See ``BertDataConfig.bert_binary_head``."""


def _fingerprint_int64(values: np.ndarray) -> str:
    data = np.ascontiguousarray(values, dtype="<i8")
    return hashlib.md5(memoryview(data).cast("B"), usedforsecurity=False).hexdigest()


class BertDataset(CachedIndexDataset):
    """BERT samples of one split of one sentence-level indexed dataset.

    Item ``k`` (from sample-index row ``k``, already shuffled) is a dict of int64 [seq_length] arrays ``tokens``
    (megatron-core's ``text``: ``[CLS] A [SEP] B [SEP]``, corrupted at the predicted positions, padding = 0),
    ``types`` (0 for [CLS] A [SEP], 1 for B [SEP]), ``labels`` (original id where predicted, else -1),
    ``loss_mask`` (1 where predicted), ``padding_mask`` (1 for real tokens), plus ints ``is_random`` (1: A and B
    were swapped), ``truncated`` (1: trimmed to fit), ``dataset_id`` (0) and ``dataset_sample_index`` (``k``).

    Args:
        indexed_dataset: the sentence-level dataset (``sequence_lengths``, ``document_indices``, slices).
        params: what determines the sample index.
        mask_prob: fraction of tokens to predict.
        tokenizer: WordPiece tokenizer (``cls``, ``sep``, ``pad``, ``mask``, ``inv_vocab``).
        cache_dir: directory of the index cache; None keeps the index in memory only.
        sample_index: the samples mapping to use instead of building or caching it (``--train-idx-path``, already
            checked against the data).
    """

    KIND = "BertDataset"
    INDEX_NAMES = ("sample_index",)
    INDEX_FORMAT_VERSION = 1  # bump when the sample index semantics change, so old cache entries stop matching

    def __init__(self, indexed_dataset: Any, params: BertIndexParams, *, mask_prob: float, tokenizer: Any,
                 cache_dir: Optional[str], sample_index: Optional[np.ndarray] = None) -> None:
        super().__init__(indexed_dataset, params)
        self.mask_prob = mask_prob
        lo, hi = params.document_range
        num_documents = len(indexed_dataset.document_indices) - 1
        if not 0 <= lo < hi <= num_documents:
            raise ValueError(f"{params.path_prefix}: {params.split.name} split has documents [{lo}, {hi}) of "
                             f"{num_documents}; give it a larger share in 'split' or more data")
        if params.seq_length < MIN_BERT_SEQ_LENGTH:
            raise ValueError(f"seq_length ({params.seq_length}) must be >= {MIN_BERT_SEQ_LENGTH} for BERT: "
                             f"[CLS], two [SEP] and a target of at least 2 tokens")
        self.vocab = MaskingVocab.from_tokenizer(tokenizer)
        self.pad_id = pad_token_id(tokenizer)
        self._load_indices(cache_dir, tokenizer_identity(tokenizer),
                           None if sample_index is None else {"sample_index": sample_index})
        verb = "built" if self.built_indices else "loaded"
        log_rank0(logger, f"{verb} BERT {params.split.name} sample index for {params.path_prefix}: {len(self)} "
                          f"samples from documents [{lo}, {hi})")

    def unique_identifiers(self, tokenizer_id: Any) -> dict[str, Any]:
        """The cache key's parameters: index parameters, the data's sentence lengths and documents, tokenizer."""
        p = self.params
        return {
            **self._common_identifiers(tokenizer_id),
            "document_indices_md5": _fingerprint_int64(self.indexed_dataset.document_indices),
            "short_seq_prob": p.short_seq_prob,
            "min_sentences": 2 if p.binary_head else 1,
        }

    def _build(self) -> dict[str, np.ndarray]:
        p = self.params
        lo, hi = p.document_range
        exact = p.exact_num_epochs
        sample_index = build_bert_sample_index(
            self.indexed_dataset.document_indices[lo : hi + 1], self.indexed_dataset.sequence_lengths,
            None if exact is not None else p.num_samples, p.seq_length - SPECIAL_TOKENS_PER_SAMPLE, p.short_seq_prob,
            p.seed, 2 if p.binary_head else 1, num_epochs=exact,
        )
        return {"sample_index": sample_index}

    def __len__(self) -> int:
        return len(self.sample_index)

    def _segments(self, sentences: list[np.ndarray], rng: np.random.RandomState) -> tuple[list[int], list[int], bool]:
        """Segments A and B (B empty without the binary head) and whether they were swapped."""
        pivot, is_random = len(sentences), False
        if self.params.binary_head:
            assert len(sentences) > 1, f"a binary-head sample needs 2+ sentences, got {len(sentences)}"
            pivot = rng.randint(low=1, high=len(sentences)) if len(sentences) >= 3 else 1
            is_random = rng.random() < 0.5
        join = lambda parts: np.concatenate(parts).tolist() if parts else []  # noqa: E731
        a, b = join(sentences[:pivot]), join(sentences[pivot:])
        return (b, a, True) if is_random else (a, b, False)

    @staticmethod
    def _trim(a: list[int], b: list[int], target: int, rng: np.random.RandomState) -> tuple[list[int], list[int]]:
        """Drop tokens from the longer segment (B on a tie), front or back at random, until both fit ``target``.
        Which segment loses a token depends only on the lengths, so the coin flips are drawn at once."""
        excess = len(a) + len(b) - target
        if excess <= 0:
            return a, b
        front_a = front_b = back_a = back_b = 0
        for coin in rng.random(size=excess).tolist():
            len_a, len_b = len(a) - front_a - back_a, len(b) - front_b - back_b
            if len_a > len_b:
                front_a, back_a = (front_a + 1, back_a) if coin < 0.5 else (front_a, back_a + 1)
            else:
                front_b, back_b = (front_b + 1, back_b) if coin < 0.5 else (front_b, back_b + 1)
        return a[front_a : len(a) - back_a], b[front_b : len(b) - back_b]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"sample {idx} out of range for {len(self)} samples")
        idx = int(idx) % len(self)
        first, end, target = (int(v) for v in self.sample_index[idx])
        p, vocab = self.params, self.vocab
        rng = np.random.RandomState((p.seed + idx) % 2**32)
        a, b, is_random = self._segments(self.indexed_dataset[first:end], rng)
        trimmed_a, trimmed_b = self._trim(a, b, target, rng)
        truncated = len(trimmed_a) + len(trimmed_b) < len(a) + len(b)
        framed = [vocab.cls, *trimmed_a, vocab.sep] + ([*trimmed_b, vocab.sep] if trimmed_b else [])
        types = [0] * (len(trimmed_a) + 2) + [1] * (len(framed) - len(trimmed_a) - 2)
        masked, positions, labels = mask_tokens(framed, target, rng, self.mask_prob, vocab)
        return self._pack(masked, types, positions, labels, is_random, truncated, idx)

    def _pack(self, masked: list[int], types: list[int], positions: list[int], labels: list[int], is_random: bool,
              truncated: bool, idx: int) -> dict[str, Any]:
        """Pad to seq_length as megatron-core does (its quirk kept: types are padded with the pad id).

        ``padding_mask`` marks the real positions ``[0, len(masked))``. megatron-core derives it from
        ``tokens != pad`` instead, so a real position whose random replacement happens to be the [PAD] id is
        treated as padding (attention never looks at it); that is a bug, fixed here: it is the only field in which
        our items differ from megatron-core's.
        """
        s, pad = self.params.seq_length, self.pad_id
        assert len(masked) <= s, f"sample {idx} has {len(masked)} tokens > seq_length {s}"
        tokens = np.full(s, pad, dtype=np.int64)
        tokens[: len(masked)] = masked
        token_types = np.full(s, pad, dtype=np.int64)
        token_types[: len(types)] = types
        padding_mask = np.zeros(s, dtype=np.int64)
        padding_mask[: len(masked)] = 1
        label_ids = np.full(s, -1, dtype=np.int64)
        label_ids[positions] = labels
        loss_mask = np.zeros(s, dtype=np.int64)
        loss_mask[positions] = 1
        tokens[tokens == pad] = 0  # the embedding must be able to look padding up
        label_ids[label_ids == pad] = 0
        return {
            "tokens": tokens, "types": token_types, "labels": label_ids, "is_random": int(is_random),
            "padding_mask": padding_mask, "loss_mask": loss_mask, "truncated": int(truncated),
            "dataset_id": 0, "dataset_sample_index": idx,
        }


class _BertFactory:
    """BERT datasets for the shared builder: ``split`` divides documents (groups of sentences)."""

    def __init__(self, data_cfg: DataConfig, bert_cfg: BertDataConfig, tokenizer: Any, seed: int) -> None:
        self.data_cfg, self.bert_cfg, self.tokenizer, self.seed = data_cfg, bert_cfg, tokenizer, seed

    def num_elements(self, data: Any) -> int:
        return len(data.document_indices) - 1

    def build(self, data: Any, split: Split, element_range: tuple[int, int], num_samples: int,
              exact_num_epochs: Optional[int], cache_dir: Optional[str]) -> BertDataset:
        b = self.bert_cfg
        params = BertIndexParams(data.path_prefix, split, element_range, num_samples, self.data_cfg.seq_length,
                                 self.seed, exact_num_epochs, short_seq_prob=b.short_seq_prob,
                                 binary_head=b.bert_binary_head)
        forced = None
        if split is Split.train and self.data_cfg.train_idx_path is not None:
            forced = load_forced_bert_index(self.data_cfg, data.document_indices, element_range,
                                            self.data_cfg.seq_length)
        return BertDataset(data, params, mask_prob=b.mask_prob, tokenizer=self.tokenizer, cache_dir=cache_dir,
                           sample_index=forced)

    def open_mock(self) -> Any:
        raise NotImplementedError("mock_data is not supported for BERT datasets (they need sentence-level "
                                  "documents); preprocess a corpus with --split-sentences and set data_path")


AnyBertDataset = Union[BertDataset, BlendedDataset]


def build_bert_datasets(
    data_cfg: DataConfig, bert_cfg: BertDataConfig, tokenizer: Any, train_valid_test_num_samples: tuple[int, int, int],
    seed: int,
) -> tuple[Optional[AnyBertDataset], Optional[AnyBertDataset], Optional[AnyBertDataset]]:
    """Build the train, valid and test BERT datasets described by ``data_cfg`` and ``bert_cfg``.

    Args:
        data_cfg: files, ``split``, per-split paths, ``seq_length`` (tokens per sample, no +1), cache directory,
            ``train_data_exact_num_epochs``.
        bert_cfg: masking and sample construction.
        tokenizer: WordPiece tokenizer (``cls``, ``sep``, ``pad``, ``mask``, ``inv_vocab``, ``unique_identifiers``).
        train_valid_test_num_samples: requested samples per split; a split with 0 (and no exact epochs) is None
            (it is not used), a used split must get documents from ``split``. Datasets hold at least the requested
            number of samples.
        seed: ``--seed``.

    Returns:
        ``BertDataset`` for a single prefix, ``BlendedDataset`` for a weighted blend.
    """
    if data_cfg.seq_length < MIN_BERT_SEQ_LENGTH:
        raise ValueError(f"seq_length ({data_cfg.seq_length}) must be >= {MIN_BERT_SEQ_LENGTH} for BERT: [CLS], "
                         f"two [SEP] and a target of at least 2 tokens")
    factory = _BertFactory(data_cfg, bert_cfg, tokenizer, seed)
    return build_datasets(data_cfg, factory, train_valid_test_num_samples,
                          vocab_size=getattr(tokenizer, "vocab_size", None))
