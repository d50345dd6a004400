"""The reproduction harness: plan the runs behind the requested tables, train each (seed) with the ordinary entry
scripts, evaluate it with ``tasks/main.py``, and collect ``results.json`` for the report.

Layout of ``--output-dir DIR``: ``data/`` (documents, tokenizers, ``.bin/.idx``, proxy tasks, analyses),
``runs/<run>/seed<s>/`` (``ds_config.json``, ``checkpoints/``, ``metrics.jsonl``, ``train.log``, ``eval/``,
``commands.sh`` and ``result.json`` once finished), ``results.json``, ``tables.md`` and the PNGs. A finished run
(its ``result.json`` exists) is skipped; an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from megatron.reproduce import recipes
from megatron.reproduce.commands import StepFailed, read_json, run_step, shell_line, write_json
from megatron.reproduce.data_prep import DataFiles, prepare_data, run_analysis
from megatron.reproduce.paper import Case, RunSpec, cases_of, runs_of
from megatron.reproduce.proxy_tasks import PROXY_TASKS
from megatron.reproduce.recipes import SCALES, Scale
from megatron.training.checkpointing import read_tracker

__all__ = ["HarnessOptions", "Harness"]

# Proxy GLUE tasks and the number each contributes to the average (x100), as tools/glue_average does.
GLUE_SCORE = {"SST2": "accuracy", "MRPC": "accuracy", "RTE": "accuracy", "COLA": "mcc", "STSB": "spearman",
              "QNLI": "accuracy", "QQP": "accuracy", "MNLI": "accuracy"}


@dataclass
class HarnessOptions:
    """What ``tools/reproduce_paper.py`` was asked for."""

    tables: list[int]
    scale: str
    seeds: int
    output_dir: str
    inputs: list[str] | None = None
    dry_run: bool = False
    python: str = sys.executable
    first_seed: int = 1234
    cases: list[str] | None = None
    """Only these cases, as ``TABLE.CASE`` (e.g. ``7.1``); default every case of ``tables``."""


class Harness:
    """Plans, runs, evaluates and collects; see the module docstring."""

    def __init__(self, opts: HarnessOptions) -> None:
        if opts.scale not in SCALES:
            raise ValueError(f"scale {opts.scale!r} is unknown; choose one of {sorted(SCALES)} (--scale)")
        if opts.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {opts.seeds}")
        self.opts = opts
        self.scale: Scale = SCALES[opts.scale]
        self.cases: list[Case] = cases_of(opts.tables)
        if opts.cases:
            wanted = set(opts.cases)
            known = {f"{c.table}.{c.number}" for c in self.cases}
            if wanted - known:
                raise ValueError(f"cases {sorted(wanted - known)} are not among the tables' cases {sorted(known)} "
                                 "(--cases TABLE.CASE ...)")
            self.cases = [c for c in self.cases if f"{c.table}.{c.number}" in wanted]
        self.runs: list[RunSpec] = runs_of(self.cases)
        self.seeds = [opts.first_seed + i for i in range(opts.seeds)]
        self.out = Path(opts.output_dir)
        self.data: DataFiles | None = None

    # ---- plan -----------------------------------------------------------------------------------------------
    def plan(self) -> str:
        """The cases, the distinct runs and their budgets, and a rough time estimate."""
        lines = [f"scale {self.scale.name}, seeds {self.seeds}, tables {sorted(set(self.opts.tables))}", "",
                 "| run | family | data | steps (no CL) | tokens | cases |", "|---|---|---|---|---|---|"]
        total_tokens = 0
        for run in self.runs:
            m = self.scale.gpt if run.family == "gpt" else self.scale.bert
            steps = recipes.steps_estimate(run, self.scale)
            tokens = steps * m.global_batch * m.seq_length
            total_tokens += tokens * len(self.seeds)
            used = ", ".join(f"T{c.table}({c.number})" for c in self.cases if c.run == run) or "(Table 6 base)"
            lines.append(f"| {run.key} | {run.family} | {round(run.data_fraction * 100)}% | {steps} | "
                         f"{tokens:,} | {used} |")
        rate = self.scale.extra.get("tokens_per_s", {"tiny": 3000, "cpu": 6000, "gpu": 150000}[self.scale.name])
        lines += ["", f"{len(self.runs)} runs x {len(self.seeds)} seeds = {len(self.runs) * len(self.seeds)} "
                  f"trainings, {total_tokens:,} tokens; about {total_tokens / rate / 60:.0f} min of training at "
                  f"~{rate:,} tokens/s, plus evaluation"]
        return "\n".join(lines)

    # ---- data -----------------------------------------------------------------------------------------------
    def prepare(self) -> DataFiles:
        families = {r.family for r in self.runs}
        self.data = prepare_data(str(self.out), self.scale, self.opts.inputs, families, self.opts.python)
        return self.data

    # ---- one run --------------------------------------------------------------------------------------------
    def run_dir(self, run: RunSpec, seed: int) -> Path:
        return self.out / "runs" / run.key / f"seed{seed}"

    def _pretrain_command(self, run: RunSpec, seed: int) -> list[str]:
        d, data = self.run_dir(run, seed), self.data
        gpt = run.family == "gpt"
        index = None
        percentile = [m for m in run.cl if m not in ("seqlen_truncate", "seqlen_reshape")]
        if percentile:
            metrics = ["vocab_rarity", "seqlen", "seqlen_vocab_rarity"] if not gpt else ["vocab_rarity"]
            index = run_analysis(str(self.out), run.family, seed, metrics, data, self.scale, self.opts.python)
        config = recipes.data_efficiency_config(run, self.scale, seed, index)
        ds_path = None
        if config is not None:
            ds_path = str(d / "ds_config.json")
            write_json(ds_path, config)
        tokenizer = data.gpt_tokenizer if gpt else data.bert_tokenizer
        script = "pretrain_gpt.py" if gpt else "pretrain_bert.py"
        if run.finetune:
            base = self.run_dir(RunSpec("gpt"), seed) / "checkpoints"
            flags = recipes.finetune_flags(run, self.scale, seed, data_path=data.gpt_finetune_prefix,
                                           valid_data_path=data.gpt_finetune_valid_prefix, tokenizer=tokenizer, ds_config=ds_path, pretrained=str(base))
        else:
            flags = recipes.pretrain_flags(run, self.scale, seed, data_path=data.gpt_prefix if gpt
                                           else data.bert_prefix, tokenizer=tokenizer, ds_config=ds_path)
        m = self.scale.gpt if gpt else self.scale.bert
        return [self.opts.python, script, *flags, "--save", str(d / "checkpoints"), "--save-interval",
                str(max(1, m.steps // 4)), "--metrics-file", str(d / "metrics.jsonl")]

    def train(self, run: RunSpec, seed: int) -> None:
        """Train (or resume) one run; the training time of every attempt is added to ``times.json``."""
        d = self.run_dir(run, seed)
        argv = self._pretrain_command(run, seed)
        ckpt = d / "checkpoints"
        if read_tracker(ckpt) is not None and not run.finetune:
            # Resume this run's own progress (a --finetune run does so by itself from its --save directory).
            argv += ["--load", str(ckpt)]
        (d / "commands.sh").write_text(shell_line(argv) + "\n", encoding="utf-8")
        times = read_json(d / "times.json") if (d / "times.json").is_file() else []
        result = run_step(argv, d / "train.log")
        write_json(d / "times.json", times + [result.seconds])

    # ---- evaluation -----------------------------------------------------------------------------------------
    def _task(self, run: RunSpec, seed: int, name: str, flags: list[str]) -> dict[str, Any]:
        d = self.run_dir(run, seed)
        out = d / "eval" / f"{name}.json"
        if not out.is_file():
            argv = [self.opts.python, "tasks/main.py", *flags, "--results-file", str(out)]
            with open(d / "commands.sh", "a", encoding="utf-8") as f:
                f.write(shell_line(argv) + "\n")
            run_step(argv, d / "eval.log")
        return read_json(out)["metrics"]

    def evaluate(self, run: RunSpec, seed: int) -> dict[str, Any]:
        """The run's quality numbers (see :mod:`megatron.reproduce.paper` ``METRICS``)."""
        ckpt = str(self.run_dir(run, seed) / "checkpoints")
        if run.family == "bert":
            return self._evaluate_bert(run, seed, ckpt)
        m = self.scale.gpt
        text = self.data.finetune_heldout_text if run.finetune else self.data.heldout_text
        ppl = self._task(run, seed, "heldout_ppl", ["--task", "WIKITEXT103", "--load", ckpt, "--valid-data", text,
                                                    "--overlapping-eval", str(max(1, m.seq_length // 4)),
                                                    "--eval-micro-batch-size", str(m.micro_batch)])
        metrics: dict[str, Any] = {"val_loss": ppl["loss"], "ppl": ppl["ppl"]}
        if run.finetune:
            return metrics
        tasks: dict[str, dict] = {}
        for task, files in self.data.gpt_tasks.items():
            scores = {}
            for label, k in (("zero_shot", 0), ("few_shot", self.scale.fewshot)):
                flags = ["--task", "MC", "--load", ckpt, "--valid-data", files["test"], "--eval-micro-batch-size",
                         str(m.micro_batch)]
                if k:
                    flags += ["--num-fewshot", str(k), "--train-data", files["train"]]
                scores[label] = 100.0 * self._task(run, seed, f"{task}_{k}shot", flags)["accuracy"]
            tasks[task] = scores
        metrics["tasks"] = tasks
        for label in ("zero_shot", "few_shot"):
            metrics[label] = sum(t[label] for t in tasks.values()) / len(tasks)
        return metrics

    def _evaluate_bert(self, run: RunSpec, seed: int, ckpt: str) -> dict[str, Any]:
        s, m = self.scale, self.scale.bert
        tasks = {}
        for task, files in self.data.bert_tasks.items():
            flags = ["--task", task, "--pretrained-checkpoint", ckpt, "--train-data", files["train"],
                     "--valid-data", files["valid"], "--epochs", str(s.glue_epochs), "--lr", f"{s.glue_lr:g}",
                     "--lr-warmup-fraction", "0.1", "--lr-decay-style", "linear", "--weight-decay", "0.1",
                     "--micro-batch-size", "16", "--global-batch-size", "16", "--seq-length", str(m.seq_length),
                     "--seed", str(seed), "--log-interval", "50"]
            result = self._task(run, seed, f"glue_{task}", flags)
            tasks[task] = 100.0 * result[GLUE_SCORE[task]]
        return {"tasks": tasks, "glue": sum(tasks.values()) / len(tasks)}

    # ---- collection -----------------------------------------------------------------------------------------
    def _summarize(self, run: RunSpec, seed: int, metrics: dict[str, Any]) -> dict[str, Any]:
        d = self.run_dir(run, seed)
        records = [json.loads(line) for line in open(d / "metrics.jsonl", encoding="utf-8")]
        train = [r for r in records if r["kind"] == "train"]
        valid = [r for r in records if r["kind"] == "valid"]
        wall, elapsed, last_it = [], 0.0, 0
        for r in train:
            elapsed += r["step_time_s"] * (r["iteration"] - last_it)
            last_it = r["iteration"]
            wall.append(elapsed)
        tokens_at = {r["iteration"]: r["consumed_tokens"] for r in train}
        wall_at = {r["iteration"]: w for r, w in zip(train, wall)}
        curves = {
            "iteration": [r["iteration"] for r in train], "consumed_tokens": [r["consumed_tokens"] for r in train],
            "wall_time_s": wall, "val_iteration": [r["iteration"] for r in valid],
            "val_tokens": [tokens_at.get(r["iteration"]) for r in valid],
            "val_wall_time_s": [wall_at.get(r["iteration"]) for r in valid],
            "val_loss": [r["val_loss"] for r in valid],
        }
        difficulty = {}
        for r in train:
            for k, v in (r.get("difficulty") or {}).items():
                difficulty.setdefault(k, []).append(v)
        if difficulty:
            curves["difficulty"] = difficulty
        if any("ltd_kept_tokens" in r for r in train):
            curves["ltd_kept_tokens"] = [r.get("ltd_kept_tokens") for r in train]
        last = train[-1]
        return {
            "status": "done", "command": (d / "commands.sh").read_text(encoding="utf-8").splitlines(),
            # Training time: the loop's step times (as the paper's pretraining hours), without process start-up,
            # dataset indexing and evaluation, which dominate at the small scales; the processes' total is kept too.
            "wall_time_s": wall[-1] if wall else 0.0, "process_time_s": sum(read_json(d / "times.json")),
            "steps": last["iteration"],
            "data_tokens": last["consumed_tokens"], "schedule_tokens": last.get("schedule_tokens",
                                                                                last["consumed_tokens"]),
            "metrics": metrics, "curves": curves,
        }

    def run_one(self, run: RunSpec, seed: int) -> dict[str, Any]:
        """Train, evaluate and summarize one run and seed (skipped when its ``result.json`` exists)."""
        d = self.run_dir(run, seed)
        done = d / "result.json"
        if done.is_file():
            return read_json(done)
        d.mkdir(parents=True, exist_ok=True)
        try:
            if not (d / "trained").is_file():
                self.train(run, seed)
                (d / "trained").write_text("ok\n")
            summary = self._summarize(run, seed, self.evaluate(run, seed))
        except StepFailed as exc:
            print(f"!! {run.key} seed {seed} failed:\n{exc}", file=sys.stderr, flush=True)
            return {"status": "failed", "error": str(exc)[-3000:]}
        write_json(done, summary)
        return summary

    def results(self, per_run: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The results dict of :mod:`megatron.reproduce.report` (see its schema)."""
        baseline = {}
        for family in ("gpt", "bert"):
            seeds = per_run.get(RunSpec(family).key, {}).get("seeds", {})
            done = [s["data_tokens"] for s in seeds.values() if s.get("status") == "done"]
            if done:
                baseline[family] = sum(done) / len(done)
        return {
            "scale": self.scale.name, "seeds": self.seeds, "tables": sorted(set(self.opts.tables)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores".strip(),
            "baseline_tokens": baseline, "runs": per_run,
            "cases": [{"table": c.table, "number": c.number, "name": c.name, "run": c.run.key,
                       "paper_data": c.paper_data, "paper": c.paper, "paper_time_h": c.paper_time_h}
                      for c in self.cases],
            "proxy_tasks": {**PROXY_TASKS, **_bert_task_notes(self.data)},
            "data": self.data.summary if self.data else {},
        }

    def run_all(self) -> dict[str, Any]:
        """Everything: data, every run and seed in plan order, then results.json, tables.md and the plots."""
        from megatron.reproduce.report import plot_all, render_report

        self.prepare()
        per_run: dict[str, dict[str, Any]] = {}
        for run in self.runs:
            spec = {**asdict(run), "cl": list(run.cl), "label": run.label}
            per_run[run.key] = {"spec": spec, "seeds": {}}
        for seed in self.seeds:
            for run in self.runs:
                per_run[run.key]["seeds"][str(seed)] = self.run_one(run, seed)
                results = self.results(per_run)
                write_json(self.out / "results.json", results)
        results = self.results(per_run)
        results["plots"] = [os.path.basename(p) for p in plot_all(results, str(self.out))]
        write_json(self.out / "results.json", results)
        text = render_report(results)
        tmp = self.out / ".tables.md.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.out / "tables.md")
        return results


def _bert_task_notes(data: DataFiles | None) -> dict[str, str]:
    if data is None:
        return {}
    return {f"glue_{name}": info.get("description", "") for name, info in data.bert_tasks.items()}
