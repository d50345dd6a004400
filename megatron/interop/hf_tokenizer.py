"""Tokenizer files between a training run and a Hugging Face directory.

Export writes what ``AutoTokenizer.from_pretrained(dir)`` needs: GPT-2 BPE as ``vocab.json`` + ``merges.txt``,
WordPiece as ``vocab.txt`` (with the ``[BOS]``/``[EOS]``/``<extra_id_i>`` lines our tokenizer appends, so ids and
sizes agree), a HF ``tokenizer.json`` as is; each with a ``tokenizer_config.json`` and a ``tokenizer.json``. The
written tokenizer is then checked to give our ids on a probe text. WordPiece loads as a generic fast tokenizer over
its ``tokenizer.json`` (see :func:`_match_google_wordpiece`), not as ``BertTokenizer``. Import copies the HF
directory's files under ``<save>/tokenizer/`` and returns the ``TokenizerConfig`` that names them, so
``pretrain_*.py`` rebuilds the same vocabulary.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from megatron.data.tokenizers.base import MegatronTokenizer
from megatron.data.tokenizers.bpe import default_gpt2_vocab_files
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data.tokenizers.hf import resolve_hf_tokenizer_file
from megatron.logging import get_logger

__all__ = ["export_tokenizer", "import_tokenizer", "TOKENIZER_SUBDIR"]

logger = get_logger(__name__)

TOKENIZER_SUBDIR = "tokenizer"
"""Where an imported checkpoint keeps its tokenizer files: ``<save>/tokenizer/``."""
_PROBE = "Hello world! The quick brown fox, 1234 times: naïve café.\nNew line\tand tab."
# Google's WordPiece (our tokenizer) turns only words over 200 characters into [UNK]; HF's default is 100.
_WORDPIECE_MAX_CHARS = 200


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _wordpiece_vocab_text(vocab_file: str, tokenizer: MegatronTokenizer) -> str:
    """``vocab.txt`` content holding exactly our ids: the file plus the tokens our tokenizer appended."""
    text = Path(vocab_file).read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text += "\n"
    n_lines = text.count("\n")
    inv = tokenizer.inv_vocab
    return text + "".join(inv[i] + "\n" for i in range(n_lines, tokenizer.vocab_size))


def _check_probe(out_dir: Path, tokenizer: MegatronTokenizer, kind: str) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out_dir))
    # Our HuggingFaceTokenizer applies the file's post-processor (e.g. a BOS) in tokenize(), as Megatron's does.
    framed = kind == "HuggingFaceTokenizer"
    ours, theirs = tokenizer.tokenize(_PROBE), hf(_PROBE, add_special_tokens=framed, verbose=False)["input_ids"]
    if ours != theirs:
        raise ValueError(f"the exported {kind} tokenizer in {out_dir} encodes a probe text as {theirs[:12]}... but "
                         f"ours gives {ours[:12]}...; the tokenizer files cannot be exported faithfully")


def export_tokenizer(cfg: TokenizerConfig, out_dir: Path, model_max_length: int) -> MegatronTokenizer | None:
    """Write ``cfg``'s tokenizer into the HF directory ``out_dir``; returns our tokenizer (None if not exportable).

    SentencePiece and Null tokenizers are not exported (a warning says so): the weights still convert, and the
    HF directory then needs its tokenizer from elsewhere.
    """
    from transformers import AutoTokenizer

    kind = cfg.tokenizer_type
    if kind in ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "NullTokenizer"):
        logger.warning("tokenizer_type %s is not exported: the HF directory gets no tokenizer files", kind)
        return None
    tokenizer = build_tokenizer(cfg)
    base = {"model_max_length": model_max_length}
    if kind == "GPT2BPETokenizer":
        vocab, merges = (cfg.vocab_file, cfg.merge_file) if cfg.vocab_file else default_gpt2_vocab_files()
        shutil.copyfile(vocab, out_dir / "vocab.json")
        shutil.copyfile(merges, out_dir / "merges.txt")
        eod = "<|endoftext|>"
        _write_json(out_dir / "tokenizer_config.json", {**base, "tokenizer_class": "GPT2Tokenizer", "bos_token": eod,
                                                        "eos_token": eod, "unk_token": eod, "add_prefix_space": False})
    elif kind in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        (out_dir / "vocab.txt").write_text(_wordpiece_vocab_text(cfg.vocab_file, tokenizer), encoding="utf-8")
        lower = kind == "BertWordPieceLowerCase"
        _write_json(out_dir / "tokenizer_config.json", {**base, "tokenizer_class": "BertTokenizer",
                                                        "do_lower_case": lower, "strip_accents": lower})
    else:  # HuggingFaceTokenizer
        source = Path(resolve_hf_tokenizer_file(cfg.tokenizer_model))
        shutil.copyfile(source, out_dir / "tokenizer.json")
        config_file = source.parent / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        _write_json(out_dir / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", **config, **base})
    # A tokenizer.json as well, so fast-tokenizer-only tools read the directory too.
    AutoTokenizer.from_pretrained(str(out_dir)).save_pretrained(str(out_dir))
    if kind.startswith("BertWordPiece"):
        _match_google_wordpiece(out_dir)
    _check_probe(out_dir, tokenizer, kind)
    return tokenizer


def _match_google_wordpiece(out_dir: Path) -> None:
    """Raise the WordPiece word-length limit to Google's 200 characters in ``tokenizer.json`` and have
    ``AutoTokenizer`` load that file as is: ``BertTokenizer`` rebuilds its model from ``vocab.txt`` with the
    100-character default, which would turn 101..200-character words into ``[UNK]`` where ours splits them."""
    path = out_dir / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["model"]["max_input_chars_per_word"] = _WORDPIECE_MAX_CHARS
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    _write_json(config_path, {**config, "tokenizer_class": "PreTrainedTokenizerFast"})


def _read_tokenizer_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or delete it") from None


def import_tokenizer(
    hf_dir: Path, staging: Path, final: Path, overrides: dict[str, str], tokenizer_type: str | None,
    vocab_extra_ids: int = 0,
) -> tuple[TokenizerConfig, TokenizerConfig]:
    """Copy the tokenizer of ``hf_dir`` (or the ``overrides`` files) to ``<staging>/tokenizer/``.

    Args:
        final: the directory ``staging`` will be renamed to; the returned run config names files there.
        overrides: ``vocab_file``/``merge_file``/``tokenizer_model`` given on the command line (win over hf_dir).
        tokenizer_type: the type recorded at export, if any (picks cased vs lower-case WordPiece).
    Returns:
        ``(config for building it now, from staging; config to record, naming the final paths)``.
    """
    files = {k: Path(v) for k, v in overrides.items() if v}
    hf_config = _read_tokenizer_config(hf_dir)
    if not files:
        if (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
            files = {"vocab_file": hf_dir / "vocab.json", "merge_file": hf_dir / "merges.txt"}
        elif (hf_dir / "vocab.txt").is_file():
            files = {"vocab_file": hf_dir / "vocab.txt"}
        elif (hf_dir / "tokenizer.json").is_file():
            files = {"tokenizer_model": hf_dir / "tokenizer.json"}
        else:
            raise ValueError(f"--load-dir {hf_dir} has no tokenizer files (vocab.json + merges.txt, vocab.txt or "
                             "tokenizer.json); pass --vocab-file (and --merge-file) of the model's tokenizer")
    if "tokenizer_model" in files:
        kind = "HuggingFaceTokenizer"
    elif "merge_file" in files:
        kind = "GPT2BPETokenizer"
    elif tokenizer_type in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        kind = tokenizer_type
    else:
        kind = "BertWordPieceLowerCase" if hf_config.get("do_lower_case", True) else "BertWordPieceCase"
    sub = staging / TOKENIZER_SUBDIR
    sub.mkdir(parents=True, exist_ok=True)
    now: dict[str, str] = {}
    recorded: dict[str, str] = {}
    for key, path in files.items():
        if not path.is_file():
            raise ValueError(f"--{key.replace('_', '-')} {path} does not exist; pass an existing file")
        shutil.copyfile(path, sub / path.name)
        if key == "tokenizer_model":
            # Special tokens of a HF tokenizer are named in the tokenizer_config.json beside it.
            if (path.parent / "tokenizer_config.json").is_file():
                shutil.copyfile(path.parent / "tokenizer_config.json", sub / "tokenizer_config.json")
            now[key], recorded[key] = str(sub), str(final / TOKENIZER_SUBDIR)
        else:
            now[key], recorded[key] = str(sub / path.name), str(final / TOKENIZER_SUBDIR / path.name)
    cfg = TokenizerConfig(tokenizer_type=kind, vocab_extra_ids=vocab_extra_ids, **now)
    return cfg, replace(cfg, **recorded)

