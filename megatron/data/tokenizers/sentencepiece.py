"""SentencePiece tokenizers: Megatron's ``SentencePieceTokenizer`` and ``GPTSentencePieceTokenizer``.

``SentencePieceTokenizer`` appends ``<CLS> <SEP> <EOD> <MASK>`` (and ``<PAD>``/``<BOS>``/``<EOS>`` when the model
defines none, then ``<extra_id_i>``) after the model's pieces, recognises every special token inside text, and
uses ``<EOD>`` as end of document. ``GPTSentencePieceTokenizer`` is the raw model: eod = the model's eos id, and
cls/sep/mask are -1, as in Megatron.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from megatron.data.tokenizers.base import MegatronTokenizer, file_identity, require_file
from megatron.data.tokenizers.config import TokenizerConfig

__all__ = ["SentencePieceTokenizer", "GPTSentencePieceTokenizer"]


def _load_processor(model_file: str) -> Any:
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_file=model_file)
    except (OSError, RuntimeError) as e:
        raise ValueError(
            f"tokenizer_model (--tokenizer-model) {model_file!r} is not a SentencePiece model: {e}"
        ) from None


class _SentencePieceBase(MegatronTokenizer):
    """Shared loading and vocabulary of both SentencePiece flavours."""

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "_SentencePieceBase":
        """From the SentencePiece ``tokenizer_model`` file."""
        return cls(cfg, require_file(cfg, "tokenizer_model"))

    def __init__(self, cfg: TokenizerConfig, model_file: str) -> None:
        super().__init__(cfg)
        self._sp = _load_processor(model_file)
        self._vocab = {self._sp.id_to_piece(i): i for i in range(self._sp.get_piece_size())}
        self._files = {"tokenizer_model": file_identity(model_file)}

    def _optional_id(self, sp_id: int) -> str | None:
        """The piece of a model-level special id, or None where the model disables it (id -1)."""
        return self._sp.id_to_piece(sp_id) if 0 <= sp_id < self._sp.get_piece_size() else None

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "tokenizer_type": self._cfg.tokenizer_type,
            "vocab_extra_ids": self._cfg.vocab_extra_ids,
            **self._files,
        }


class SentencePieceTokenizer(_SentencePieceBase):
    """Megatron's ``_SentencePieceTokenizer`` (special tokens appended, recognised in text, eod = ``<EOD>``).

    ``tokenize`` cuts the text at the earliest occurrence of any special token (ties go to the token added
    first), encodes the spans between with the model and emits the special ids. ``detokenize`` writes special
    tokens back surrounded by single spaces, like Megatron.
    """

    def __init__(self, cfg: TokenizerConfig, model_file: str) -> None:
        super().__init__(cfg, model_file)
        self._special: dict[str, int] = {}
        for token in ("<CLS>", "<SEP>", "<EOD>", "<MASK>"):
            self._add_special(token)
        # The model's own pad/bos/eos pieces are reused; a disabled one (id -1) gets Megatron's stand-in piece.
        stand_ins = ((self._sp.pad_id(), "<PAD>"), (self._sp.bos_id(), "<BOS>"), (self._sp.eos_id(), "<EOS>"))
        for sp_id, stand_in in stand_ins:
            self._add_special(self._optional_id(sp_id) or stand_in)
        self._pad_piece = self._optional_id(self._sp.pad_id()) or "<PAD>"
        self._bos_piece = self._optional_id(self._sp.bos_id()) or "<BOS>"
        self._eos_piece = self._optional_id(self._sp.eos_id()) or "<EOS>"
        self._extra_tokens = [f"<extra_id_{i}>" for i in range(cfg.vocab_extra_ids)]
        for token in self._extra_tokens:
            self._add_special(token)
        self._inv_special = {i: t for t, i in self._special.items()}

    def _add_special(self, token: str) -> None:
        if token not in self._vocab:
            self._vocab[token] = len(self._vocab)
        self._special[token] = self._vocab[token]

    def _next_special(self, text: str, start: int) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for token in self._special:  # insertion order breaks ties, as in Megatron
            pos = text.find(token, start)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, token)
        return best

    def tokenize(self, text: str) -> list[int]:
        ids: list[int] = []
        start = 0
        while (hit := self._next_special(text, start)) is not None:
            pos, token = hit
            ids.extend(self._sp.encode(text[start:pos]))
            ids.append(self._special[token])
            start = pos + len(token)
        ids.extend(self._sp.encode(text[start:]))
        return ids

    def detokenize(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        out: list[str] = []
        last = 0
        for i, token_id in enumerate(ids):
            if token_id in self._inv_special:
                out.append(self._sp.decode(ids[last:i]) + " " + self._inv_special[token_id] + " ")
                last = i + 1
        out.append(self._sp.decode(ids[last:]))
        return "".join(out)

    @property
    def cls(self) -> int:
        return self._special["<CLS>"]

    @property
    def sep(self) -> int:
        return self._special["<SEP>"]

    @property
    def eod(self) -> int:
        return self._special["<EOD>"]

    @property
    def mask(self) -> int:
        return self._special["<MASK>"]

    @property
    def pad(self) -> int:
        return self._special[self._pad_piece]

    @property
    def bos(self) -> int:
        return self._special[self._bos_piece]

    @property
    def eos(self) -> int:
        return self._special[self._eos_piece]

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self._vocab[t] for t in self._extra_tokens]


class GPTSentencePieceTokenizer(_SentencePieceBase):
    """Megatron's ``_GPTSentencePieceTokenizer``: the model's pieces only, eod = eos id, cls/sep/mask = -1.

    ``pad``/``bos`` are the model's ids and may be -1 where the model disables them (Megatron passes them
    through). A model without an eos piece cannot end documents and is rejected at build time.
    """

    def __init__(self, cfg: TokenizerConfig, model_file: str) -> None:
        super().__init__(cfg, model_file)
        if self._optional_id(self._sp.eos_id()) is None:
            raise ValueError(
                f"tokenizer_model (--tokenizer-model) {model_file!r} has no eos piece (eos_id={self._sp.eos_id()}); "
                "GPTSentencePieceTokenizer uses it as end of document. Retrain with eos_id >= 0 or use "
                "SentencePieceTokenizer, which adds <EOD>"
            )

    def tokenize(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=min(8, os.cpu_count() or 1))

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    @property
    def eod(self) -> int:
        return self._sp.eos_id()

    @property
    def eos(self) -> int:
        return self._sp.eos_id()

    @property
    def bos(self) -> int:
        return self._sp.bos_id()

    @property
    def pad(self) -> int:
        return self._sp.pad_id()

    @property
    def cls(self) -> int:
        return -1

    @property
    def sep(self) -> int:
        return -1

    @property
    def mask(self) -> int:
        return -1
