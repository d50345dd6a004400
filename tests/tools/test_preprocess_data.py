"""Tests for ``tools/preprocess_data.py`` and ``megatron.data.preprocess``: exact token contents, determinism across
workers/partitions, input formats, bad input handling, atomic outputs, and the rule-based sentence splitter."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
from data.conftest import kjv_chapters, run_preprocess_data, toy_corpus, write_jsonl  # noqa: F401 - fixtures

from megatron.data.indexed_dataset import IndexedDataset
from megatron.data.preprocess import PreprocessConfig, preprocess
from megatron.data.sentence_splitter import split_sentences
from megatron.data.tokenizer import TokenizerConfig, build_tokenizer


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
    sentence) with 1 and with 2 partitions, identically."""
    docs = [{"text": "Mr. Smith came home. He was tired! Was he? Yes."}, {"text": "   "},
            {"text": "One sentence only"}]
    corpus = write_jsonl(tmp_path / "s.jsonl", docs)
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / f"p{partitions}"), split_sentences=True,
                           append_eod=True, partitions=partitions, workers=2, chunk_bytes=16)
    stats = preprocess(cfg, gpt2)
    ds = IndexedDataset(stats.outputs[0])
    assert stats.outputs[0].endswith("_text_sentence") and stats.skipped_empty == 1
    sentences = ["Mr. Smith came home.", "He was tired!", "Was he?", "Yes.", "One sentence only"]
    expected = [gpt2.tokenize(s) for s in sentences]
    expected[3] += [gpt2.eod]
    expected[4] += [gpt2.eod]
    assert [ds[i].tolist() for i in range(len(ds))] == expected
    assert ds.document_indices.tolist() == [0, 4, 5]


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
    """--skip-invalid skips and counts every kind of bad line; blank and empty documents are skipped and counted."""
    lines = [b'{"text": "first"}\n'] + [bad for bad, _ in BAD_LINES] + [
        b"\n", b'{"text": ""}\n', b'{"text": "  \\n "}\n', b'{"text": "last"}\n']
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b"".join(lines))
    cfg = PreprocessConfig(input=[str(corpus)], output_prefix=str(tmp_path / "o"), skip_invalid=True)
    stats = preprocess(cfg, gpt2)
    assert (stats.skipped_invalid, stats.skipped_empty, stats.documents) == (5, 3, 4)
    ds = IndexedDataset(stats.outputs[0])
    assert [ds[i].tolist() for i in range(len(ds))] == [gpt2.tokenize("first"), gpt2.tokenize("last")]


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
    import subprocess
    import sys

    from data.conftest import PREPROCESS_TOOL

    line = json.dumps({"text": "In the beginning God created the heaven and the earth. " * 20}) + "\n"
    corpus = tmp_path / "big.jsonl"
    corpus.write_text(line * 40000, encoding="utf-8")  # ~45 MB: several seconds of work
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(PREPROCESS_TOOL), "--no-progress", "--input", str(corpus), "--output-prefix",
         str(out / "x"), "--workers", "2", "--partitions", str(partitions), "--log-interval", "100"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert "Processed" in proc.stderr.readline(), "the run did not start"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert _files(out) == []


def test_partition_spans_cover_every_line_once_in_order(tmp_path):
    """However files are cut into partitions and chunks, reading the spans yields every line exactly once, in
    order (lines cut by a span boundary belong to the span where they start)."""
    import random

    from megatron.data.preprocess import _plan_partitions, _read_chunks

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
