"""The tokenizer interface every Megatron-DE tokenizer implements, plus small shared helpers.

``MegatronTokenizer`` fixes the Megatron semantics the data pipeline relies on (``tokenize``/``detokenize``, the
special ids ``eod``/``pad``/``cls``/``sep``/``mask``/``bos``/``eos``, ``unique_identifiers`` for dataset cache
hashes). Concrete tokenizers live in ``bpe``, ``wordpiece``, ``sentencepiece`` and ``hf``, each built from a
``TokenizerConfig`` by its ``from_config``; ``build.build_tokenizer`` picks the family.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
from typing import Any, Iterable, Sequence

from megatron.data.tokenizers.config import TokenizerConfig

__all__ = ["MegatronTokenizer", "file_identity", "read_text_file", "require_file"]


def file_identity(path: str) -> dict[str, str]:
    """``{"name": basename, "sha256": hex digest}`` of a file: identifies its content without the machine's path."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": os.path.basename(path), "sha256": digest.hexdigest()}


def read_text_file(path: str, field: str) -> str:
    """Read a UTF-8 text file named by config field ``field``; a missing or undecodable file is a ValueError."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"{field}: file {path!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{field}: file {path!r} is not valid UTF-8 ({e})") from None


def require_file(cfg: TokenizerConfig, field: str) -> str:
    """The path in config field ``field``; unset or missing is a ValueError naming the flag (``--vocab-file``)."""
    path = getattr(cfg, field)
    flag = "--" + field.replace("_", "-")
    if path is None:
        raise ValueError(f"{cfg.tokenizer_type} needs {field} ({flag}); it is not set")
    if not os.path.exists(path):
        hint = ""
        if cfg.tokenizer_type == "HuggingFaceTokenizer":
            hint = "; pass a local tokenizer.json or a folder holding one (hub names are not downloaded)"
        raise ValueError(f"{cfg.tokenizer_type}: {field} ({flag}) {path!r} does not exist{hint}")
    if field != "tokenizer_model" and not os.path.isfile(path):
        raise ValueError(f"{cfg.tokenizer_type}: {field} ({flag}) {path!r} is not a file")
    return path


class MegatronTokenizer(abc.ABC):
    """A text <-> token id mapping with Megatron's special-token semantics.

    Ids are plain Python ints in ``[0, vocab_size)``. ``vocab_size`` is the *unpadded* size (see
    ``megatron.data.tokenizers.config.padded_vocab_size`` for the embedding size). A special token the tokenizer
    does not define raises ``NotImplementedError`` naming the tokenizer, exactly where Megatron's base class raises.

    Instances pickle as their config and are rebuilt on load by their class's ``from_config`` (``preprocess_data``
    ships one per worker process).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        self._cfg = dataclasses.replace(cfg)

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: TokenizerConfig) -> "MegatronTokenizer":
        """Check the files ``cfg`` names for this family (errors name the flag) and build the tokenizer."""

    # ------------------------------------------------------------------ pickling
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self).from_config, (self._cfg,))

    @property
    def config(self) -> TokenizerConfig:
        """The config this tokenizer was built from (a copy)."""
        return dataclasses.replace(self._cfg)

    # ------------------------------------------------------------------ core API
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, including tokens Megatron adds to the file's vocabulary; not padded."""

    @property
    @abc.abstractmethod
    def vocab(self) -> dict[str, int]:
        """Token string -> id, including added special tokens."""

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Id -> token string (inverse of ``vocab``)."""
        return {i: t for t, i in self.vocab.items()}

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Encode one document. Special-token text is handled as in Megatron (see each tokenizer)."""

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many documents; equal to ``[self.tokenize(t) for t in texts]``, possibly multi-threaded."""
        return [self.tokenize(t) for t in texts]

    @abc.abstractmethod
    def detokenize(self, ids: Iterable[int]) -> str:
        """Decode ids back to text."""

    @property
    @abc.abstractmethod
    def unique_identifiers(self) -> dict[str, Any]:
        """JSON-able description (type, file names and SHA-256 digests, options) used in dataset cache hashes."""

    # ------------------------------------------------------------------ special tokens
    def _missing(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{self._cfg.tokenizer_type} has no {what} token")

    @property
    def eod(self) -> int:
        """End-of-document id appended after each document by preprocessing."""
        raise self._missing("eod")

    @property
    def pad(self) -> int:
        """Padding id."""
        raise self._missing("pad")

    @property
    def cls(self) -> int:
        """BERT's [CLS] id."""
        raise self._missing("cls")

    @property
    def sep(self) -> int:
        """BERT's [SEP] id."""
        raise self._missing("sep")

    @property
    def mask(self) -> int:
        """Masked-LM [MASK] id."""
        raise self._missing("mask")

    @property
    def bos(self) -> int:
        """Beginning-of-sequence id."""
        raise self._missing("bos")

    @property
    def eos(self) -> int:
        """End-of-sequence id."""
        raise self._missing("eos")

    @property
    def additional_special_tokens_ids(self) -> list[int] | None:
        """Ids of the ``<extra_id_i>`` sentinel tokens (T5-style), or None where Megatron has none."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self._cfg.tokenizer_type!r}, vocab_size={self.vocab_size})"
