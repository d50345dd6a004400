"""Tests of megatron.reproduce.report: tables, claim judging and plots over hand-made results dicts (no training)."""

from __future__ import annotations

import os
import re

import pytest

from megatron.reproduce.paper import cases_of, runs_of
from megatron.reproduce.report import judge_claims, plot_all, render_claims, render_report, render_tables

BASE_TOKENS = {"gpt": 1_048_576, "bert": 524_288}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results(tables=(1, 3, 7), seeds=(1234, 1235), curves=False) -> dict:
    """A results dict in the harness's schema: every run done on every seed with 0-shot 30.0/30.4 (30.2 ± 0.2),
    10-shot 33.0/33.2 (33.1 ± 0.1), loss 4.1/4.3, data and schedule tokens at the run's nominal fraction."""
    cases = cases_of(list(tables))
    runs = {}
    for spec in runs_of(cases):
        tokens = round(BASE_TOKENS[spec.family] * spec.data_fraction)
        by_seed = {}
        for i, seed in enumerate(seeds):
            command = ["python", "pretrain_gpt.py", "--seed", str(seed), "--run", spec.key]
            record = {"status": "done", "command": command,
                      "wall_time_s": 123.4, "steps": 512, "data_tokens": tokens, "schedule_tokens": tokens,
                      "metrics": {"zero_shot": 30.0 + 0.4 * i, "few_shot": 33.0 + 0.2 * i, "val_loss": 4.1 + 0.2 * i,
                                  "ppl": 16.0 + 0.1 * i, "glue": None,
                                  "tasks": {"lastword_mc": {"zero_shot": 40.0},
                                            "next_sentence_mc": {"zero_shot": 20.0}}}}
            if curves:
                record["curves"] = {
                    "iteration": [0, 10, 20], "consumed_tokens": [0, 5000, 10000], "wall_time_s": [0, 1.0, 2.0],
                    "val_iteration": [10, 20], "val_tokens": [5000, 10000], "val_wall_time_s": [1.0, 2.0],
                    "val_loss": [5.0 - i * 0.1, 4.5 - i * 0.1],
                    "difficulty": {m: [1, 50, 100] for m in spec.cl},
                    "ltd_kept_tokens": [16, 32, 64] if spec.ltd else []}
            by_seed[str(seed)] = record
        runs[spec.key] = {"spec": {"family": spec.family, "data_fraction": spec.data_fraction, "cl": list(spec.cl),
                                   "ltd": spec.ltd, "match_baseline_data": spec.match_baseline_data,
                                   "finetune": spec.finetune, "label": spec.label}, "seeds": by_seed}
    return {"scale": "cpu", "seeds": list(seeds), "tables": list(tables), "created": "2026-12-03T15:00:00Z",
            "machine": "2-core Xeon, CPU", "baseline_tokens": dict(BASE_TOKENS), "runs": runs,
            "cases": [{"table": c.table, "number": c.number, "name": c.name, "run": c.run.key,
                       "paper_data": c.paper_data, "paper": dict(c.paper), "paper_time_h": c.paper_time_h}
                      for c in cases],
            "proxy_tasks": {"lastword_mc": "pick the true last word", "next_sentence_mc": "pick the next sentence"}}


def _set(results: dict, run: str, metric: str, values: list) -> None:
    """Give ``run`` one value of ``metric`` per seed, in seed order."""
    for seed, value in zip(results["seeds"], values):
        results["runs"][run]["seeds"][str(seed)]["metrics"][metric] = value


def _section(text: str, heading: str) -> list[str]:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None].splitlines()


def _row(lines: list[str], label: str) -> list[str]:
    row = next(line for line in lines if line.startswith(f"| {label} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def _note(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("*Measured"))


def _claim(judgements: list[dict], table: int, first: int, second: int) -> dict:
    return next(j for j in judgements if (j["table"], j["first"], j["second"]) == (table, first, second))


def test_tables_follow_the_paper_layout_with_measured_and_paper_numbers():
    """Each table gets a `## Table N` section with one `(n) name` row per paper case, measured mean ± half-range
    beside the paper's numbers, "—" for a pending run and "failed" for a failed one."""
    results = _results()
    pending = results["runs"]["gpt_voc+reshape_d100"]["seeds"]
    pending["1234"]["status"] = "pending"
    del pending["1235"]
    results["runs"]["gpt_base_ltd_d50"]["seeds"]["1234"] |= {"status": "failed", "error": "boom"}
    results["runs"]["gpt_base_ltd_d50"]["seeds"]["1235"] |= {"status": "failed", "error": "boom"}
    text = render_tables(results)

    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        line for line in text.splitlines() if re.match(r"## Table (1|3|7): \S", line)]
    t1 = _section(text, "## Table 1:")
    assert t1[2].startswith("| **Case** | **Data** | **Steps** | **Wall time** |")
    rows = [line for line in t1 if line.startswith("| (")]
    assert [r.split("|")[1].strip()[:3] for r in rows] == [f"({n})" for n in range(1, 9)]
    base = _row(t1, "(1) Baseline")
    assert base[1:4] == ["100% (1.05M tok)", "512", "02:03"]
    assert base[4:7] == ["30.2 ± 0.2", "33.1 ± 0.1", "4.200 ± 0.100"]
    assert base[7:] == ["300B", "42.5", "44.0"]
    assert _row(t1, "(7) Baseline")[1] == "67% (699k tok)"
    assert _row(t1, "(6) CL combining (3) and (4)")[1:7] == ["—"] * 6
    assert "2 seeds (1234, 1235)" in _note(t1) and "[lastword_mc](#task-lastword_mc)" in _note(t1)

    t3 = _section(text, "## Table 3:")
    assert "**Paper avg 0-shot acc (%)**" in t3[2] and "10-shot" not in t3[2]
    assert _row(t3, "(4) Random-LTD at the baseline's data tokens (control)")[-2:] == ["= (1)", "not in paper"]
    t7 = _section(text, "## Table 7:")
    assert _row(t7, "(1) Baseline")[8] == "260hr"
    assert _row(t7, "(7) random-LTD")[1:5] == ["failed"] * 4


def test_partial_seeds_and_schedule_token_accounting_in_cells():
    """A run with one of two seeds done is shown over that seed and says so; a random-LTD run whose schedule
    counted fewer tokens than it read shows both fractions; times past an hour read h:mm:ss."""
    results = _results(tables=(3,))
    ltd = results["runs"]["gpt_base_ltd_d100"]["seeds"]
    for record in ltd.values():
        record |= {"data_tokens": round(1.1 * BASE_TOKENS["gpt"]), "wall_time_s": 3725}
    ltd["1235"]["status"] = "pending"
    row = _row(render_tables(results).splitlines(), "(2) Random-LTD *(1/2 seeds)*")
    assert row[1] == "110% data tok / 100% sched tok (1.15M tok)"
    assert row[3] == "1:02:05"
    assert row[4] == "30.0 ± 0.0"


def test_claim_verdicts_hold_within_noise_does_not_hold_and_not_measured():
    """`beats` holds only beyond the noise (the larger seed half-range), is "within noise" inside it and fails
    below it; `matches` tolerates a deficit within the noise; a pending case makes the claim "not measured"."""
    results = _results(tables=(1,))
    _set(results, "gpt_trunc_d100", "zero_shot", [31.0, 31.4])      # case 2: +1.0 vs 30.2 ± 0.2: holds
    _set(results, "gpt_trunc_d100", "few_shot", [34.0, 34.2])
    _set(results, "gpt_reshape_d100", "zero_shot", [30.1, 30.5])     # case 3: +0.1 within noise 0.2
    _set(results, "gpt_voc_d100", "zero_shot", [29.0, 29.2])         # case 4: -1.1: does not hold
    _set(results, "gpt_voc+trunc_d67", "zero_shot", [29.9, 30.3])    # case 8 vs 1: -0.1 within noise 0.2
    results["runs"]["gpt_voc+reshape_d100"]["seeds"]["1235"]["status"] = "pending"
    results["runs"]["gpt_voc+reshape_d100"]["seeds"]["1234"]["status"] = "failed"
    judged = judge_claims(results)

    assert {j["table"] for j in judged} == {1} and len(judged) == 7
    every_cl = [j for j in judged if j["group"] == judged[0]["group"]]
    assert [j["first"] for j in every_cl] == [2, 3, 4, 5, 6]
    assert all(j["text"].startswith("Every CL metric beats") for j in every_cl)
    case2 = _claim(judged, 1, 2, 1)
    assert case2["verdict"] == "holds"
    assert case2["metrics"][0]["diff"] == pytest.approx(1.0) and case2["metrics"][0]["noise"] == pytest.approx(0.2)
    assert _claim(judged, 1, 3, 1)["verdict"] == "within noise"
    assert _claim(judged, 1, 4, 1)["verdict"] == "does not hold"
    assert _claim(judged, 1, 5, 1)["verdict"] == "within noise"  # identical values: diff 0 is no win
    case6 = _claim(judged, 1, 6, 1)
    assert case6["verdict"] == "not measured" and "case 6 failed" in case6["metrics"][0]["reason"]
    matches = _claim(judged, 1, 8, 1)
    assert [m["verdict"] for m in matches["metrics"]] == ["holds (within noise)", "holds"]
    assert matches["verdict"] == "holds" and matches["data_ratio"] == pytest.approx(2 / 3, abs=1e-6)

    text = render_claims(judged)
    assert text.startswith("## Claims")
    assert "- **Does not hold** (1 of 5 comparisons hold) — Every CL metric beats" in text
    assert ("**Holds** — CL (trunc + voc) with 67% of the data matches the baseline with 100% (case 8 vs 1): "
            "0-shot 30.1 ± 0.2 vs 30.2 ± 0.2 (-0.1, noise 0.2: holds (within noise)); 10-shot 33.1 ± 0.1 vs "
            "33.1 ± 0.1 (+0.0, noise 0.1: holds); data tokens: case 8 read 67% as many as case 1") in text


def test_single_seed_has_no_noise_and_says_so():
    """With one seed the spread is 0, any positive difference decides a "beats", and both the table note and the
    claim text say "1 seed"."""
    results = _results(tables=(1,), seeds=(1234,))
    _set(results, "gpt_voc+trunc_d67", "zero_shot", [30.1])
    _set(results, "gpt_voc+trunc_d67", "few_shot", [33.1])
    judged = judge_claims(results)
    case8 = _claim(judged, 1, 8, 7)
    assert case8["single_seed"] and case8["metrics"][0]["noise"] == 0 and case8["verdict"] == "holds"
    assert "1 seed" in _note(_section(render_tables(results), "## Table 1:"))
    text = render_claims(judged)
    assert "noise 0: 1 seed, no spread: holds" in text and "*1 seed: no noise estimate" in text


def test_lower_is_better_metric_flips_the_sign():
    """Table 6 compares perplexity, where lower is better: random-LTD's lower PPL makes "beats" hold, a higher one
    makes it fail, and the text shows the raw difference with the direction named."""
    results = _results(tables=(6,))
    _set(results, "gpt_base_ft_d100", "ppl", [16.10, 16.12])
    _set(results, "gpt_base_ltd_ft_d100", "ppl", [15.89, 15.91])
    (claim,) = judge_claims(results)
    assert claim["verdict"] == "holds" and claim["metrics"][0]["diff"] == pytest.approx(0.21)
    assert "PPL (lower is better) 15.90 ± 0.01 vs 16.11 ± 0.01 (-0.21, noise 0.01: holds)" in render_claims([claim])
    assert "held-out loss" not in render_tables(results)  # a fine-tuning table shows its PPL, not a pretraining loss
    _set(results, "gpt_base_ltd_ft_d100", "ppl", [16.5, 16.5])
    assert judge_claims(results)[0]["verdict"] == "does not hold"


def test_random_ltd_claims_restate_the_data_token_accounting():
    """A claim with a random-LTD case also states, against the baseline, the data tokens that case actually read
    beside its nominal (schedule) fraction, since the schedule counts layer-averaged tokens."""
    results = _results(tables=(3,))
    for record in results["runs"]["gpt_base_ltd_d67"]["seeds"].values():
        record["data_tokens"] = round(0.74 * BASE_TOKENS["gpt"])
    claim = _claim(judge_claims(results), 3, 3, 1)
    assert claim["data_ratio"] == pytest.approx(0.74, abs=1e-6)
    assert claim["accounting"] == ("data tokens: case 3 read 74% as many as case 1; case 3 read 74% of the "
                                   "baseline's data tokens (nominal 67%; its schedule counted 67% in layer-averaged "
                                   "tokens)")
    assert "baseline's data tokens" not in _claim(judge_claims(_results(tables=(1,))), 1, 8, 1)["accounting"]


def test_plots_are_written_atomically_and_only_with_data(tmp_path):
    """plot_all writes one valid PNG per plot the curves support, returns exactly those paths, leaves no temporary
    files, and writes nothing when no run has curves."""
    results = _results(tables=(1, 3), curves=True)
    out = tmp_path / "plots"
    written = plot_all(results, str(out))
    names = ["table1_loss_vs_tokens.png", "table1_loss_vs_time.png", "table3_loss_vs_tokens.png",
             "table3_loss_vs_time.png", "curricula.png", "random_ltd_kept_tokens.png"]
    assert written == [str(out / n) for n in names]
    assert sorted(os.listdir(out)) == sorted(names)
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC

    only_cl = _results(tables=(1,), curves=True)  # no random-LTD run, so no kept-token plot
    assert "random_ltd_kept_tokens.png" not in [os.path.basename(p) for p in plot_all(only_cl, str(tmp_path / "cl"))]
    assert plot_all(_results(tables=(1,)), str(tmp_path / "none")) == []
    assert not (tmp_path / "none").exists()


def test_report_has_every_section_and_the_rerun_commands():
    """render_report carries provenance, tables, claims, the proxy-task list (link targets of the table notes), the
    plot list and, folded, each run's first-seed command and any failed seed's error."""
    results = _results(tables=(3,), curves=True)
    results["runs"]["gpt_base_ltd_d67"]["seeds"]["1235"] |= {"status": "failed", "error": "Traceback\nOOM"}
    text = render_report(results)
    assert text.startswith("# ") and "Scale `cpu` · seeds 1234, 1235 · machine: 2-core Xeon, CPU" in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Table 3: " + headings[0].split(": ", 1)[1], "## Claims", "## Proxy tasks", "## Plots",
                        "## Commands"]
    assert '<a id="task-lastword_mc"></a>**lastword_mc**: pick the true last word' in text
    assert "- [random_ltd_kept_tokens.png](random_ltd_kept_tokens.png)" in text
    assert "python pretrain_gpt.py --seed 1234 --run gpt_base_ltd_d67" in text
    assert "seed 1235 failed: `OOM`" in text
    assert "<details>" in text and "</details>" in text
    assert "- [x.png](x.png)" in render_report(results, plot_paths=["out/x.png"])
    assert "- [y.png](y.png)" in render_report(results | {"plots": ["y.png"]})


def test_commands_render_as_argv_or_as_recorded_shell_lines():
    """A command recorded as argv is shell-quoted onto one line; one recorded as whole shell lines (the harness's
    commands.sh) is shown line by line, unquoted."""
    results = _results(tables=(6,), seeds=(1234,))
    ft = results["runs"]["gpt_base_ft_d100"]["seeds"]["1234"]
    ft["command"] = ["python tools/preprocess_data.py --input 'a b.jsonl'", "python pretrain_gpt.py --finetune"]
    results["runs"]["gpt_base_d100"]["seeds"]["1234"]["command"] = ["python", "x.py", "--name", "a b"]
    text = render_report(results)
    assert "  python tools/preprocess_data.py --input 'a b.jsonl'\n  python pretrain_gpt.py --finetune\n" in text
    assert "  python x.py --name 'a b'\n" in text


def test_results_without_runs_render_as_pending_and_not_measured():
    """A results dict written before any run finished (no runs, no cases, no curves) still renders: every measured
    cell is "—", every claim is "not measured", and no plot is listed."""
    results = {"scale": "cpu", "seeds": [1234], "tables": [1, 6]}
    text = render_report(results)
    assert _row(_section(text, "## Table 1:"), "(1) Baseline")[1:7] == ["—"] * 6
    assert {j["verdict"] for j in judge_claims(results)} == {"not measured"}
    assert "- none yet (no run has curves)" in text
