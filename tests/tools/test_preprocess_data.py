"""Tests for ``tools/preprocess_data.py`` and ``megatron.data.preprocessing.preprocess``: exact token contents,
determinism across workers/partitions, input formats, bad input handling, atomic outputs, empty documents (kept
byte-identically to Megatron-LM, or dropped), and the rule-based sentence splitter."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from data.conftest import kjv_chapters, run_preprocess_data, toy_corpus, write_jsonl  # noqa: F401 - fixtures
from mcore_utils import MCORE, requires_mcore

from megatron.data.indexed_dataset import IndexedDataset
from megatron.data.preprocessing.preprocess import PreprocessConfig, preprocess
from megatron.data.preprocessing.sentence_splitter import split_sentences
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig


@pytest.fixture(scope="module")
def gpt2():
    return build_tokenizer(TokenizerConfig())


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def _pair_bytes(prefix) -> tuple[bytes, bytes]:
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


def test_document_level_contents_and_eod_in_length(tmp_path, toy_corpus, run_preprocess_data, gpt2):
    """Each document is one sequence = tokenize(text) + [eod]; the EOD is counted in the sequence length."""
    proc = run_preprocess_data(["--input", toy_corpus, "--output-prefix", tmp_path / "out", "--append-eod"])
    docs = [json.loads(line)["text"] for line in open(toy_corpus, encoding="utf-8")]
    ds = IndexedDataset(tmp_path / "out_text_document")
    assert ds.dtype == np.uint16 and len(ds) == len(docs) == 40
    assert ds.document_indices.tolist() == list(range(41))
    for i, text in enumerate(docs):
        assert ds[i].tolist() == gpt2.tokenize(text) + [gpt2.eod]
    assert int(ds.sequence_lengths.sum()) == ds.num_tokens
    assert f"documents: 40  tokens: {ds.num_tokens}" in proc.stdout and "MB/s" in proc.stdout


def test_output_identical_for_any_workers_and_partitions(tmp_path, toy_corpus, run_preprocess_data):
    """1 worker, 2 workers and 2 partitions x 3 workers write byte-identical pairs (small chunks force parallelism)."""
    outputs = []
    for name, extra in [("w1", ["--workers", "1"]), ("w2", ["--workers", "2"]),
                        ("p2", ["--workers", "3", "--partitions", "2"])]:
        run_preprocess_data(["--input", toy_corpus, "--output-prefix", tmp_path / name, "--append-eod",
                             "--chunk-bytes", "8192", *extra])
        outputs.append(_pair_bytes(tmp_path / f"{name}_text_document"))
    assert outputs[0] == outputs[1] == outputs[2]
    assert not [f for f in _files(tmp_path) if f.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("partitions", [1, 2])
def test_sentence_level_with_one_and_two_partitions(tmp_path, partitions, gpt2):
    """--split-sentences writes one sequence per sentence (documents group them; EOD ends each document's last
    sentence) with 1 and with 2 partitions, identically; a whitespace-only document has no sentence and stays a
    document of zero sequences."""
    docs = [{"text": "Mr. Smith came home. He was tired! Was he? Yes."}, {"text": "   "},
            {"text": "One sentence only"}]
    corpus = write_jsonl(tmp_path / "s.jsonl", docs)
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / f"p{partitions}"), split_sentences=True,
                           append_eod=True, partitions=partitions, workers=2, chunk_bytes=16)
    stats = preprocess(cfg, gpt2)
    ds = IndexedDataset(stats.outputs[0])
    assert stats.outputs[0].endswith("_text_sentence") and (stats.empty_kept, stats.empty_dropped) == (1, 0)
    sentences = ["Mr. Smith came home.", "He was tired!", "Was he?", "Yes.", "One sentence only"]
    expected = [gpt2.tokenize(s) for s in sentences]
    expected[3] += [gpt2.eod]
    expected[4] += [gpt2.eod]
    assert [ds[i].tolist() for i in range(len(ds))] == expected
    assert ds.document_indices.tolist() == [0, 4, 4, 5]


def test_gzip_and_glob_inputs_match_plain_file(tmp_path, run_preprocess_data):
    """A glob over shards (one gzipped) reads files in sorted order and equals preprocessing the plain file."""
    docs = kjv_chapters(12)
    write_jsonl(tmp_path / "all.jsonl", docs)
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "a.jsonl", docs[:5])
    with gzip.open(tmp_path / "shards" / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs[5:9])
    write_jsonl(tmp_path / "shards" / "c.jsonl", docs[9:])
    run_preprocess_data(["--input", tmp_path / "all.jsonl", "--output-prefix", tmp_path / "plain", "--append-eod"])
    run_preprocess_data(["--input", str(tmp_path / "shards" / "*.jsonl*"), "--output-prefix", tmp_path / "glob",
                         "--append-eod", "--partitions", "2", "--workers", "2"])
    assert _pair_bytes(tmp_path / "plain_text_document") == _pair_bytes(tmp_path / "glob_text_document")


BAD_LINES = [
    (b'{"text": "unterminated\n', "malformed JSON"),
    (b'{"title": "no text key"}\n', "missing key 'text'"),
    (b'{"text": 42}\n', "value of key 'text' is int"),
    (b'{"text": "bad \xff byte"}\n', "invalid UTF-8"),
    (b'["not", "an", "object"]\n', "expected a JSON object"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES, ids=[m.split()[0] for _, m in BAD_LINES])
def test_bad_line_stops_with_file_and_line_and_leaves_no_pair(tmp_path, run_preprocess_data, bad, message):
    """A bad line fails the run with `path:line: what`, and neither an output pair nor a temporary file remains."""
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b'{"text": "fine"}\n' * 3 + bad + b'{"text": "fine"}\n')
    out = tmp_path / "out"
    out.mkdir()
    proc = run_preprocess_data(["--input", corpus, "--output-prefix", out / "x", "--workers", "2",
                                "--chunk-bytes", "20"], check=False)
    assert proc.returncode == 2
    assert f"{corpus}:4: {message}" in proc.stderr
    assert _files(out) == []


def test_skip_invalid_counts_and_keeps_order(tmp_path, gpt2):
    """--skip-invalid skips and counts every kind of bad line; a blank line is skipped and counted (no document), an
    empty text is kept as a zero-sequence document and counted, a whitespace-only text keeps its GPT-2 tokens."""
    lines = [b'{"text": "first"}\n'] + [bad for bad, _ in BAD_LINES] + [
        b"\n", b'{"text": ""}\n', b'{"text": "  \\n "}\n', b'{"text": "last"}\n']
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b"".join(lines))
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / "o"), skip_invalid=True)
    stats = preprocess(cfg, gpt2)
    assert (stats.skipped_invalid, stats.blank_lines, stats.empty_kept, stats.documents) == (5, 1, 1, 4)
    ds = IndexedDataset(stats.outputs[0])
    assert [ds[i].tolist() for i in range(len(ds))] == [gpt2.tokenize(t) for t in ("first", "  \n ", "last")]
    assert ds.document_indices.tolist() == [0, 1, 1, 2, 3]


def test_multiple_json_keys_write_one_pair_each(tmp_path, gpt2):
    """--json-keys a b writes {prefix}_a_document and {prefix}_b_document with each key's tokens."""
    corpus = write_jsonl(tmp_path / "k.jsonl", [{"a": "alpha one", "b": "beta"}, {"a": "alpha two", "b": "gamma"}])
    stats = preprocess(PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / "k"), json_keys=["a", "b"]),
                       gpt2)
    assert [os.path.basename(p) for p in stats.outputs] == ["k_a_document", "k_b_document"]
    b = IndexedDataset(stats.outputs[1])
    assert [b[0].tolist(), b[1].tolist()] == [gpt2.tokenize("beta"), gpt2.tokenize("gamma")]


class _FailingTokenizer:
    """GPT-2 stand-in that raises on a marker document, to simulate a crash in the middle of a run."""

    vocab_size, eod = 256, 255

    def tokenize_batch(self, texts):
        if any("CRASH" in t for t in texts):
            raise RuntimeError("simulated crash")
        return [list(t.encode()) for t in texts]


@pytest.mark.parametrize("partitions", [1, 2])
def test_crash_mid_run_leaves_no_pair(tmp_path, partitions):
    """An exception while encoding (in a worker or a partition process) leaves no output pair and no temp files."""
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": f"doc {i}"} for i in range(50)] + [{"text": "CRASH"}])
    out = tmp_path / "out"
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(out / "x"), workers=2, partitions=partitions,
                           chunk_bytes=64)
    with pytest.raises(RuntimeError, match="simulated crash"):
        preprocess(cfg, _FailingTokenizer())
    assert _files(out) == []


def test_byte_tokenizer_uint16_and_int32_dtypes(tmp_path):
    """The token dtype follows optimal_dtype(vocab_size): uint16 below 65500 ids, int32 above."""
    corpus = write_jsonl(tmp_path / "d.jsonl", [{"text": "ab"}])

    class Big(_FailingTokenizer):
        vocab_size, eod = 70000, 69999

    for name, tok, dtype in (("small", _FailingTokenizer(), np.uint16), ("big", Big(), np.int32)):
        stats = preprocess(PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / name), append_eod=True),
                           tok)
        ds = IndexedDataset(stats.outputs[0])
        assert ds.dtype == dtype and ds[0].tolist() == [97, 98, tok.eod]


def test_missing_input_and_required_flags(tmp_path, run_preprocess_data):
    """A glob matching nothing and a missing --output-prefix are reported as errors naming the problem."""
    proc = run_preprocess_data(["--input", tmp_path / "nope*.jsonl", "--output-prefix", tmp_path / "o"], check=False)
    assert proc.returncode == 2 and "matches no file" in proc.stderr
    proc = run_preprocess_data(["--input", tmp_path / "x.jsonl"], check=False)
    assert proc.returncode == 2 and "--output-prefix" in proc.stderr


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
        ("Pi is 3.14 today. E.g. this, e.g. that. Done.", ["Pi is 3.14 today.", "E.g. this, e.g. that.", "Done."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ('"Why?" she asked. "Because!" He ran.', ['"Why?" she asked.', '"Because!"', "He ran."]),
        ("J. R. R. Tolkien wrote. Acme Inc. The firm grew.",
         ["J. R. R. Tolkien wrote.", "Acme Inc.", "The firm grew."]),
        ("On Jan. 5 it rained... then it stopped. Wow...", ["On Jan. 5 it rained... then it stopped.", "Wow..."]),
        ("A line\nwithout end\n\nNew paragraph", ["A line\nwithout end", "New paragraph"]),
        ("Visit example.com today. See Fig. 2 now.", ["Visit example.com today.", "See Fig. 2 now."]),
    ],
)
def test_sentence_splitter_rules(text, sentences):
    """Abbreviations, decimals, initials, quotes, ellipses and paragraphs split as a careful reader would, and with
    keep_newlines the pieces concatenate back to the exact text."""
    assert split_sentences(text) == sentences
    assert "".join(split_sentences(text, keep_newlines=True)) == text


@pytest.mark.parametrize("partitions", [1, 2])
def test_ctrl_c_leaves_no_pair(tmp_path, partitions):
    """Ctrl-C (SIGINT to the whole process group) mid-run exits 130 and leaves no output pair or temporary file."""
    import signal

    from data.conftest import long_preprocess_run

    with long_preprocess_run(tmp_path, partitions) as (proc, out):
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _files(out) == []


def test_partition_spans_cover_every_line_once_in_order(tmp_path):
    """However files are cut into partitions and chunks, reading the spans yields every line exactly once, in
    order (lines cut by a span boundary belong to the span where they start)."""
    import random

    from megatron.data.preprocessing.preprocess import _plan_partitions, _read_chunks

    rng = random.Random(0)
    for trial in range(200):
        paths, expected = [], []
        for f in range(rng.randint(1, 4)):
            lines = [b"x" * rng.randint(0, 30) + b"\n" for _ in range(rng.randint(0, 20))]
            if lines and len(lines[-1]) > 1 and rng.random() < 0.3:
                lines[-1] = lines[-1][:-1]  # last line without a newline
            path = tmp_path / f"t{trial}_{f}.jsonl"
            path.write_bytes(b"".join(lines))
            paths.append(str(path))
            expected += [(str(path), line) for line in lines]
        partitions = rng.randint(1, 5)
        plan = _plan_partitions(paths, partitions)
        assert 1 <= len(plan) <= partitions
        got = [(p, line) for group in plan for span in group
               for p, _, lines in _read_chunks(span, rng.randint(1, 50)) for line in lines]
        assert got == expected, f"trial {trial}: {plan}"


def test_line_number_is_exact_with_partitions(tmp_path, gpt2):
    """The reported line number counts from the start of the file even when the bad line is in a later partition."""
    lines = [b'{"text": "ok %d"}\n' % i for i in range(60)]
    lines[36] = b'{"text": oops}\n'
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b"".join(lines))
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / "o"), partitions=3, chunk_bytes=40)
    with pytest.raises(ValueError, match=rf"{corpus}:37: malformed JSON"):
        preprocess(cfg, gpt2)


def test_keep_newlines_keeps_whitespace_in_sentences(tmp_path, gpt2):
    """--keep-newlines tokenizes each sentence with the newlines that follow it; without it they are stripped."""
    corpus = write_jsonl(tmp_path / "n.jsonl", [{"text": "First one.\n\nSecond one."}])
    for keep, first in ((True, "First one.\n\n"), (False, "First one.")):
        cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / f"k{keep}"), split_sentences=True,
                               keep_newlines=keep)
        ds = IndexedDataset(preprocess(cfg, gpt2).outputs[0])
        assert [ds[0].tolist(), ds[1].tolist()] == [gpt2.tokenize(first), gpt2.tokenize("Second one.")]


# ----------------------------------------------------------------------------------------------- empty documents
# Eight documents: empty ones first, last, twice in a row and whitespace-only (GPT-2 has tokens for whitespace, so
# only --split-sentences, which finds no sentence in it, makes that one empty).
EMPTY_TEXTS = ["", "In the beginning God created the heaven and the earth. And the earth was without form.", "", "   ",
               "Jesus wept.", "", "Amen", ""]
# document_indices Megatron-LM writes for them: one entry per document, repeated for a zero-sequence document.
EMPTY_DOC_INDICES = {False: [0, 0, 1, 1, 2, 3, 3, 4, 4], True: [0, 0, 2, 2, 2, 3, 3, 4, 4]}


def _sentence_tokens(gpt2, text: str, split: bool) -> list[list[int]]:
    """Token lists of a text's sentences before any filtering (one "sentence" without --split-sentences)."""
    return [gpt2.tokenize(s) for s in (split_sentences(text) if split else [text])]


@pytest.mark.parametrize("split", [False, True], ids=["document", "sentence"])
@pytest.mark.parametrize("append_eod", [False, True], ids=["no_eod", "eod"])
def test_empty_documents_kept_by_default(tmp_path, gpt2, split, append_eod):
    """By default an empty document is kept as a document of zero sequences (a repeated document_indices entry; no
    zero-length sequence, no lone EOD even with --append-eod), with and without --split-sentences; the other
    documents' sequences are unchanged, and the count is reported as empty_kept."""
    corpus = write_jsonl(tmp_path / "e.jsonl", [{"text": t} for t in EMPTY_TEXTS])
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / "e"), split_sentences=split,
                           append_eod=append_eod)
    stats = preprocess(cfg, gpt2)
    ds = IndexedDataset(stats.outputs[0])
    expected = []
    for text in EMPTY_TEXTS:
        sentences = [s for s in _sentence_tokens(gpt2, text, split) if s]
        if sentences and append_eod:
            sentences[-1] = sentences[-1] + [gpt2.eod]
        expected += sentences
    assert ds.num_documents == len(EMPTY_TEXTS) == stats.documents
    assert ds.document_indices.tolist() == EMPTY_DOC_INDICES[split]
    assert ds.sequence_lengths.tolist() == [len(s) for s in expected] and 0 not in ds.sequence_lengths
    assert [ds[i].tolist() for i in range(len(ds))] == expected
    assert (stats.empty_kept, stats.empty_dropped, stats.sequences) == (4 + split, 0, len(expected))


def test_drop_empty_drops_them_and_keeps_the_bin(tmp_path, run_preprocess_data, gpt2):
    """--drop-empty drops empty and whitespace-only documents (the behaviour before empty documents were kept);
    with no whitespace-only text the .bin and the sequence lengths equal the default's and only document_indices
    differ. The summary says how many were empty and whether they were kept or dropped."""
    texts = [t for t in EMPTY_TEXTS if t != "   "]
    corpus = write_jsonl(tmp_path / "e.jsonl", [{"text": t} for t in texts + ["  \n "]])
    keep = run_preprocess_data(["--input", corpus, "--output-prefix", tmp_path / "keep", "--append-eod"])
    drop = run_preprocess_data(["--input", corpus, "--output-prefix", tmp_path / "drop", "--append-eod",
                                "--drop-empty"])
    assert "empty documents: 4 kept as zero-sequence documents" in keep.stdout
    assert "empty documents: 5 dropped (--drop-empty)" in drop.stdout
    kept, dropped = IndexedDataset(tmp_path / "keep_text_document"), IndexedDataset(tmp_path / "drop_text_document")
    assert kept.document_indices.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert dropped.document_indices.tolist() == [0, 1, 2, 3]
    assert [dropped[i].tolist() for i in range(len(dropped))] == [
        gpt2.tokenize(t) + [gpt2.eod] for t in texts if t]
    # The whitespace-only last document is the only difference in tokens: drop it from the kept pair's .bin.
    assert kept[len(kept) - 1].tolist() == gpt2.tokenize("  \n ") + [gpt2.eod]
    bin_kept = open(tmp_path / "keep_text_document.bin", "rb").read()
    assert bin_kept[: int(kept.sequence_pointers[-1])] == open(tmp_path / "drop_text_document.bin", "rb").read()
    assert kept.sequence_lengths[:-1].tolist() == dropped.sequence_lengths.tolist()


def test_empty_documents_identical_for_any_workers_and_partitions(tmp_path):
    """Empty documents at chunk and partition edges (first, last, and a partition holding nothing else) give
    byte-identical pairs with 1 worker, 2 workers and 3 partitions; the merge keeps the repeated boundaries."""
    rows = [{"text": f"doc {i:02d}", "pad": ""} for i in range(30)]
    empty = [{"text": "", "pad": "x" * 6} for _ in range(30)]  # same line length: partition 2 is all empties
    corpus = write_jsonl(tmp_path / "e.jsonl", [empty[0], *rows[1:], *empty, *rows[:29], empty[0]])
    outputs = []
    for name, workers, partitions in (("w1", 1, 1), ("w2", 2, 1), ("p3", 3, 3)):
        cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / name), append_eod=True,
                               workers=workers, partitions=partitions, chunk_bytes=64)
        stats = preprocess(cfg, _FailingTokenizer())
        assert (stats.documents, stats.empty_kept) == (90, 32)
        outputs.append(_pair_bytes(stats.outputs[0]))
    assert outputs[0] == outputs[1] == outputs[2]
    ds = IndexedDataset(tmp_path / "w1_text_document")
    assert ds.document_indices.tolist() == [0, 0, *range(1, 30), *[29] * 30, *range(30, 59), 58]


MEGATRON_LM_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    spec = json.load(open(sys.argv[1]))
    for case in spec["cases"]:
        builder = IndexedDatasetBuilder(case["prefix"] + ".bin", dtype=DType.optimal_dtype(spec["vocab_size"]))
        for sentences in case["documents"]:
            # Megatron-LM tools/preprocess_data.py (June 2023 on): Encoder.encode, then one add_document per line.
            doc_ids, sentence_lens = [], []
            for sentence_ids in sentences:
                if len(sentence_ids) > 0:
                    doc_ids.extend(sentence_ids)
                    sentence_lens.append(len(sentence_ids))
            if len(doc_ids) > 0 and case["append_eod"]:
                doc_ids.append(spec["eod"])
                sentence_lens[-1] += 1
            builder.add_document(doc_ids, sentence_lens)
        builder.finalize(case["prefix"] + ".idx")
    """
)


@requires_mcore
def test_empty_documents_byte_identical_to_megatron_lm(tmp_path, gpt2):
    """With empty documents, our pair (2 workers, 2 partitions) is byte-identical to what Megatron-LM's
    preprocess_data.py writes through megatron-core's IndexedDatasetBuilder for the same sentence tokens, with and
    without --append-eod and --split-sentences (its encoder loop replayed verbatim; the tokens are ours)."""
    corpus = write_jsonl(tmp_path / "e.jsonl", [{"text": t} for t in EMPTY_TEXTS])
    cases = []
    for split in (False, True):
        for append_eod in (False, True):
            cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / f"ours{split:d}{append_eod:d}"),
                                   split_sentences=split, append_eod=append_eod, workers=2, partitions=2,
                                   chunk_bytes=16)
            ours = preprocess(cfg, gpt2).outputs[0]
            cases.append({"ours": ours, "prefix": str(tmp_path / f"theirs{split:d}{append_eod:d}"),
                          "append_eod": append_eod,
                          "documents": [_sentence_tokens(gpt2, t, split) for t in EMPTY_TEXTS]})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"cases": cases, "eod": gpt2.eod, "vocab_size": gpt2.vocab_size}))
    proc = subprocess.run([sys.executable, "-c", MEGATRON_LM_SCRIPT, str(spec)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(MCORE)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for case in cases:
        assert _pair_bytes(case["ours"]) == _pair_bytes(case["prefix"]), case["prefix"]


def test_kept_empty_documents_leave_gpt_and_bert_indices_unchanged(tmp_path, gpt2):
    """Kept zero-sequence documents are invisible downstream: GPT indices (over sequences) and the BERT sample
    index over the whole file (build_mapping skips documents without sentences) equal those of the --drop-empty
    pair, and no BERT sample is empty."""
    from megatron.data.bert_indices import build_bert_sample_index
    from megatron.data.gpt_indices import build_gpt_indices

    rows = []
    for i, doc in enumerate(kjv_chapters(6)):
        rows += [doc, {"text": ""}] if i % 2 else [{"text": ""}, doc]
    corpus = write_jsonl(tmp_path / "e.jsonl", rows)
    pairs = {}
    for drop in (False, True):
        cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / f"d{drop:d}"), split_sentences=True,
                               append_eod=True, drop_empty=drop)
        pairs[drop] = IndexedDataset(preprocess(cfg, gpt2).outputs[0])
    kept, dropped = pairs[False], pairs[True]
    assert kept.num_documents == 12 and dropped.num_documents == 6
    assert kept.sequence_lengths.tolist() == dropped.sequence_lengths.tolist()
    gpt = [build_gpt_indices(ds.sequence_lengths, np.arange(len(ds), dtype=np.int32), 64, 300, 5)
           for ds in pairs.values()]
    for name in gpt[0]:
        np.testing.assert_array_equal(gpt[0][name], gpt[1][name])
    bert = [build_bert_sample_index(np.asarray(ds.document_indices), ds.sequence_lengths, 500, 125, 0.1, 1234, 2)
            for ds in pairs.values()]
    np.testing.assert_array_equal(bert[0], bert[1])
    assert len(bert[0]) >= 500 and np.all(bert[0][:, 1] > bert[0][:, 0])
