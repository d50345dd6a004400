"""Training-split index files named and laid out as Megatron-DeepSpeed's, written and read (``--train-*-idx-path``).

Megatron-DeepSpeed's data-efficiency recipes pin the training split to the indices its analysis ran on: GPT's
``{prefix}_train_indexmap_exact{N}ep_{seq}sl_{seed}s_{doc,sample,shuffle}_idx.npy`` (``--train-doc-idx-path``,
``--train-sample-idx-path``, ``--train-shuffle-idx-path``) and BERT's samples mapping
``{prefix}_train_indexmap_exact{N}ep_{seq-3}msl_{ssp:.2f}ssp_{seed}s.npy`` (``--train-idx-path``). Our GPT indices
equal megatron-core's, whose layout these files share (doc index int32 [E*D], sample index [n+1, 2] of (position in
the doc index, token offset), shuffle index [n]); the BERT mapping rows are (first sentence, end sentence, target
length) in both. Loaded files are checked against the data - document ids and counts, the tokens every sample
spans, the sample count - so files of another corpus, split, sequence length or epoch count are refused.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import numpy as np

from megatron.logging import get_logger, log_rank0

__all__ = [
    "mds_gpt_index_paths",
    "mds_bert_index_path",
    "forced_index_epochs",
    "write_mds_gpt_indices",
    "write_mds_bert_index",
    "load_forced_gpt_indices",
    "load_forced_bert_index",
]

logger = get_logger(__name__)

_GPT_FLAGS = {"doc_index": "--train-doc-idx-path", "sample_index": "--train-sample-idx-path",
              "shuffle_index": "--train-shuffle-idx-path"}
_GPT_SUFFIX = {"doc_index": "doc", "sample_index": "sample", "shuffle_index": "shuffle"}
_EPOCHS = re.compile(r"_exact(\d+)ep_")


def mds_gpt_index_paths(prefix: str, seq_length: int, seed: int, epochs: int) -> dict[str, str]:
    """Megatron-DeepSpeed's names of the training split's three GPT index files, beside the data ``prefix``."""
    stem = f"{prefix}_train_indexmap_exact{epochs}ep_{seq_length}sl_{seed}s"
    return {name: f"{stem}_{suffix}_idx.npy" for name, suffix in _GPT_SUFFIX.items()}


def mds_bert_index_path(prefix: str, seq_length: int, short_seq_prob: float, seed: int, epochs: int) -> str:
    """Megatron-DeepSpeed's name of the BERT training samples mapping (``msl`` = seq_length - 3 special tokens)."""
    return f"{prefix}_train_indexmap_exact{epochs}ep_{seq_length - 3}msl_{short_seq_prob:0.2f}ssp_{seed}s.npy"


def forced_index_epochs(data: Any) -> Optional[int]:
    """The epoch count in the name of a forced index file (``_exact{N}ep_``), or None (no forced file, or a name
    without the tag)."""
    for path in (getattr(data, "train_doc_idx_path", None), getattr(data, "train_idx_path", None)):
        match = _EPOCHS.search(os.path.basename(path or ""))
        if match:
            return int(match.group(1))
    return None


def _save(path: str, array: np.ndarray) -> bool:
    """Write one .npy atomically; False (with a warning) when the directory is not writable."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
        return True
    except OSError as err:
        logger.warning("cannot write %s (%s); pass the index files of another copy of the data", path, err)
        if os.path.exists(tmp):
            os.remove(tmp)
        return False


def write_mds_gpt_indices(prefix: str, arrays: dict[str, np.ndarray], seq_length: int, seed: int,
                          epochs: int) -> dict[str, str]:
    """Write a GPT training split's indices under Megatron-DeepSpeed's names (sample index as int64, its dtype);
    returns the paths written."""
    paths = mds_gpt_index_paths(prefix, seq_length, seed, epochs)
    written = {}
    for name, path in paths.items():
        array = np.asarray(arrays[name])
        if name == "sample_index":
            array = array.astype(np.int64)
        if _save(path, array):
            written[name] = path
    return written


def write_mds_bert_index(prefix: str, sample_index: np.ndarray, seq_length: int, short_seq_prob: float, seed: int,
                         epochs: int) -> Optional[str]:
    """Write a BERT training samples mapping under Megatron-DeepSpeed's name; the path, or None if not writable."""
    path = mds_bert_index_path(prefix, seq_length, short_seq_prob, seed, epochs)
    return path if _save(path, np.asarray(sample_index)) else None


def _load(path: Optional[str], flag: str, ndim: int) -> np.ndarray:
    if path is None or not os.path.isfile(path):
        raise ValueError(f"{flag} {path}: file not found; pass the index file written by the analysis "
                         "(tools/analyze_data.py or Megatron-DeepSpeed's)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{flag} {path}: not a plain numeric .npy array ({err})") from None
    if array.dtype.kind not in "iu" or array.ndim != ndim:
        raise ValueError(f"{flag} {path}: expected a {ndim}-D integer array, got {array.dtype} {array.shape}")
    return array


def _mismatch(flag: str, path: str, what: str) -> ValueError:
    return ValueError(f"{flag} {path} does not fit this data: {what}. The file was built for another corpus, split, "
                      "--seq-length, --seed or epoch count; re-run the analysis (which writes the files) with this "
                      "run's data flags, or drop the --train-*-idx-path flags to build the indices")


def load_forced_gpt_indices(data: Any, sequence_lengths: np.ndarray, document_range: tuple[int, int],
                            seq_length: int) -> dict[str, np.ndarray]:
    """The training split's GPT indices from ``data``'s three ``train_*_idx_path`` files, checked against the data.

    Checks: document ids inside the file, every document the same number of times (whole epochs); every sample
    spans exactly ``seq_length`` tokens of the concatenated documents and their count is
    ``(tokens - 1) // seq_length``; shuffle entries address existing samples. A document set other than this
    ``--split``'s training range (Megatron-DeepSpeed rounds split boundaries differently) is logged, not refused.

    Raises:
        ValueError: naming the flag, the file and what does not fit.
    """
    doc = _load(data.train_doc_idx_path, _GPT_FLAGS["doc_index"], 1)
    sample = _load(data.train_sample_idx_path, _GPT_FLAGS["sample_index"], 2)
    shuffle = _load(data.train_shuffle_idx_path, _GPT_FLAGS["shuffle_index"], 1)
    flag, path = _GPT_FLAGS["doc_index"], data.train_doc_idx_path
    sizes = np.asarray(sequence_lengths, dtype=np.int64)
    if len(doc) == 0 or doc.min() < 0 or doc.max() >= len(sizes):
        raise _mismatch(flag, path, f"document ids span [{doc.min() if len(doc) else '-'}, "
                                    f"{doc.max() if len(doc) else '-'}] but the data has {len(sizes)} documents")
    counts = np.bincount(doc, minlength=len(sizes))
    used = counts[counts > 0]
    epochs = int(used[0])
    if not np.all(used == epochs):
        raise _mismatch(flag, path, f"documents appear between {used.min()} and {used.max()} times, not a whole "
                                    "number of epochs")
    want_epochs = getattr(data, "train_data_exact_num_epochs", None)
    if want_epochs is not None and epochs != want_epochs:
        raise _mismatch(flag, path, f"it holds {epochs} epoch(s) of its documents but --train-data-exact-num-epochs "
                                    f"is {want_epochs}")
    docs = np.flatnonzero(counts)
    if docs[0] != document_range[0] or docs[-1] != document_range[1] - 1 or len(docs) != docs[-1] - docs[0] + 1:
        log_rank0(logger, "%s holds documents %d..%d (%d of them); this --split's training range is [%d, %d): using "
                  "the file's", path, docs[0], docs[-1], len(docs), *document_range)
    flag, path = _GPT_FLAGS["sample_index"], data.train_sample_idx_path
    if sample.shape[1] != 2 or len(sample) < 2:
        raise _mismatch(flag, path, f"shape {sample.shape}, expected [samples + 1, 2]")
    tokens = int(sizes[doc].sum())
    want = (tokens - 1) // seq_length
    if len(sample) - 1 != want:
        raise _mismatch(flag, path, f"{len(sample) - 1} samples, but {epochs} epoch(s) of these documents hold "
                                    f"{tokens} tokens = {want} samples of --seq-length {seq_length}")
    pos, offset = np.asarray(sample[:, 0], dtype=np.int64), np.asarray(sample[:, 1], dtype=np.int64)
    if pos.min() < 0 or pos.max() >= len(doc) or offset.min() < 0:
        raise _mismatch(flag, path, "rows point outside the document index")
    starts = np.concatenate(([0], np.cumsum(sizes[doc])[:-1]))
    spans = np.diff(starts[pos] + offset)
    if not np.all(spans == seq_length):
        bad = int(np.flatnonzero(spans != seq_length)[0])
        raise _mismatch(flag, path, f"sample {bad} spans {int(spans[bad])} tokens, not --seq-length {seq_length}")
    flag, path = _GPT_FLAGS["shuffle_index"], data.train_shuffle_idx_path
    if len(shuffle) > want or (len(shuffle) and (shuffle.min() < 0 or shuffle.max() >= want)):
        raise _mismatch(flag, path, f"{len(shuffle)} entries over [{shuffle.min()}, {shuffle.max()}] for {want} "
                                    "samples")
    log_rank0(logger, "loaded the training split's indices from %s (+ sample/shuffle): %d samples, %d epoch(s)",
              data.train_doc_idx_path, len(shuffle), epochs)
    return {"doc_index": doc, "sample_index": sample, "shuffle_index": shuffle}


def load_forced_bert_index(data: Any, document_indices: np.ndarray, document_range: tuple[int, int],
                           seq_length: int) -> np.ndarray:
    """The training split's BERT samples mapping from ``data.train_idx_path``, checked against the data.

    Checks: rows are (first sentence, end sentence, target) with sentences inside the split's documents, at least
    one sentence each, and targets within ``seq_length - 3``.

    Raises:
        ValueError: naming ``--train-idx-path``, the file and what does not fit.
    """
    flag, path = "--train-idx-path", data.train_idx_path
    mapping = _load(path, flag, 2)
    if mapping.shape[1] != 3 or len(mapping) == 0:
        raise _mismatch(flag, path, f"shape {mapping.shape}, expected [samples, 3]")
    lo, hi = int(document_indices[document_range[0]]), int(document_indices[document_range[1]])
    first, end, target = (np.asarray(mapping[:, i], dtype=np.int64) for i in range(3))
    if first.min() < lo or end.max() > hi or np.any(end <= first):
        raise _mismatch(flag, path, f"sentence ranges span [{first.min()}, {end.max()}) but the training documents "
                                    f"hold sentences [{lo}, {hi})")
    if target.min() < 1 or target.max() > seq_length - 3:
        raise _mismatch(flag, path, f"target lengths span [{target.min()}, {target.max()}], beyond --seq-length "
                                    f"{seq_length} - 3")
    log_rank0(logger, "loaded the BERT training samples mapping from %s: %d samples", path, len(mapping))
    return mapping
