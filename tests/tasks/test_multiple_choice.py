"""Multiple-choice evaluation: accuracy and acc_norm against a naive loop (0-shot, few-shot from the file and from
--train-data, Winogrande's partial scoring), the few-shot draw, the readers of the original benchmark files and
their errors, per-file and pooled metrics, and DP=2 / TP=2 against one process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dist_utils import run_distributed
from megatron.tasks.mc_readers import McExample, hellaswag_preprocess, read_examples
from megatron.tasks.multiple_choice import (
    demonstration, draw_demonstrations, example_requests, fewshot_prefix, predict, predict_norm,
)
from test_zeroshot_gpt import load_lm, naive_scores, reshard_to_tp2, run_task

GENERIC = [
    {"context": "In the beginning God created the", "choices": ["heaven and the earth.", "light", "day"], "gold": 0},
    {"context": "And God said, Let there be", "choices": ["light", "a great many waters under the sky", "night"],
     "gold": 0, "id": "gen-2"},
    {"context": "And the earth was without form, and", "choices": ["void", "green", "the firmament of heaven"],
     "gold": 0},
    {"context": "And God called the light", "choices": ["Night", "Day", "the evening and the morning"], "gold": 1},
    {"context": "And the evening and the morning were the", "choices": ["first day", "sea", "light"], "gold": 0},
    {"context": "And God saw the light, that it was", "choices": ["bad", "good", "the waters of the deep"],
     "gold": 1},
    {"context": "And God divided the light from the",
     "choices": ["darkness", "waters which were under the firmament and above it"], "gold": 0},
    {"context": "And God made two great", "choices": ["lights", "fish of the sea and every living thing"], "gold": 0},
]
WINOGRANDE = [
    {"qID": "w1", "sentence": "God divided the light from the darkness because _ was good.", "option1": "the light",
     "option2": "the darkness", "answer": "1"},
    {"qID": "w2", "sentence": "The waters were under the firmament, so _ was above them.", "option1": "the firmament",
     "option2": "the waters", "answer": "1"},
    {"qID": "w3", "sentence": "And God called the dry land Earth, and _ he called Seas.", "option1": "the land",
     "option2": "the waters", "answer": 2},
    # The first question again with the other answer: whichever option the model prefers, one of the two is right.
    {"qID": "w4", "sentence": "God divided the light from the darkness because _ was good.", "option1": "the light",
     "option2": "the darkness", "answer": "2"},
]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm(gpt_checkpoint):
    return load_lm(gpt_checkpoint["load"])


def _naive_mc(lm, examples: list[McExample], prefixes: list[str]) -> tuple[float, float]:
    """(accuracy, accuracy_norm) by hand: each choice's continuation tokens are those of ``prompt + " " + choice``
    after the prompt's own tokens; predictions by numpy argmax of the sums and of the sums per character."""
    ctx, model = lm
    tok, correct, correct_norm = ctx.tokenizer, 0, 0
    for example, prefix in zip(examples, prefixes):
        pairs = []
        for context, continuation in example.pairs():
            head, whole = tok.tokenize(prefix + context), tok.tokenize(prefix + context + " " + continuation)
            assert whole[:len(head)] == head
            pairs.append((head, whole[len(head):]))
        logprobs = np.array([lp for lp, _ in naive_scores(model, pairs, 32, tok.eod, tok.vocab_size)])
        correct += int(np.argmax(logprobs) == example.gold)
        correct_norm += int(np.argmax(logprobs / np.array([len(c) for c in example.choices])) == example.gold)
    return correct / len(examples), correct_norm / len(examples)


@pytest.mark.parametrize("shots", ["0", "2", "2-train"])
def test_generic_mc_equals_naive(lm, gpt_checkpoint, tmp_path, shots):
    """--task MC reports the naive accuracy and acc_norm, 0-shot and 2-shot with demonstrations from the same file
    (never the example itself) or from --train-data (prompts beyond 32 tokens lose their start)."""
    data = _write_jsonl(tmp_path / "mc.jsonl", GENERIC)
    train = _write_jsonl(tmp_path / "train.jsonl", GENERIC[::-1])
    examples = read_examples(str(data), "generic")
    k = int(shots[0])
    argv = ["--task", "MC", "--valid-data", data, "--load", gpt_checkpoint["load"], "--eval-micro-batch-size", "3",
            "--num-fewshot", k]
    pool, exclude = examples, True
    if shots.endswith("train"):
        argv += ["--train-data", train]
        pool, exclude = read_examples(str(train), "generic"), False
    prefixes = ["".join(demonstration(pool[j]) + "\n\n"
                        for j in draw_demonstrations(len(pool), k, 1234, i, i if exclude else None))
                for i in range(len(examples))]
    result = run_task(*argv)
    accuracy, accuracy_norm = _naive_mc(lm, examples, prefixes)
    assert 0 < accuracy < 1 and 0 < accuracy_norm < 1  # the data separates right from wrong verdicts
    assert result.metrics == {"accuracy": accuracy, "accuracy_norm": accuracy_norm, "num_examples": len(GENERIC)}


def test_winogrande_partial_scoring_equals_naive(lm, gpt_checkpoint, tmp_path):
    """Winogrande scores the same continuation (the sentence after the blank) after two contexts (the sentence up
    to the blank with each option filled in); the verdict equals the naive loop."""
    data = _write_jsonl(tmp_path / "winogrande_dev.jsonl", WINOGRANDE)
    examples = read_examples(str(data), "winogrande")
    assert examples[0].pairs() == [("God divided the light from the darkness because the light", "was good."),
                                   ("God divided the light from the darkness because the darkness", "was good.")]
    result = run_task("--task", "MC", "--mc-format", "winogrande", "--valid-data", data, "--load",
                      gpt_checkpoint["load"], "--eval-micro-batch-size", "2")
    accuracy, _ = _naive_mc(lm, examples, [""] * len(examples))
    assert 0 < accuracy < 1
    assert result.metrics["accuracy"] == accuracy == result.metrics["accuracy_norm"]


def test_fewshot_draw_is_deterministic_and_excludes_the_example():
    """Demonstrations depend only on (seed, example index): the same in any order of calls, k distinct ones, never
    the example itself when drawn from its own file, another draw for another seed; the prompt is each
    demonstration ("context gold-choice") followed by a blank line; too small a pool is refused."""
    pool = [McExample(f"question {i}?", ("no", "yes"), i % 2) for i in range(6)]
    draws = [draw_demonstrations(6, 3, 1234, i, i) for i in range(6)]
    assert draws == [draw_demonstrations(6, 3, 1234, i, i) for i in reversed(range(6))][::-1]
    for i, draw in enumerate(draws):
        assert len(set(draw)) == 3 and i not in draw and all(0 <= j < 6 for j in draw)
    assert draws != [draw_demonstrations(6, 3, 99, i, i) for i in range(6)]
    assert len(draw_demonstrations(6, 6, 1234, 0, None)) == 6
    j = draw_demonstrations(6, 2, 1234, 4, 4)
    assert fewshot_prefix(pool, 2, 1234, 4, 4) == f"question {j[0]}? {pool[j[0]].choices[pool[j[0]].gold]}\n\n" \
                                                  f"question {j[1]}? {pool[j[1]].choices[pool[j[1]].gold]}\n\n"
    assert fewshot_prefix(pool, 0, 1234, 4, 4) == ""
    wino = McExample("A _", ("b.", "b."), 1, choice_contexts=("A x", "A y"))
    assert demonstration(wino) == "A y b."
    with pytest.raises(ValueError, match="--num-fewshot 3 needs at least 4 examples"):
        draw_demonstrations(3, 3, 1234, 0, 0)


def test_requests_and_predictions(lm):
    """Each choice is scored as " " + choice after the context (lm-eval's target delimiter); predictions take the
    first maximum, acc_norm divides by the choice's character length."""
    tok = lm[0].tokenizer
    (req,) = example_requests(tok, McExample("And God said", ("Let there be light",), 0))
    assert tok.detokenize(req.continuation) == " Let there be light"
    assert req.context == tuple(tok.tokenize("And God said"))
    assert predict([-3.0, -1.0, -1.0]) == 1
    assert predict_norm([-3.0, -1.0], ["abcdef", "a"]) == 0


# ---- readers ------------------------------------------------------------------------------------------------------
def _reader_cases(tmp: Path) -> dict[str, tuple[str, list[McExample]]]:
    hellaswag = _write_jsonl(tmp / "hellaswag_val.jsonl", [
        {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
         "ctx": "A man is sitting on a roof. he", "split": "val", "label": 3,
         "endings": ["is using wrap.", "is ripping tiles off.", "is holding a cube.", "starts pulling up roofing."]},
        {"ind": 4, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a grill [title] Scrub it.",
         "ctx_b": "", "label": "0", "endings": ["[step] Use a  brush.", "Paint it.", "Eat it.", "Sell it."]},
    ])
    piqa = _write_jsonl(tmp / "valid.jsonl", [
        {"id": "p1", "goal": "Dry a cup", "sol1": "Use a towel.", "sol2": "Use water."},
        {"goal": "Cut bread", "sol1": "Knife", "sol2": "Spoon"},
    ])
    (tmp / "valid-labels.lst").write_text("0\n1\n", encoding="utf-8")
    arc = _write_jsonl(tmp / "ARC-Easy-Dev.jsonl", [
        {"id": "a1", "question": {"stem": "Which is hot?", "choices": [{"text": "ice", "label": "A"},
                                                                       {"text": "fire", "label": "B"}]},
         "answerKey": "B"},
        {"id": "a2", "question": {"stem": "Count?", "choices": [{"text": "one", "label": "1"},
                                                                {"text": "two", "label": "2"},
                                                                {"text": "three", "label": "3"}]}, "answerKey": "3"},
    ])
    boolq = _write_jsonl(tmp / "dev.jsonl", [{"question": "is the sky blue", "title": "Sky", "answer": True,
                                              "passage": "The sky is blue."}])
    wino = _write_jsonl(tmp / "wino.jsonl", WINOGRANDE[2:3])
    race_dir = tmp / "RACE" / "dev" / "high"
    race_dir.mkdir(parents=True)
    _write_jsonl(race_dir / "2.txt", [{"answers": ["C"], "options": [["w", "x", "y", "z"]], "questions": ["Why?"],
                                       "article": "B.", "id": "high2.txt"}])
    _write_jsonl(race_dir / "1.txt", [{"answers": ["B", "A"], "options": [["a", "b", "c", "d"], ["e", "f", "g", "h"]],
                                       "questions": ["Who?", "The _ is"], "article": "A text.", "id": "high1.txt"}])
    q = "Question: {}\nAnswer:"
    return {
        "hellaswag": (hellaswag, [
            McExample("Roof shingle removal: A man is sitting on a roof. He", ("is using wrap.",
                      "is ripping tiles off.", "is holding a cube.", "starts pulling up roofing."), 3, "24"),
            McExample("Home and Garden: How to clean a grill. Scrub it.", (" Use a brush.", "Paint it.", "Eat it.",
                                                                           "Sell it."), 0, "4")]),
        "piqa": (piqa, [McExample(q.format("Dry a cup"), ("Use a towel.", "Use water."), 0, "p1"),
                        McExample(q.format("Cut bread"), ("Knife", "Spoon"), 1)]),
        "arc": (arc, [McExample(q.format("Which is hot?"), ("ice", "fire"), 1, "a1"),
                      McExample(q.format("Count?"), ("one", "two", "three"), 2, "a2")]),
        "boolq": (boolq, [McExample("The sky is blue.\nQuestion: is the sky blue?\nAnswer:", ("no", "yes"), 1)]),
        "winogrande": (wino, [McExample("And God called the dry land Earth, and ", ("he called Seas.",) * 2, 1, "w3",
                                        ("And God called the dry land Earth, and the land",
                                         "And God called the dry land Earth, and the waters"))]),
        "race": (race_dir, [
            McExample("Article: A text.\n\nQuestion: Who?\nAnswer:", ("a", "b", "c", "d"), 1, "high1.txt#0"),
            McExample("Article: A text.\n\nQuestion: The _ is\nAnswer:", ("e", "f", "g", "h"), 0, "high1.txt#1"),
            McExample("Article: B.\n\nQuestion: Why?\nAnswer:", ("w", "x", "y", "z"), 2, "high2.txt#0")]),
    }


def test_readers_give_the_expected_rows(tmp_path):
    """Each reader maps a tiny file in its benchmark's original layout to the expected contexts, choices and gold
    index: HellaSwag's label prefix, capitalized ctx_b and bracket clean-up; PIQA's separate labels file; ARC's
    letter and digit answer keys; BoolQ's no/yes; Winogrande's per-option contexts; RACE's one row per question
    over the sorted *.txt files of a directory."""
    for fmt, (path, expected) in _reader_cases(tmp_path).items():
        assert read_examples(str(path), fmt) == expected, fmt
    assert hellaswag_preprocess(" a [title] b [header] c  d ") == "a. b c d"


BAD_ROWS = [
    ("generic", {"context": "c", "choices": ["a", "b"]}, "missing key 'gold'"),
    ("generic", {"context": "c", "choices": ["a", "b"], "gold": 2}, r"gold 2 is outside the range of the 2 choices"),
    ("generic", {"context": "c", "choices": ["a"], "gold": 0}, "'choices' must be a list of at least two strings"),
    ("generic", '{"context": "c", ', "not valid JSON"),
    ("hellaswag", {"ctx": "c", "endings": ["a", "b"]}, "missing key 'label'"),
    ("hellaswag", {"ctx": "c", "endings": ["a", "b"], "label": 4}, "label 4 is outside the range"),
    ("arc", {"question": {"stem": "s"}, "answerKey": "A"}, r"\(in 'question'\): missing key 'choices'"),
    ("arc", {"question": {"stem": "s", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]},
             "answerKey": "E"}, "answerKey 'E' is outside the range of the choices"),
    ("boolq", {"passage": "p", "answer": True}, "missing key 'question'"),
    ("boolq", {"passage": "p", "question": "q", "answer": 3}, "answer 3 is outside the range"),
    ("winogrande", {"sentence": "a _ b", "option1": "x", "option2": "y"}, "missing key 'answer'"),
    ("winogrande", {"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "3"}, "answer '3' is outside"),
    ("winogrande", {"sentence": "a b", "option1": "x", "option2": "y", "answer": "1"}, "has no '_' blank"),
    ("race", {"article": "a", "questions": ["q"], "options": [["a", "b"]]}, "missing key 'answers'"),
    ("race", {"article": "a", "questions": ["q"], "options": [["a", "b"]], "answers": ["C"]},
     r"answers\[0\] \('C'\) 2 is outside the range"),
]
GOOD_ROW = {"generic": {"context": "c", "choices": ["a", "b"], "gold": 0},
            "hellaswag": {"ctx": "c", "endings": ["a", "b"], "label": 1},
            "arc": {"question": {"stem": "s", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]},
                    "answerKey": "A"},
            "boolq": {"passage": "p", "question": "q", "answer": False},
            "winogrande": {"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "2"},
            "race": {"article": "a", "questions": ["q"], "options": [["a", "b"]], "answers": ["B"]}}


@pytest.mark.parametrize("fmt, bad, message", BAD_ROWS, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_ROWS)])
def test_bad_rows_name_file_line_and_key(tmp_path, fmt, bad, message):
    """A missing key, a label outside the choices or invalid JSON is a ValueError naming file:line and the key."""
    path = _write_jsonl(tmp_path / ("f.txt" if fmt == "race" else "f.jsonl"), [GOOD_ROW[fmt], "", bad])
    with pytest.raises(ValueError, match=re.escape(f"{path}:3") + ".*" + message):
        read_examples(str(path), fmt)


def test_piqa_labels_file_errors(tmp_path):
    """PIQA needs <split>-labels.lst beside <split>.jsonl, one 0/1 label per question: a missing file, a count
    mismatch and a label outside 0/1 (named by labels file:line) are errors."""
    data = _write_jsonl(tmp_path / "valid.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b"}] * 2)
    with pytest.raises(ValueError, match="PIQA labels file .*valid-labels.lst not found"):
        read_examples(str(data), "piqa")
    labels = tmp_path / "valid-labels.lst"
    labels.write_text("0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has 1 labels but .* has 2 questions"):
        read_examples(str(data), "piqa")
    labels.write_text("0\n2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{labels}:2: label '2' is outside")):
        read_examples(str(data), "piqa")


def test_per_file_and_pooled_metrics_and_results_file(gpt_checkpoint, tmp_path):
    """Several --valid-data files are reported one by one and pooled over all their examples; --max-examples cuts
    each file; --results-file holds task, metrics (accuracy, accuracy_norm, num_examples) and per_file."""
    a = _write_jsonl(tmp_path / "a.jsonl", GENERIC)
    b = _write_jsonl(tmp_path / "b.jsonl", GENERIC[2:])
    out = tmp_path / "mc.json"
    result = run_task("--task", "MC", "--valid-data", a, b, "--load", gpt_checkpoint["load"], "--max-examples", "3",
                      "--results-file", out)
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["task"] == "MC" and set(saved["metrics"]) == {"accuracy", "accuracy_norm", "num_examples"}
    assert set(saved["per_file"]) == {str(a), str(b)} and saved["metrics"]["num_examples"] == 6
    for key in ("accuracy", "accuracy_norm"):
        pooled = sum(m[key] * m["num_examples"] for m in result.per_file.values()) / 6
        assert result.metrics[key] == pytest.approx(pooled, abs=1e-12)
    alone = run_task("--task", "MC", "--valid-data", b, "--load", gpt_checkpoint["load"], "--max-examples", "3")
    assert alone.metrics == result.per_file[str(b)] and alone.per_file == {}


# ---- DP=2 and TP=2 ------------------------------------------------------------------------------------------------
def _mc_argv(ckpt: str, generic: Path, wino: Path) -> list[list[str]]:
    return [["--task", "MC", "--valid-data", str(generic), "--load", ckpt, "--num-fewshot", "2",
             "--eval-micro-batch-size", "2"],
            ["--task", "MC", "--mc-format", "winogrande", "--valid-data", str(wino), "--load", ckpt]]


def _two_rank_body(rank: int, world_size: int, runs: list[list[str]]) -> list[dict]:
    return [run_task(*argv).metrics for argv in runs]


@pytest.mark.distributed
def test_dp2_and_tp2_match_one_process(gpt_checkpoint, tmp_path):
    """2-shot generic MC and Winogrande give the one-process metrics at DP=2 (examples split, few-shot draws per
    example) and at TP=2 (resharded checkpoint), on every rank."""
    generic = _write_jsonl(tmp_path / "mc.jsonl", GENERIC + GENERIC[:3])  # 9: uneven split over two ranks
    wino = _write_jsonl(tmp_path / "wino.jsonl", WINOGRANDE)
    single = [run_task(*argv).metrics for argv in _mc_argv(gpt_checkpoint["load"], generic, wino)]
    tp2 = reshard_to_tp2(gpt_checkpoint["load"], tmp_path / "tp2")
    runs = _mc_argv(gpt_checkpoint["load"], generic, wino)
    runs += [argv + ["--tensor-model-parallel-size", "2"] for argv in _mc_argv(tp2, generic, wino)]
    for per_rank in run_distributed(_two_rank_body, 2, runs, timeout_s=300):
        assert per_rank == single + single  # accuracies are ratios of counts: exact


# ---- averaging ----------------------------------------------------------------------------------------------------
def test_average_task_results_picks_the_papers_metric(tmp_path, capsys):
    """tools/average_task_results.py averages our results files (task = file name) and lm-eval's output with the
    paper's metric per task (acc_norm for hellaswag, accuracy for winogrande, f1 for record, lambada_openai as
    lambada), skips files without one (WikiText), and refuses a task reported twice."""
    from training.conftest import load_entry_script

    tool = load_entry_script("tools/average_task_results.py")
    (tmp_path / "hellaswag.json").write_text(json.dumps({"task": "MC", "metrics": {"accuracy": 0.3,
                                                                                   "accuracy_norm": 0.4}}))
    (tmp_path / "winogrande.json").write_text(json.dumps({"task": "MC", "metrics": {"accuracy": 0.5,
                                                                                    "accuracy_norm": 0.9}}))
    (tmp_path / "wikitext.json").write_text(json.dumps({"task": "WIKITEXT103", "metrics": {"ppl": 30.0}}))
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "results.json").write_text(json.dumps({"results": {
        "record": {"f1,none": 0.7, "em,none": 0.1}, "lambada_openai": {"acc,none": 0.6, "perplexity,none": 9.0}}}))
    assert tool.main(["--results-dir", str(tmp_path), "--output", str(tmp_path / "avg.md")]) == 0
    table = (tmp_path / "avg.md").read_text()
    assert "| hellaswag | accuracy_norm | 40.00 |" in table and "| lambada | acc | 60.00 |" in table
    assert "| record | f1 | 70.00 |" in table and "| winogrande | accuracy | 50.00 |" in table
    assert "**average (4 tasks)** | | **55.00**" in table and "wikitext.json" in table
    (tmp_path / "lambada.json").write_text(json.dumps({"task": "LAMBADA", "metrics": {"accuracy": 0.6}}))
    assert tool.main(["--results-dir", str(tmp_path)]) == 2
    assert "task lambada is reported twice" in capsys.readouterr().err
