"""GLUE readers on hand-written files in the distributed formats, their errors, the packing rule, the metrics, the
proxy GLUE generator and the GLUE-score aggregation of ``tools/glue_average.py``."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.tasks.glue import (
    GLUE_FORMATS, PackedDataset, build_glue_dataset, clean_text, glue_metrics, pack_pair, read_glue_tsv,
)
from megatron.tasks.glue_summary import summarize_dir
from megatron.tasks.proxy_glue import GLUE_DIRS, write_proxy_glue

REPO = Path(__file__).resolve().parents[2]
CLS, SEP, PAD = 2, 3, 0
WORDS = "the lord said unto moses go light darkness water and".split()


def _tsv(path: Path, rows: list[list[str]]) -> str:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _tokenizer(tmp_path: Path):
    """A lower-case WordPiece tokenizer over a hand-made vocabulary: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    return build_tokenizer(TokenizerConfig(tokenizer_type="BertWordPieceLowerCase", vocab_file=str(vocab)))


MNLI_HEAD = ["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2"]


def test_every_reader_takes_the_distributed_format(tmp_path):
    """Each task's columns, header handling and labels: MNLI train (12 columns) and dev (16) with Megatron's
    contradiction/entailment/neutral = 0/1/2 from the last column; QQP's short row skipped and counted; QNLI/RTE
    entailment = 0; SST-2 and MRPC headers; CoLA without header (its first line is data); STS-B float scores kept."""
    pad8 = ["x"] * 8
    cases = {
        "MNLI": ([MNLI_HEAD + ["label1", "gold_label"], [*pad8, "a0", "b0", "neutral", "contradiction"],
                  [*pad8, "a1", "b1", "x", "entailment"], [*pad8, "a2", "b2", "x", "neutral"]],
                 ["a0", "a1", "a2"], ["b0", "b1", "b2"], [0, 1, 2]),
        "QQP": ([["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["0", "1", "2", "q a", "q b", "1"],
                 ["1", "3", "4", "broken row"], ["2", "5", "6", "q c", "q d", "0"]],
                ["q a", "q c"], ["q b", "q d"], [1, 0]),
        "QNLI": ([["index", "question", "sentence", "label"], ["0", "why", "because", "not_entailment"],
                  ["1", "who", "him", "entailment"]], ["why", "who"], ["because", "him"], [1, 0]),
        "RTE": ([["index", "sentence1", "sentence2", "label"], ["0", "p", "h", "entailment"]], ["p"], ["h"], [0]),
        "SST2": ([["sentence", "label"], ["good film", "1"], ["bad film", "0"]], ["good film", "bad film"], None,
                 [1, 0]),
        "COLA": ([["gj04", "1", "", "The boy ran."], ["gj04", "0", "*", "Ran boy the."]],
                 ["The boy ran.", "Ran boy the."], None, [1, 0]),
        "MRPC": ([["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["1", "11", "12", "s1", "s2"],
                  ["0", "13", "14", "s3", "s4"]], ["s1", "s3"], ["s2", "s4"], [1, 0]),
        "STSB": ([["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                   "score"], ["0", "g", "f", "y", "0", "s", "s", "a man", "a person", "3.8"],
                  ["1", "g", "f", "y", "1", "s", "s", "x", "y", "0.000"]], ["a man", "x"], ["a person", "y"],
                 [3.8, 0.0]),
    }
    dev16 = [MNLI_HEAD + ["label1", "l2", "l3", "l4", "l5", "gold_label"], [*pad8, "a", "b", *["x"] * 5, "neutral"]]
    assert read_glue_tsv("MNLI", _tsv(tmp_path / "dev.tsv", dev16)).labels.tolist() == [2]
    for task, (rows, a, b, labels) in cases.items():
        ex = read_glue_tsv(task, _tsv(tmp_path / f"{task}.tsv", rows))
        assert ex.text_a == a and ex.text_b == b, task
        assert ex.labels.tolist() == pytest.approx(labels), task
        assert ex.labels.dtype == (np.float32 if task == "STSB" else np.int64), task
    assert read_glue_tsv("QQP", str(tmp_path / "QQP.tsv")).skipped == 1
    assert read_glue_tsv("SST2", str(tmp_path / "SST2.tsv"), max_examples=1).text_a == ["good film"]


@pytest.mark.parametrize("task, rows, message", [
    ("SST2", [["sentence", "label"], ["ok", "1"], ["bad", "2"]], r"x\.tsv:3: label '2' in column 2 is not a SST2"),
    ("RTE", [["index", "sentence1", "sentence2", "label"], ["0", "a", "entailment"]],
     r"x\.tsv:2: expected 4 tab-separated columns, found 3"),
    ("MNLI", [MNLI_HEAD + ["label1", "gold_label"], ["x"] * 11], r"x\.tsv:2: expected 12 .*\(as the header\)"),
    ("MNLI", [MNLI_HEAD, ["x"] * 10], r"x\.tsv:1: the MNLI header has 10 columns, no label column; a GLUE test"),
    ("COLA", [["index", "sentence"], ["0", "a"]], r"x\.tsv:1: expected 4 .*found 2 \(COLA files have no header"),
    ("SST2", [["index", "sentence"], ["0", "a"]], r"x\.tsv:1: the header starts with 'index'.*test file"),
    ("STSB", [["h"] * 10, ["0"] * 9 + ["high"]], r"x\.tsv:2: score 'high' in column 10 is not a number"),
    ("STSB", [["h"] * 10, ["0"] * 9 + ["5.5"]], r"x\.tsv:2: score 5\.5 .* outside \[0\.0, 5\.0\]"),
    ("MNLI", [MNLI_HEAD + ["label1", "gold_label"], ["x"] * 11 + ["entailed"]], r"x\.tsv:2: label 'entailed'"),
    ("RTE", [["index", "sentence1", "sentence2", "label"]], r"x\.tsv: no RTE examples in this file"),
])
def test_reader_errors_name_file_line_and_fix(tmp_path, task, rows, message):
    """A label outside the task's set, a missing column (with the expected count), a test file (no labels), a
    bad STS-B score and a file without examples fail with file:line and what is wrong."""
    with pytest.raises(ValueError, match=message):
        read_glue_tsv(task, _tsv(tmp_path / "x.tsv", rows))


def test_packing_follows_megatron_truncation_rule():
    """``[CLS] A [SEP] B [SEP]`` (types 0 then 1); at or over seq_length cut to seq_length - 1 from the tail (B first,
    then A) and close with [SEP] (type 1 with a B, 0 without); a single segment gets no second [SEP] unless cut."""
    a, b = [10, 11, 12], [20, 21]
    assert pack_pair(a, b, 10, CLS, SEP) == ([CLS, 10, 11, 12, SEP, 20, 21, SEP], 5)
    assert pack_pair(a, b, 8, CLS, SEP) == ([CLS, 10, 11, 12, SEP, 20, 21, SEP], 5)  # framed 7 < 8: no cut
    assert pack_pair(a, b, 7, CLS, SEP) == ([CLS, 10, 11, 12, SEP, 20, SEP], 5)  # framed 7 >= 7: B loses a token
    assert pack_pair(a, b, 4, CLS, SEP) == ([CLS, 10, 11, SEP], 3)  # cut into A: the closing [SEP] is type 1
    assert pack_pair(a, None, 10, CLS, SEP) == ([CLS, 10, 11, 12, SEP], 5)
    assert pack_pair(a, None, 5, CLS, SEP) == ([CLS, 10, 11, 12, SEP], 5)  # 5 >= 5: cut to 4, then [SEP]
    assert pack_pair(a, None, 4, CLS, SEP) == ([CLS, 10, 11, SEP], 4)
    assert pack_pair(a, [], 10, CLS, SEP) == ([CLS, 10, 11, 12, SEP, SEP], 5)  # an empty B still closes with [SEP]

    ds = PackedDataset([[CLS, 10, SEP, 20, SEP], [CLS, 11, 12, SEP]], [3, 4], np.array([1, 0]), 8, PAD)
    item = ds[0]
    assert item["tokens"].tolist() == [CLS, 10, SEP, 20, SEP, PAD, PAD, PAD]
    assert item["types"].tolist() == [0, 0, 0, 1, 1, PAD, PAD, PAD]  # padded types are the pad id, as Megatron
    assert item["padding_mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    batch = ds.collate([ds[0], ds[1]])  # cut to the longest real length
    assert batch["tokens"].tolist() == [[CLS, 10, SEP, 20, SEP], [CLS, 11, 12, SEP, PAD]]
    assert batch["labels"].tolist() == [1, 0]
    both = PackedDataset.concat([ds, ds])
    assert len(both) == 4 and both[3]["tokens"].tolist() == ds[1]["tokens"].tolist()


def test_dataset_cleans_tokenizes_and_packs(tmp_path):
    """A GLUE file becomes packed ids through clean_text and the tokenizer (lower-cased, [UNK] for unknown words)."""
    assert clean_text("a\nb   c . . d") == "a b c.. d"
    path = _tsv(tmp_path / "rte.tsv", [["index", "sentence1", "sentence2", "label"],
                                       ["0", "The  LORD said", "go  unto moses zzz", "not_entailment"]])
    tok = _tokenizer(tmp_path)
    ds = build_glue_dataset("RTE", path, tok, 16)
    ids = [int(i) for i in ds[0]["tokens"] if i != PAD]
    assert [tok.inv_vocab[i] for i in ids] == ["[CLS]", "the", "lord", "said", "[SEP]", "go", "unto", "moses",
                                               "[UNK]", "[SEP]"]
    assert ds[0]["types"][:10].tolist() == [0] * 5 + [1] * 5 and ds.labels.tolist() == [1]


def test_glue_metrics_per_task():
    """Accuracy with counts everywhere; F1 for QQP/MRPC, Matthews for CoLA; STS-B Pearson, Spearman, their mean."""
    pred, gold = np.array([1.0, 0, 1, 1]), np.array([1, 0, 0, 1])
    assert glue_metrics("SST2", pred, gold) == {"accuracy": 0.75, "correct": 3.0, "total": 4.0}
    assert glue_metrics("MRPC", pred, gold)["f1"] == pytest.approx(0.8)
    assert glue_metrics("COLA", pred, gold)["mcc"] == pytest.approx(1 / np.sqrt(3))
    m = glue_metrics("STSB", np.array([0.5, 1.0, 4.0]), np.array([1.0, 2.0, 3.0]))
    assert m["spearman"] == pytest.approx(1.0) and m["corr"] == pytest.approx((m["pearson"] + 1.0) / 2)


def test_proxy_glue_files_read_back(tmp_path):
    """tools/make_proxy_glue.py writes all eight tasks in the GLUE layout and formats; every file reads back through
    its task's reader with both (all three for MNLI) labels present; STS-B scores span the range."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_proxy_glue.py"), "--output-dir",
                           str(tmp_path), "--train-size", "30", "--dev-size", "12"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for task, folder in GLUE_DIRS.items():
        names = ["train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"] if task == "MNLI" else ["train.tsv", "dev.tsv"]
        for name in names:
            ex = read_glue_tsv(task, str(tmp_path / folder / name))
            assert len(ex.labels) == (30 if name == "train.tsv" else 12), (task, name)
            if GLUE_FORMATS[task].labels is None:
                assert ex.labels.min() < 2.0 < 4.0 < ex.labels.max(), name
            else:
                assert set(ex.labels.tolist()) == set(GLUE_FORMATS[task].labels.values()), (task, name)
    assert (tmp_path / "CoLA" / "train.tsv").read_text().split("\n")[0].split("\t")[0] == "kjv"  # no header
    write_proxy_glue(str(tmp_path / "again"), None, 30, 12)  # the same seed draws the same files
    assert (tmp_path / "again" / "MRPC" / "dev.tsv").read_text() == (tmp_path / "MRPC" / "dev.tsv").read_text()
    with pytest.raises(ValueError, match="unknown proxy task"):
        write_proxy_glue(str(tmp_path), ["WNLI"])


def _result(path: Path, task: str, lr: float, seed: int, epochs: list[dict]) -> None:
    path.write_text(json.dumps({"task": task, "metrics": epochs[-1]["metrics"],
                                "details": {"lr": lr, "seed": seed, "epochs": epochs}}), encoding="utf-8")


def test_glue_average_matches_hand_computation(tmp_path):
    """Per seed the best epoch, per task median_high over seeds, MNLI m/mm of the median seed, and the mean of the
    nine numbers x100; QQP/MRPC by accuracy unless --qqp-mrpc-metric f1; another lr is summarized separately."""
    def ep(i, **m):
        return {"epoch": i, "metrics": m, "per_file": {}}

    # MNLI: pooled accuracy picks the epoch; seeds' best pooled = 0.80 / 0.84 / 0.82 -> median_high 0.82 (seed 3).
    for seed, (pooled, m, mm) in enumerate([(0.80, 0.81, 0.79), (0.84, 0.85, 0.83), (0.82, 0.83, 0.81)], start=1):
        worse = {"epoch": 1, "metrics": {"accuracy": pooled - 0.1},
                 "per_file": {"dev-matched": {"accuracy": 0.0}, "dev-mismatched": {"accuracy": 0.0}}}
        best = {"epoch": 2, "metrics": {"accuracy": pooled},
                "per_file": {"dev-matched": {"accuracy": m}, "dev-mismatched": {"accuracy": mm}}}
        _result(tmp_path / f"MNLI_lr2e-5_seed{seed}.json", "MNLI", 2e-5, seed, [worse, best])
    # Two seeds: median_high of [0.90, 0.86] is 0.90.
    _result(tmp_path / "QQP_lr2e-5_seed1.json", "QQP", 2e-5, 1, [ep(1, accuracy=0.90, f1=0.70)])
    _result(tmp_path / "QQP_lr2e-5_seed2.json", "QQP", 2e-5, 2, [ep(1, accuracy=0.86, f1=0.80)])
    _result(tmp_path / "QNLI_lr2e-5_seed1.json", "QNLI", 2e-5, 1, [ep(1, accuracy=0.5), ep(2, accuracy=0.9)])
    _result(tmp_path / "SST2_lr2e-5_seed1.json", "SST2", 2e-5, 1, [ep(1, accuracy=0.92)])
    _result(tmp_path / "COLA_lr2e-5_seed1.json", "COLA", 2e-5, 1, [ep(1, accuracy=0.99, mcc=0.55)])
    _result(tmp_path / "STSB_lr2e-5_seed1.json", "STSB", 2e-5, 1, [ep(1, pearson=0.9, spearman=0.88)])
    _result(tmp_path / "MRPC_lr2e-5_seed1.json", "MRPC", 2e-5, 1, [ep(1, accuracy=0.84, f1=0.88)])
    # Hand-made file without details: lr and seed from the name.
    (tmp_path / "RTE_lr2e-5_seed1.json").write_text(json.dumps({"task": "RTE", "metrics": {"accuracy": 0.66}}))
    _result(tmp_path / "RTE_lr3e-5_seed1.json", "RTE", 3e-5, 1, [ep(1, accuracy=0.70)])
    (tmp_path / "lambada.json").write_text(json.dumps({"task": "LAMBADA", "metrics": {"accuracy": 0.1}}))

    nine = [83, 81, 90, 90, 92, 55, 88, 84, 66]  # m, mm, QQP, QNLI, SST-2, CoLA, STS-B, MRPC, RTE
    summaries = summarize_dir(tmp_path)
    assert sorted(summaries) == ["2e-05", "3e-05"]
    s = summaries["2e-05"]
    assert s["average"] == pytest.approx(sum(nine) / 9)
    assert s["tasks"]["MNLI"]["median_seed"] == 3 and s["tasks"]["MNLI"]["best_epochs"] == [2, 2, 2]
    assert s["tasks"]["QQP"]["stdev"] == pytest.approx(statistics.stdev([90.0, 86.0]))
    assert summaries["3e-05"]["average"] is None and "MNLI-m" in summaries["3e-05"]["missing"]
    f1 = summarize_dir(tmp_path, lr=2e-5, pair_metric="f1")["2e-05"]
    assert f1["entries"]["QQP"] == pytest.approx(80.0) and f1["entries"]["MRPC"] == pytest.approx(88.0)

    proc = subprocess.run([sys.executable, str(REPO / "tools" / "glue_average.py"), str(tmp_path), "--lr", "2e-5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"| {sum(nine) / 9:.2f} |" in proc.stdout
    written = json.loads((tmp_path / "glue_average.json").read_text())
    assert written["2e-05"]["average"] == pytest.approx(sum(nine) / 9)
