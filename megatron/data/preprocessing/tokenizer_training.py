"""Train tokenizer files from JSONL text: GPT-2-format byte-level BPE, BERT WordPiece, or SentencePiece.

Each trainer writes the files ``build_tokenizer`` reads (``vocab.json`` + ``merges.txt``, ``vocab.txt``, or
``<prefix>.model``), plus an HF ``tokenizer.json`` for GPT-2 BPE and WordPiece, and returns the
``TokenizerConfig`` that loads them. Files are staged in a temporary folder and moved into place one by one with
``os.replace``, so an interrupted run never leaves a complete-looking but truncated file.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Literal

from megatron.data.preprocessing.corpora import read_jsonl_texts
from megatron.data.tokenizers.bpe import EOD_TOKEN
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data.tokenizers.wordpiece import REQUIRED_BERT_TOKENS
from megatron.logging import get_logger

__all__ = ["TrainableType", "TokenizerTrainingConfig", "TrainedTokenizer", "train_tokenizer"]

logger = get_logger(__name__)

TrainableType = Literal["gpt2bpe", "wordpiece", "sentencepiece"]
SentencePieceModelType = Literal["bpe", "unigram"]

# SentencePiece trains on "sentences" and silently drops any longer than max_sentence_length bytes (default 4192);
# whole documents (a KJV chapter, a play) are far longer, so lines are cut at whitespace below this many bytes.
_SP_CHUNK_BYTES = 8192


@dataclass(kw_only=True)
class TokenizerTrainingConfig:
    """What to train, on which JSONL files, and where to write it."""

    input: list[str] = field(default_factory=list)
    """JSONL files with one document per line."""
    json_keys: list[str] = field(default_factory=lambda: ["text"])
    """Keys of each JSON line whose strings are training text."""
    type: TrainableType = "gpt2bpe"
    """gpt2bpe: vocab.json + merges.txt (+ tokenizer.json) with <|endoftext|>; wordpiece: vocab.txt (+ tokenizer.json); sentencepiece: tokenizer.model."""
    vocab_size: int = 8000
    """Target vocabulary size, special tokens included."""
    output_dir: str = ""
    """Folder that receives the tokenizer files (created if missing)."""
    min_frequency: int = 2
    """gpt2bpe: a merge must occur at least this often."""
    lowercase: bool = True
    """wordpiece: lower-case and strip accents (load as BertWordPieceLowerCase; --no-lowercase: BertWordPieceCase)."""
    sentencepiece_model_type: SentencePieceModelType = "bpe"
    """sentencepiece: the model algorithm."""
    character_coverage: float = 1.0
    """sentencepiece: fraction of characters covered by single-character pieces; rarer ones fall back to <unk>."""
    num_threads: int = 2
    """sentencepiece: trainer threads."""

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.type == "gpt2bpe" and self.vocab_size < 257:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) must be >= 257 for gpt2bpe: 256 byte tokens plus {EOD_TOKEN}"
            )
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
        if not self.json_keys:
            raise ValueError("json_keys must name at least one key")


@dataclass(frozen=True)
class TrainedTokenizer:
    """Result of ``train_tokenizer``: the files written and the config that loads them."""

    files: tuple[str, ...]
    """Paths written, inside output_dir."""
    tokenizer_config: TokenizerConfig
    """Pass to ``build_tokenizer`` to load the trained tokenizer."""


def _texts(cfg: TokenizerTrainingConfig) -> Iterator[str]:
    for path in cfg.input:
        if not os.path.isfile(path):
            raise ValueError(f"input file {path!r} does not exist")
    return read_jsonl_texts(cfg.input, cfg.json_keys)


def _train_gpt2bpe(cfg: TokenizerTrainingConfig, stage: str) -> list[str]:
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(
        _texts(cfg), vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
        special_tokens=[EOD_TOKEN], show_progress=False,
    )
    tok.save_model(stage)
    tok.save(os.path.join(stage, "tokenizer.json"))
    return ["vocab.json", "merges.txt", "tokenizer.json"]


def _bert_words(cfg: TokenizerTrainingConfig) -> tuple[list[str], set[str]]:
    """The corpus as BERT's normalizer and pre-tokenizer see it: one line of space-separated words per input line
    (punctuation split off, lower-cased and accent-stripped with ``lowercase``), and its characters."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=cfg.lowercase,
                                      lowercase=cfg.lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    lines, chars = [], set()
    for line in _chunk_lines(_texts(cfg)):
        words = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(line))]
        if words:
            chars.update(*words)
            lines.append(" ".join(words))
    return lines, chars


def _train_wordpiece(cfg: TokenizerTrainingConfig, stage: str) -> list[str]:
    """WordPiece vocabulary = BPE over BERT-pre-tokenized words, with ``##`` marking word-internal pieces.

    HF's WordPiece trainer does exactly that but breaks ties between equally frequent pairs by ids it assigns in
    hash-map order, so the learned token *set* changes from run to run. SentencePiece's BPE trainer is
    deterministic: it learns the merges over the same words (spaces mark word starts, ``▁``), and each piece maps
    back to WordPiece (``▁ab`` -> ``ab``, ``ab`` -> ``##ab``). Every character is kept in both forms so no word
    becomes [UNK]; the file lists special tokens, then pieces by length, then alphabetically.
    """
    import sentencepiece as spm
    from tokenizers import BertWordPieceTokenizer

    lines, chars = _bert_words(cfg)
    alphabet = sorted(chars) + sorted("##" + c for c in chars)
    budget = cfg.vocab_size - len(REQUIRED_BERT_TOKENS) - len(alphabet)
    if budget < 0:
        raise ValueError(f"vocab_size ({cfg.vocab_size}) cannot hold the {len(REQUIRED_BERT_TOKENS)} special tokens "
                         f"and the corpus' {len(chars)} characters in both forms ({len(alphabet)}); raise --vocab-size")
    learned: list[str] = []
    if budget and lines:
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
            vocab_size=min(cfg.vocab_size, 1_000_000), hard_vocab_limit=False, character_coverage=1.0,
            normalization_rule_name="identity", split_digits=False, num_threads=cfg.num_threads,
            max_sentence_length=4 * _SP_CHUNK_BYTES, minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
        seen = set(alphabet)
        for i in range(sp.get_piece_size()):  # merge order: the most useful pieces first
            if sp.is_control(i) or sp.is_unknown(i):
                continue
            piece = sp.id_to_piece(i)
            token = piece[1:] if piece.startswith("\u2581") else "##" + piece
            if token in ("", "##") or token in seen:
                continue
            seen.add(token)
            learned.append(token)
            if len(learned) == budget:
                break
    ordered = [*REQUIRED_BERT_TOKENS, *sorted(alphabet + learned,
                                              key=lambda t: (len(t.removeprefix("##")), t.startswith("##"), t))]
    with open(os.path.join(stage, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(t + "\n" for t in ordered))
    final = BertWordPieceTokenizer(vocab={t: i for i, t in enumerate(ordered)}, clean_text=True,
                                   handle_chinese_chars=True, lowercase=cfg.lowercase)
    final.save(os.path.join(stage, "tokenizer.json"))
    return ["vocab.txt", "tokenizer.json"]


def _chunk_lines(texts: Iterable[str], limit: int = _SP_CHUNK_BYTES) -> Iterator[str]:
    """Split documents into non-empty lines of at most ~``limit`` UTF-8 bytes, cutting at spaces."""
    for text in texts:
        for line in text.split("\n"):
            while len(line.encode("utf-8")) > limit:
                cut = line.rfind(" ", 0, limit // 4)  # limit//4 characters are at most limit bytes
                cut = cut if cut > 0 else limit // 4
                if line[:cut].strip():
                    yield line[:cut]
                line = line[cut:].lstrip(" ")
            if line.strip():
                yield line


def _train_sentencepiece(cfg: TokenizerTrainingConfig, stage: str) -> list[str]:
    import sentencepiece as spm

    model = io.BytesIO()  # in memory: a model_prefix path would be recorded in the model and break reproducibility
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chunk_lines(_texts(cfg)), model_writer=model,
            vocab_size=cfg.vocab_size, model_type=cfg.sentencepiece_model_type,
            character_coverage=cfg.character_coverage, num_threads=cfg.num_threads,
            max_sentence_length=2 * _SP_CHUNK_BYTES, minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(
            f"SentencePiece training failed for vocab_size={cfg.vocab_size} on {cfg.input}: {e}. "
            "A vocab_size larger than the corpus supports is the usual cause; lower --vocab-size"
        ) from None
    with open(os.path.join(stage, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    with open(os.path.join(stage, "tokenizer.vocab"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())))
    return ["tokenizer.model", "tokenizer.vocab"]


def _loader_config(cfg: TokenizerTrainingConfig) -> TokenizerConfig:
    out = cfg.output_dir
    if cfg.type == "gpt2bpe":
        return TokenizerConfig(
            tokenizer_type="GPT2BPETokenizer",
            vocab_file=os.path.join(out, "vocab.json"), merge_file=os.path.join(out, "merges.txt"),
        )
    if cfg.type == "wordpiece":
        kind = "BertWordPieceLowerCase" if cfg.lowercase else "BertWordPieceCase"
        return TokenizerConfig(tokenizer_type=kind, vocab_file=os.path.join(out, "vocab.txt"))
    return TokenizerConfig(tokenizer_type="SentencePieceTokenizer", tokenizer_model=os.path.join(out, "tokenizer.model"))


_TRAINERS = {"gpt2bpe": _train_gpt2bpe, "wordpiece": _train_wordpiece, "sentencepiece": _train_sentencepiece}


def train_tokenizer(cfg: TokenizerTrainingConfig) -> TrainedTokenizer:
    """Train the tokenizer ``cfg`` describes and write its files into ``cfg.output_dir``.

    Raises:
        ValueError: no input, a missing input file, a malformed JSONL line (file and line named), or a vocab size
            the corpus cannot fill (SentencePiece).
    """
    if not cfg.input:
        raise ValueError("input: at least one JSONL file is required (--input)")
    if not cfg.output_dir:
        raise ValueError("output_dir: required (--output-dir)")
    os.makedirs(cfg.output_dir, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".train_tokenizer.", dir=cfg.output_dir)
    try:
        names = _TRAINERS[cfg.type](cfg, stage)
        written = []
        for name in names:
            final = os.path.join(cfg.output_dir, name)
            os.replace(os.path.join(stage, name), final)
            written.append(final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("trained %s tokenizer: %s", cfg.type, ", ".join(written))
    return TrainedTokenizer(files=tuple(written), tokenizer_config=_loader_config(cfg))
