"""Which training split a curriculum analysis describes: the identity the analyzer records and training checks.

The analyzer's index files address samples by their position in the one-epoch training split, so they are only
valid for the split built from the same data file, split, sequence length, shuffle seed, tokenizer, number of
epochs and (BERT) sample settings. :func:`analysis_identities` lists exactly those settings, one record per blend
component - not the ones that only change batches or loading (``num_workers``, loss/attention masks, the index
cache directory, forced index files, which are checked against the data themselves). The epoch count
(``train_data_exact_num_epochs``, Megatron-DeepSpeed's BERT recipes analyze 5) is recorded only when it is not 1,
so analyses made before it was recorded stay valid. ``tools/analyze_data.py`` stores the record in each
metric's reduce marker; training rebuilds it from its own config and :func:`check_analysis_identity` refuses an
analysis whose record differs, naming every differing setting with both values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from megatron.data.bert_dataset import BertDataConfig
from megatron.data.config import DataConfig
from megatron.data.indexed_dataset import get_bin_path, get_idx_path
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data_efficiency.curriculum.index_files import reduce_marker_path
from megatron.logging import get_logger

__all__ = ["analysis_identities", "check_analysis_identity", "file_digest", "IDENTITY_FLAGS"]

logger = get_logger(__name__)

IDENTITY_FLAGS: dict[str, str] = {
    "data": "--data-path / --train-data-path",
    "split": "--split",
    "seq_length": "--seq-length",
    "seed": "--seed",
    "tokenizer": "--tokenizer-type / --vocab-file / --merge-file / --tokenizer-model / --vocab-size",
    "bert": "--short-seq-prob / --bert-no-binary-head",
    "exact_num_epochs": "--train-data-exact-num-epochs",
}
"""The command-line flags behind each top-level identity key (for error messages)."""

_DIGEST_BYTES = 8


def file_digest(path: str | None) -> str | None:
    """Short sha256 of a tokenizer file (a directory: of its ``tokenizer.json``); None for None.

    Contents rather than paths, so a vocabulary that moved to another directory still matches."""
    if path is None:
        return None
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        return f"missing:{os.path.basename(path)}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[: 2 * _DIGEST_BYTES]


def _data_file(prefix: str) -> dict[str, Any]:
    """A dataset file by name and sizes (cheap for any corpus size, unchanged by moving the directory)."""
    sizes = {}
    for key, path in (("bin_bytes", get_bin_path(prefix)), ("idx_bytes", get_idx_path(prefix))):
        sizes[key] = os.path.getsize(path) if os.path.isfile(path) else None
    return {"name": os.path.basename(prefix), **sizes}


def analysis_identities(data: DataConfig, tokenizer: TokenizerConfig, seed: int,
                        bert: BertDataConfig | None = None) -> list[dict[str, Any]]:
    """One identity record per component of the training blend (one for a single prefix or mock data).

    Args:
        data: the data section (its training blend, split and sequence length are read).
        tokenizer: the tokenizer section (type, sizes and the contents of its files).
        seed: ``--seed`` (the shuffle of the training split).
        bert: BERT sample settings for ``pretrain_bert.py`` analyses; None for GPT.
    """
    common: dict[str, Any] = {
        "split": [round(f, 12) for f in data.split_fractions] if data.uses_split else None,
        "seq_length": data.seq_length,
        "seed": int(seed),
        "tokenizer": {
            "tokenizer_type": tokenizer.tokenizer_type, "vocab_size": tokenizer.vocab_size,
            "vocab_extra_ids": tokenizer.vocab_extra_ids, "vocab_file": file_digest(tokenizer.vocab_file),
            "merge_file": file_digest(tokenizer.merge_file), "tokenizer_model": file_digest(tokenizer.tokenizer_model),
        },
    }
    epochs = data.train_data_exact_num_epochs or 1
    if epochs != 1:
        common["exact_num_epochs"] = epochs
    if bert is not None:  # mask_prob is left out: the analysis reads unmasked samples
        common["bert"] = {"short_seq_prob": bert.short_seq_prob, "bert_binary_head": bert.bert_binary_head}
    if data.mock_data:
        return [{"data": "mock", **common}]
    train = data.blends()[0]
    prefixes = train.prefixes if train is not None else []
    return [{"data": _data_file(p), "component": c, **common} for c, p in enumerate(prefixes)]


def _differences(saved: Any, current: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for k in sorted(set(saved) | set(current)):
            out += _differences(saved.get(k), current.get(k), f"{key}.{k}" if key else str(k))
        return out
    return [] if saved == current else [(key, saved, current)]


def _read_marker(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable analysis marker ({exc}); re-run tools/analyze_data.py") from None


def check_analysis_identity(index_to_sample: str, identity: Mapping[str, Any], where: str) -> None:
    """Refuse an analysis made for another training split; warn when it cannot be checked.

    Args:
        index_to_sample: the ``{save}/{metric}/{metric}_index_to_sample[...]`` prefix named in the config.
        identity: this run's record for the component (from :func:`analysis_identities`).
        where: the config key, for messages.
    Raises:
        ValueError: listing each differing setting as ``key: analysis <value>, this run <value>`` and the flags.
    """
    marker_path = reduce_marker_path(index_to_sample)
    marker = _read_marker(marker_path)
    saved = None if marker is None else marker.get("identity")
    if saved is None:
        logger.warning(
            "%s: %s %s, so this analysis cannot be checked against this run's data, split, seq-length, seed and "
            "tokenizer; re-run tools/analyze_data.py to have it checked", where, marker_path,
            "does not exist" if marker is None else "predates identity records")
        return
    diffs = _differences(saved, dict(identity))
    if not diffs:
        return
    lines = "; ".join(f"{k}: analysis {a!r}, this run {b!r}" for k, a, b in diffs)
    flags = sorted({IDENTITY_FLAGS.get(k.split(".")[0], k) for k, _, _ in diffs})
    raise ValueError(
        f"{where}: {index_to_sample} was analyzed for another training split ({lines}); re-run tools/analyze_data.py"
        f" with this run's {', '.join(flags)}, or train with the analysis' values"
    )
