"""``HuggingFaceTokenizer`` (a local ``tokenizer.json`` run by HF ``tokenizers``) and ``NullTokenizer``.

The HF tokenizer never touches the network: ``tokenizer_model`` must be a ``tokenizer.json`` file or a directory
holding one. Special ids come from a ``tokenizer_config.json`` next to it when present (``eos_token`` etc.), else
from well-known token spellings. ``NullTokenizer`` reads pre-tokenised text (space-separated integers).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

from megatron.data.tokenizers.base import MegatronTokenizer, file_identity, read_text_file, require_file
from megatron.data.tokenizers.config import TokenizerConfig

__all__ = ["HuggingFaceTokenizer", "NullTokenizer", "resolve_hf_tokenizer_file"]

# Fallback spellings per role, tried in order when tokenizer_config.json does not name the token.
_KNOWN_SPELLINGS: dict[str, tuple[str, ...]] = {
    "eos": ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[EOS]"),
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "[BOS]"),
    "pad": ("<pad>", "[PAD]", "<|padding|>"),
    "cls": ("[CLS]", "<cls>"),
    "sep": ("[SEP]", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
}


def resolve_hf_tokenizer_file(path: str) -> str:
    """``path`` itself if it is a file, else ``path/tokenizer.json``; ValueError naming the flag otherwise."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        candidate = os.path.join(path, "tokenizer.json")
        if os.path.isfile(candidate):
            return candidate
        raise ValueError(
            f"tokenizer_model (--tokenizer-model) directory {path!r} has no tokenizer.json; only fast "
            "(tokenizer.json) HuggingFace tokenizers are supported"
        )
    raise ValueError(
        f"tokenizer_model (--tokenizer-model) {path!r} does not exist; HuggingFaceTokenizer needs a local "
        "tokenizer.json file or a directory containing one (hub names are not downloaded)"
    )


def _config_tokens(tokenizer_file: str) -> dict[str, str]:
    """Role -> token text from a ``tokenizer_config.json`` beside the tokenizer file (empty if none)."""
    path = os.path.join(os.path.dirname(tokenizer_file), "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        cfg = json.loads(read_text_file(path, "tokenizer_model (--tokenizer-model)"))
    except json.JSONDecodeError as e:
        raise ValueError(f"tokenizer_model (--tokenizer-model): {path!r} is not valid JSON: {e}") from None
    roles: dict[str, str] = {}
    for role in _KNOWN_SPELLINGS:
        value = cfg.get(f"{role}_token") if isinstance(cfg, dict) else None
        if isinstance(value, dict):  # serialized AddedToken
            value = value.get("content")
        if isinstance(value, str):
            roles[role] = value
    return roles


class HuggingFaceTokenizer(MegatronTokenizer):
    """Megatron's ``HuggingFaceTokenizer`` on a local ``tokenizer.json``.

    As in Megatron (``tokenizer(text).input_ids``), ``tokenize`` applies the file's post-processor, so a
    tokenizer that frames sequences (e.g. adds a BOS) does so per document. ``vocab_size`` counts added tokens
    (``len(tokenizer)``); ``eod`` is the eos token.
    """

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "HuggingFaceTokenizer":
        """From ``tokenizer_model``: a local ``tokenizer.json`` or a folder holding one."""
        return cls(cfg, require_file(cfg, "tokenizer_model"))

    def __init__(self, cfg: TokenizerConfig, tokenizer_model: str) -> None:
        from tokenizers import Tokenizer

        super().__init__(cfg)
        path = resolve_hf_tokenizer_file(tokenizer_model)
        try:
            self._tok = Tokenizer.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"tokenizer_model (--tokenizer-model) {path!r} is not a tokenizer.json: {e}") from None
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        self._size = max(self._tok.get_vocab_size(with_added_tokens=True), max(self._vocab.values(), default=-1) + 1)
        named = _config_tokens(path)
        self._roles: dict[str, int] = {}
        for role, spellings in _KNOWN_SPELLINGS.items():
            for token in ([named[role]] if role in named else []) + list(spellings):
                if token in self._vocab:
                    self._roles[role] = self._vocab[token]
                    break
        config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        self._files = {"tokenizer_model": file_identity(path)}
        if os.path.isfile(config_path):
            self._files["tokenizer_config"] = file_identity(config_path)

    def _role(self, role: str) -> int:
        if role not in self._roles:
            raise NotImplementedError(
                f"HuggingFaceTokenizer ({self._files['tokenizer_model']['name']}) has no {role} token; tried "
                f"tokenizer_config.json and {list(_KNOWN_SPELLINGS[role])}"
            )
        return self._roles[role]

    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def tokenize(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    eod = property(lambda self: self._role("eos"), doc="End of document: the tokenizer's eos token.")
    eos = property(lambda self: self._role("eos"), doc="The tokenizer's eos token.")
    bos = property(lambda self: self._role("bos"), doc="The tokenizer's bos token.")
    pad = property(lambda self: self._role("pad"), doc="The tokenizer's pad token.")
    cls = property(lambda self: self._role("cls"), doc="The tokenizer's cls token.")
    sep = property(lambda self: self._role("sep"), doc="The tokenizer's sep token.")
    mask = property(lambda self: self._role("mask"), doc="The tokenizer's mask token.")

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "tokenizer_type": self._cfg.tokenizer_type, **self._files}


class NullTokenizer(MegatronTokenizer):
    """Megatron's ``NullTokenizer``: text is space-separated ids below ``vocab_size``; eod = V, size V + 1.

    cls/sep/mask are -1 as in Megatron; pad/bos/eos are undefined.
    """

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "NullTokenizer":
        """From ``vocab_size`` (no files)."""
        if cfg.vocab_size is None:
            raise ValueError("NullTokenizer needs vocab_size (--vocab-size); it is not set")
        return cls(cfg, cfg.vocab_size)

    def __init__(self, cfg: TokenizerConfig, vocab_size: int) -> None:
        super().__init__(cfg)
        self._v = int(vocab_size)

    @property
    def vocab_size(self) -> int:
        return self._v + 1

    @property
    def vocab(self) -> dict[str, int]:
        return {str(i): i for i in range(self._v + 1)}

    def tokenize(self, text: str) -> list[int]:
        try:
            ids = [int(x) for x in text.split()]
        except ValueError as e:
            raise ValueError(f"NullTokenizer expects space-separated integers, got {text[:60]!r}: {e}") from None
        bad = [i for i in ids if not 0 <= i <= self._v]
        if bad:
            raise ValueError(f"NullTokenizer: ids {bad[:5]} are outside [0, {self._v}] (vocab_size={self._v})")
        return ids

    def detokenize(self, ids: Iterable[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    @property
    def eod(self) -> int:
        return self._v

    cls = property(lambda self: -1, doc="-1: NullTokenizer has no [CLS].")
    sep = property(lambda self: -1, doc="-1: NullTokenizer has no [SEP].")
    mask = property(lambda self: -1, doc="-1: NullTokenizer has no [MASK].")

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "tokenizer_type": self._cfg.tokenizer_type, "vocab_size": self._v}
