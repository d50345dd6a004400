"""The BERT sample index's two backends: the compiled one (numba, optional) and the numpy one give the same rows as
the sentence-by-sentence reference and as megatron-core's C++ ``build_mapping``, and the backend choice falls back
cleanly without numba."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from data.test_bert_dataset import sentence_loop_index
from megatron.data.bert_indices import Mt19937_64, _shuffle_order, build_bert_sample_index

HELPERS_DIR = Path(__file__).resolve().parents[2] / ".venv" / "mcore" / "megatron" / "core" / "datasets"


def _cpp_helpers():
    """megatron-core's compiled helper module, imported by file (its package collides with ours), or None."""
    if not any(HELPERS_DIR.glob("helpers_cpp*")):
        return None
    sys.path.insert(0, str(HELPERS_DIR))
    try:
        return importlib.import_module("helpers_cpp")
    except ImportError:
        return None
    finally:
        sys.path.pop(0)


def documents(rng: np.random.Generator, num_docs: int, *, max_sentences: int = 40, one_sentence: float = 0.2,
              max_tokens: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Random document bounds and int32 sentence lengths: some empty and one-sentence documents, some sentences
    over 512 tokens (alone in a document or disqualifying one), some empty sentences."""
    counts = rng.integers(0, max_sentences, size=num_docs)
    counts[rng.random(num_docs) < one_sentence] = 1
    sizes = rng.integers(0, max_tokens, size=int(counts.sum())).astype(np.int32)
    sizes[rng.integers(0, len(sizes), size=len(sizes) // 2000 + 1)] = 600
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), sizes


# (documents, num_samples or None, num_epochs, max_length, short_seq_prob, seed, min_sentences)
EDGE_CASES = [
    (60, 400, None, 125, 0.1, 1234, 2),  # the defaults (binary head on)
    (60, 400, None, 125, 0.1, 1234, 1),  # binary head off: one-sentence samples allowed
    (60, 300, None, 509, 0.0, 3, 2),  # no short targets: no draws at all
    (60, 300, None, 20, 1.0, 5, 2),  # every target short
    (60, 300, None, 2, 0.5, 8, 1),  # the smallest target
    (60, None, 3, 61, 0.25, 7, 1),  # exact epochs
    (60, 0, None, 61, 0.25, 7, 2),  # no samples asked: empty index
    (5, 50, None, 40, 0.1, 0, 2),  # few documents, seed 0
]


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_backend_equals_sentence_loop(backend, case):
    """Each backend equals the sentence-by-sentence loop with the shuffle's swaps replayed: binary head on and off,
    short-sequence probabilities 0 to 1, the smallest target, exact epochs, an empty index, few documents, over
    documents with empty, one-sentence and over-long sentences."""
    if backend == "numba":
        pytest.importorskip("numba")
    num_docs, n, epochs, max_length, prob, seed, min_sentences = EDGE_CASES[case]
    bounds, sizes = documents(np.random.default_rng(case), num_docs)
    ours = build_bert_sample_index(bounds, sizes, n, max_length, prob, seed, min_sentences, num_epochs=epochs,
                                   backend=backend)
    assert ours.dtype == np.uint32 and ours.ndim == 2 and ours.shape[1] == 3
    if epochs is None:
        np.testing.assert_array_equal(ours, sentence_loop_index(bounds, sizes, n, max_length, prob, seed,
                                                                min_sentences))
    else:
        numpy_rows = build_bert_sample_index(bounds, sizes, None, max_length, prob, seed, min_sentences,
                                             num_epochs=epochs, backend="numpy")
        np.testing.assert_array_equal(ours, numpy_rows)
    if n:
        assert len(ours) >= n


def test_backends_agree_on_larger_inputs():
    """numba and numpy give identical rows over many epochs of a larger random corpus, for several seeds and both
    minimum sentence counts (the compiled path's growth of its output and its epoch sizing included)."""
    pytest.importorskip("numba")
    bounds, sizes = documents(np.random.default_rng(7), 3000)
    for seed, min_sentences, n in ((1, 2, 50_000), (2, 1, 80_000), (1234, 2, 20_000)):
        args = (bounds, sizes, n, 200, 0.1, seed, min_sentences)
        np.testing.assert_array_equal(build_bert_sample_index(*args, backend="numba"),
                                      build_bert_sample_index(*args, backend="numpy"), err_msg=f"seed {seed}")


@pytest.mark.skipif(_cpp_helpers() is None, reason="megatron-core's compiled helpers not found in .venv/mcore")
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_backend_equals_cpp_build_mapping(backend):
    """Each backend equals megatron-core's C++ build_mapping (rows, order, dtype) on 200k-sentence corpora over
    several seeds, sample counts, short-sequence probabilities and both minimum sentence counts."""
    if backend == "numba":
        pytest.importorskip("numba")
    helpers = _cpp_helpers()
    for k, (seed, n, prob, min_sentences, max_length) in enumerate(
            ((1234, 300_000, 0.1, 2, 509), (5, 100_000, 0.1, 1, 125), (77, 50_000, 1.0, 2, 61),
             (9, 60_000, 0.0, 1, 254))):
        bounds, sizes = documents(np.random.default_rng(100 + k), 8000, max_sentences=50)
        ours = build_bert_sample_index(bounds, sizes, n, max_length, prob, seed, min_sentences, backend=backend)
        theirs = helpers.build_mapping(bounds, sizes, np.iinfo(np.int32).max - 1, n, max_length, prob, seed,
                                       False, min_sentences)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs, err_msg=f"case {k}")


def test_compiled_shuffle_equals_vectorised_order():
    """The compiled Fisher-Yates (its own std::mt19937_64 twist and tempering) moves rows exactly as the numpy
    order does, over several 312-word blocks of draws and for 0, 1 and 2 rows."""
    pytest.importorskip("numba")
    from megatron.data import bert_indices_numba

    for n, seed in ((0, 1), (1, 2), (2, 3), (313, 4), (5000, 1234)):
        rows = np.arange(3 * n, dtype=np.uint32).reshape(n, 3)
        expected = rows[_shuffle_order(n, seed)]
        np.testing.assert_array_equal(bert_indices_numba.shuffle_rows(rows, Mt19937_64(seed + 1).state), expected)


def test_backend_choice_and_fallback(monkeypatch, caplog):
    """An unknown backend is a ValueError naming the choices; with numba unimportable, "auto" logs a warning and
    gives the numpy rows, and "numba" is a ValueError saying how to install it."""
    bounds, sizes = documents(np.random.default_rng(3), 40)
    args = (bounds, sizes, 200, 61, 0.1, 11, 2)
    with pytest.raises(ValueError, match="'auto', 'numba' or 'numpy'"):
        build_bert_sample_index(*args, backend="cpp")
    expected = build_bert_sample_index(*args, backend="numpy")
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    monkeypatch.delitem(sys.modules, "megatron.data.bert_indices_numba", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # "installed" but broken
    with caplog.at_level("WARNING"):
        np.testing.assert_array_equal(build_bert_sample_index(*args), expected)
    assert "uses numpy" in caplog.text
    with pytest.raises(ValueError, match="pip install numba"):
        build_bert_sample_index(*args, backend="numba")
