"""The reporting half of ``tools/reproduce_paper.py``: the harness's results dict becomes ``tables.md`` (the paper's
tables with measured and published numbers side by side, and each paper claim judged against the seed spread) and
PNG plots of the training curves.

Everything is a pure function of the results dict: nothing trains, nothing is re-run, and nothing is tuned to make
a claim hold. Pending, failed and missing cells are shown as such instead of being skipped or guessed.
"""

from __future__ import annotations

import os
import shlex
from statistics import fmean
from typing import Any, Callable

from megatron.data.indexed_dataset import temp_path_beside
from megatron.reproduce.paper import CLAIMS, METRICS, TABLE_TITLES, TABLES, Claim

__all__ = ["render_tables", "judge_claims", "render_claims", "render_report", "plot_all"]

Results = dict[str, Any]
PENDING, FAILED = "—", "failed"
# Decimals per metric: the paper prints accuracies with 1 and GLUE/PPL with 2; a proxy loss needs 3 to show a change.
_DIGITS = {"zero_shot": 1, "few_shot": 1, "glue": 2, "ppl": 2, "val_loss": 3}
_SHORT = {"zero_shot": "0-shot", "few_shot": "10-shot", "glue": "GLUE-proxy", "ppl": "PPL", "val_loss": "loss"}
# A difference equal to the noise (up to float rounding of the inputs) is "within noise", never a win.
_EPS = 1e-9


# ---------------------------------------------------------------------------------------------- reading the dict
def _cases(results: Results) -> list[dict]:
    """The harness's cases; rebuilt from ``paper.TABLES`` for a results dict that lacks them."""
    if "cases" in results:
        return results["cases"]
    return [{"table": c.table, "number": c.number, "name": c.name, "run": c.run.key, "paper_data": c.paper_data,
             "paper": dict(c.paper), "paper_time_h": c.paper_time_h}
            for t in results.get("tables", []) for c in TABLES.get(t, [])]


def _case(results: Results, table: int, number: int) -> dict | None:
    return next((c for c in _cases(results) if c["table"] == table and c["number"] == number), None)


def _spec(results: Results, run_key: str) -> dict:
    return results.get("runs", {}).get(run_key, {}).get("spec", {})


def _seeds(results: Results, run_key: str) -> tuple[list[dict], list[str]]:
    """The records of the run's finished seeds, and the statuses ("pending" / "failed") of the others; a seed the
    results name but the run lacks counts as pending."""
    by_seed = results.get("runs", {}).get(run_key, {}).get("seeds", {})
    done, other = [], []
    for seed in [str(s) for s in results.get("seeds") or by_seed]:
        record = by_seed.get(seed) or {}
        status = record.get("status", "pending")
        if status == "done":
            done.append(record)
        else:
            other.append(status)
    return done, other


def _stat(values) -> tuple[float, float, int] | None:
    """(mean, spread = half the range, number of values) over the values that are not None."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return fmean(vals), (max(vals) - min(vals)) / 2, len(vals)


def _metric_stat(results: Results, case: dict | None, metric: str) -> tuple[tuple | None, str]:
    """The case's (mean, spread, seeds) of ``metric`` and, when there is none, why."""
    if case is None:
        return None, "not in the results"
    done, other = _seeds(results, case["run"])
    if not done:
        return None, FAILED if FAILED in other else "pending"
    stat = _stat((r.get("metrics") or {}).get(metric) for r in done)
    return stat, "" if stat else "not reported"


def _mean_of(results: Results, case: dict | None, field: str) -> float | None:
    if case is None:
        return None
    stat = _stat(r.get(field) for r in _seeds(results, case["run"])[0])
    return stat[0] if stat else None


# ---------------------------------------------------------------------------------------------- formatting
def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _tokens(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _clock(seconds: float) -> str:
    """mm:ss below an hour, h:mm:ss above."""
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _pm(stat: tuple, metric: str) -> str:
    d = _DIGITS.get(metric, 2)
    return f"{stat[0]:.{d}f} ± {stat[1]:.{d}f}"


def _cell(results: Results, run_key: str, show: Callable[[list[dict]], str]) -> str:
    """One measured cell: ``show`` of the finished seeds, "—" when none finished yet, "failed" when one failed and
    none finished."""
    done, other = _seeds(results, run_key)
    if not done:
        return FAILED if FAILED in other else PENDING
    return show(done)


def _data_text(records: list[dict], baseline: float | None) -> str:
    """Data tokens read as a fraction of the baseline's, plus the schedule's count where it differs (random-LTD's
    schedule counts layer-averaged tokens)."""
    data, sched = _stat(r.get("data_tokens") for r in records), _stat(r.get("schedule_tokens") for r in records)
    if data is None:
        return "n/a"
    if not baseline:
        return f"{_tokens(data[0])} tok"
    text = _pct(data[0] / baseline)
    if sched is not None and round(sched[0]) != round(data[0]):
        text = f"{text} data tok / {_pct(sched[0] / baseline)} sched tok"
    return f"{text} ({_tokens(data[0])} tok)"


# ---------------------------------------------------------------------------------------------- tables
def _table_metrics(results: Results, cases: list[dict]) -> tuple[list[str], list[str]]:
    """(measured metric columns, paper metric columns): the paper's metrics of the table, in METRICS order, plus the
    held-out loss for pretraining tables."""
    paper = [m for m in METRICS if any(m in c.get("paper", {}) for c in cases)]
    measured = list(paper)
    if "val_loss" not in measured and not any(_spec(results, c["run"]).get("finetune") for c in cases):
        measured.append("val_loss")
    return measured, paper


def _table_tasks(results: Results, cases: list[dict]) -> list[str]:
    """The proxy tasks the table's runs were scored on (all known tasks when no run reports its tasks yet)."""
    tasks = {t for c in cases for r in _seeds(results, c["run"])[0] for t in (r.get("metrics") or {}).get("tasks", {})}
    return sorted(tasks) or sorted(results.get("proxy_tasks", {}))


def _table_note(results: Results, cases: list[dict]) -> str:
    seeds = [str(s) for s in results.get("seeds", [])]
    spread = (f"mean ± half the range over {len(seeds)} seeds ({', '.join(seeds)})" if len(seeds) > 1
              else f"1 seed ({', '.join(seeds) or '?'}), so spread 0 and no noise estimate")
    links = ", ".join(f"[{t}](#task-{t})" for t in _table_tasks(results, cases)) or "none listed"
    return (f"*Measured at scale `{results.get('scale', '?')}`, {spread}. Accuracies and scores average the proxy "
            f"tasks ({links}), not the paper's benchmarks; the loss is on held-out text. Data = data tokens read / the "
            f"baseline's. \"Paper\" columns are the published full-scale numbers. {PENDING} = pending.*")


def _table_row(results: Results, case: dict, measured: list[str], paper: list[str], time_col: bool) -> str:
    run = case["run"]
    baseline = results.get("baseline_tokens", {}).get(_spec(results, run).get("family"))
    done, other = _seeds(results, run)
    partial = f" *({len(done)}/{len(done) + len(other)} seeds)*" if done and other else ""
    cells = [f"({case['number']}) {case['name']}{partial}",
             _cell(results, run, lambda rs: _data_text(rs, baseline)),
             _stat_cell(results, run, lambda r: r.get("steps"), lambda s: f"{s[0]:.0f}"),
             _stat_cell(results, run, lambda r: r.get("wall_time_s"), lambda s: _clock(s[0]))]
    cells += [_stat_cell(results, run, lambda r, m=m: (r.get("metrics") or {}).get(m), lambda s, m=m: _pm(s, m))
              for m in measured]
    cells.append(case.get("paper_data") or "")
    if time_col:
        cells.append(f"{case['paper_time_h']:g}hr" if case.get("paper_time_h") is not None else "")
    cells += [str(case["paper"][m]) if m in case.get("paper", {}) else "not in paper" for m in paper]
    return "| " + " | ".join(cells) + " |"


def _stat_cell(results: Results, run_key: str, value: Callable[[dict], Any], fmt: Callable[[tuple], str]) -> str:
    """A cell of ``fmt((mean, spread, n))`` of a per-seed value over the finished seeds; "n/a" if none reports it."""
    def show(records: list[dict]) -> str:
        stat = _stat(value(r) for r in records)
        return fmt(stat) if stat else "n/a"
    return _cell(results, run_key, show)


def render_tables(results: Results) -> str:
    """Markdown: one ``## Table N: <title>`` section per table of ``results["tables"]``, laid out like the paper's
    (``| **Case** | ... |``, rows ``(n) name``) with the measured columns (data, steps, wall time, each metric as
    mean ± half the seed range) before the paper's, and a one-line note on seeds, scale and proxy tasks."""
    out = []
    for table in results.get("tables", []):
        cases = sorted((c for c in _cases(results) if c["table"] == table), key=lambda c: c["number"])
        measured, paper = _table_metrics(results, cases)
        time_col = any(c.get("paper_time_h") is not None for c in cases)
        header = (["Case", "Data", "Steps", "Wall time"] + [METRICS[m][0] for m in measured] + ["Paper data"]
                  + (["Paper time (64 V100)"] if time_col else []) + [f"Paper {METRICS[m][0]}" for m in paper])
        out += [f"## Table {table}: {TABLE_TITLES.get(table, '')}", "",
                "| " + " | ".join(f"**{h}**" for h in header) + " |",
                "| " + " | ".join("----------" for _ in header) + " |"]
        out += [_table_row(results, c, measured, paper, time_col) for c in cases]
        out += ["", _table_note(results, cases), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- claims
def _verdict(kind: str, diff: float, noise: float) -> str:
    """``diff`` > 0 means the first case is better. "beats" needs a margin beyond the noise; "matches" needs the
    first case to be no worse than the noise."""
    if kind == "beats":
        if diff > noise + _EPS:
            return "holds"
        return "within noise" if diff >= -noise - _EPS else "does not hold"
    if diff >= -noise - _EPS:
        return "holds" if diff >= 0 else "holds (within noise)"
    return "does not hold"


def _overall(verdicts: list[str]) -> str:
    if "does not hold" in verdicts:
        return "does not hold"
    if "not measured" in verdicts or not verdicts:
        return "not measured"
    return "holds" if all(v.startswith("holds") for v in verdicts) else "within noise"


def _judge_metric(results: Results, kind: str, metric: str, first: dict | None, second: dict | None) -> dict:
    a, why_a = _metric_stat(results, first, metric)
    b, why_b = _metric_stat(results, second, metric)
    entry: dict[str, Any] = {"metric": metric, "higher_is_better": METRICS[metric][1]}
    if a is None or b is None:
        why = "; ".join(f"case {c['number'] if c else '?'} {w}" for c, w, s in ((first, why_a, a), (second, why_b, b))
                        if s is None)
        return entry | {"verdict": "not measured", "reason": why}
    delta = a[0] - b[0]
    diff = delta if METRICS[metric][1] else -delta  # positive = the first case is better
    noise = max(a[1], b[1])
    return entry | {"first_mean": a[0], "first_spread": a[1], "second_mean": b[0], "second_spread": b[1],
                    "delta": delta, "diff": diff, "noise": noise, "seeds": min(a[2], b[2]),
                    "verdict": _verdict(kind, diff, noise)}


def _ltd_accounting(results: Results, case: dict) -> str:
    """Random-LTD's schedule counts layer-averaged tokens, so its nominal data fraction understates the data it
    reads: restate the case in data tokens."""
    spec = _spec(results, case["run"])
    baseline = results.get("baseline_tokens", {}).get(spec.get("family"))
    data, sched = _mean_of(results, case, "data_tokens"), _mean_of(results, case, "schedule_tokens")
    nominal = _pct(spec.get("data_fraction", 1.0))
    if data is None or not baseline:
        return f"case {case['number']} (random-LTD, nominal {nominal}): data tokens not measured"
    text = f"case {case['number']} read {_pct(data / baseline)} of the baseline's data tokens (nominal {nominal}"
    if sched is not None:
        text += f"; its schedule counted {_pct(sched / baseline)} in layer-averaged tokens"
    return text + ")"


def _accounting(results: Results, first: dict | None, second: dict | None) -> tuple[float | None, str]:
    """(data-token ratio first/second, the accounting sentence)."""
    d1, d2 = _mean_of(results, first, "data_tokens"), _mean_of(results, second, "data_tokens")
    ratio = d1 / d2 if d1 is not None and d2 else None
    parts = [f"data tokens: case {first['number']} read {_pct(ratio)} as many as case {second['number']}"
             if ratio is not None else "data tokens not measured"]
    parts += [_ltd_accounting(results, c) for c in (first, second) if c and _spec(results, c["run"]).get("ltd")]
    return ratio, "; ".join(parts)


def _judge(results: Results, claim: Claim, text: str, group: int) -> dict:
    first, second = _case(results, claim.table, claim.first), _case(results, claim.table, claim.second)
    metrics = [_judge_metric(results, claim.kind, m, first, second) for m in claim.metrics]
    ratio, accounting = _accounting(results, first, second)
    return {"table": claim.table, "text": text, "group": group, "kind": claim.kind,
            "first": claim.first, "second": claim.second,
            "first_name": first["name"] if first else "?", "second_name": second["name"] if second else "?",
            "metrics": metrics, "verdict": _overall([m["verdict"] for m in metrics]),
            "single_seed": any(m.get("seeds", 2) < 2 for m in metrics),
            "data_ratio": ratio, "accounting": accounting}


def judge_claims(results: Results) -> list[dict]:
    """Judge each paper claim (``paper.CLAIMS``) of the tables in ``results["tables"]`` on the measured means.

    Per metric: diff = mean(first) - mean(second), sign-flipped for lower-is-better metrics (positive = first is
    better); noise = the larger seed half-range of the two. "beats": "holds" if diff > noise, "within noise" if
    |diff| <= noise, else "does not hold"; "matches": "holds" if diff >= 0, "holds (within noise)" if
    -noise <= diff < 0, else "does not hold"; "not measured" when a case has no value. A claim holds only if all
    its metrics hold, does not hold if any does not, is not measured if any is missing, else is within noise.

    Returns:
        One dict per comparison: table, text (claims continuing a group share its text and ``group``), kind,
        first/second case numbers and names, ``metrics`` (per-metric means, spreads, delta, diff, noise, seeds,
        verdict or reason), ``verdict``, ``single_seed``, ``data_ratio`` (data tokens first/second) and
        ``accounting`` (the data-token sentence, restated against the baseline for random-LTD cases).
    """
    tables, out, text, group = set(results.get("tables", [])), [], "", -1
    for claim in CLAIMS:
        if claim.text:  # an empty text continues the previous claim's group
            text, group = claim.text, group + 1
        if claim.table in tables:
            out.append(_judge(results, claim, text, group))
    return out


def _metric_text(m: dict) -> str:
    name = _SHORT.get(m["metric"], m["metric"]) + ("" if m["higher_is_better"] else " (lower is better)")
    if m["verdict"] == "not measured":
        return f"{name} not measured ({m['reason']})"
    d = _DIGITS.get(m["metric"], 2)
    noise = f"noise {m['noise']:.{d}f}" if m["seeds"] > 1 else "noise 0: 1 seed, no spread"
    return (f"{name} {m['first_mean']:.{d}f} ± {m['first_spread']:.{d}f} vs {m['second_mean']:.{d}f} ± "
            f"{m['second_spread']:.{d}f} ({m['delta']:+.{d}f}, {noise}: {m['verdict']})")


def _comparison_text(j: dict) -> str:
    return "; ".join([_metric_text(m) for m in j["metrics"]] + [j["accounting"]])


def render_claims(judgements: list[dict]) -> str:
    """Markdown ``## Claims`` section: each claim (group) with its verdict, restated with the measured numbers of
    each comparison and the data-token accounting."""
    out = ["## Claims", "",
           "*Each claim is judged on the measured means. Noise = the larger half-range over seeds of the two cases; "
           "\"beats\" needs a margin beyond it, \"matches\" needs the first case to be no worse than it. The "
           "number in brackets is first − second.*"]
    groups: dict[int, list[dict]] = {}
    for j in judgements:
        groups.setdefault(j["group"], []).append(j)
    table = None
    for members in groups.values():
        if members[0]["table"] != table:
            table = members[0]["table"]
            out += ["", f"### Table {table}", ""]
        verdict = _overall([j["verdict"] for j in members]).capitalize()
        if len(members) == 1:
            out.append(f"- **{verdict}** — {members[0]['text']}: {_comparison_text(members[0])}")
        else:
            held = sum(j["verdict"] == "holds" for j in members)
            out.append(f"- **{verdict}** ({held} of {len(members)} comparisons hold) — {members[0]['text']}:")
            out += [f"  - case {j['first']} vs {j['second']} ({j['first_name']} vs {j['second_name']}): "
                    f"**{j['verdict']}** — {_comparison_text(j)}" for j in members]
        if any(j["single_seed"] for j in members):
            out.append("  - *1 seed: no noise estimate, so any difference decides; rerun with more seeds.*")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- plots
def _series(curves: dict, key: str | tuple[str, str]) -> list | None:
    value = curves.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else curves.get(key)
    return value or None


def _curve(records: list[dict], xkey: str, ykey: str | tuple[str, str]) -> tuple[list, list] | None:
    """The mean curve over seeds when every seed has the same points, else the first seed's."""
    pairs = []
    for r in records:
        curves = r.get("curves") or {}
        x, y = _series(curves, xkey), _series(curves, ykey)
        if x and y:
            points = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
            if points:
                pairs.append(([a for a, _ in points], [b for _, b in points]))
    if not pairs:
        return None
    if len({len(x) for x, _ in pairs}) > 1:
        return pairs[0]
    return [fmean(col) for col in zip(*(x for x, _ in pairs))], [fmean(col) for col in zip(*(y for _, y in pairs))]


def _plot_jobs(results: Results) -> list[tuple[str, str, str, str, list[tuple[str, list]]]]:
    """Every plot the data supports: (file name, title, x label, y label, panels of (title, lines)), each line
    (label, x, y, dashed). A plot without a single line is left out."""
    jobs = []
    for table in results.get("tables", []):
        cases = sorted((c for c in _cases(results) if c["table"] == table), key=lambda c: c["number"])
        for xkey, what, xlabel in (("val_tokens", "tokens", "consumed data tokens"),
                                   ("val_wall_time_s", "time", "wall time (s)")):
            lines = [(f"({c['number']}) {c['name']}", *xy, bool(_spec(results, c["run"]).get("ltd")))
                     for c in cases if (xy := _curve(_seeds(results, c["run"])[0], xkey, "val_loss"))]
            if lines:
                jobs.append((f"table{table}_loss_vs_{what}.png", f"Table {table}: validation loss", xlabel,
                             "validation loss", [("", lines)]))
    runs = results.get("runs", {})
    cl_runs = [k for k in runs if _spec(results, k).get("cl")]
    metrics = sorted({m for k in cl_runs for r in _seeds(results, k)[0]
                      for m in ((r.get("curves") or {}).get("difficulty") or {})})
    panels = [(m, [(_spec(results, k).get("label", k), *xy, False) for k in cl_runs
                   if (xy := _curve(_seeds(results, k)[0], "iteration", ("difficulty", m)))]) for m in metrics]
    if any(lines for _, lines in panels):
        jobs.append(("curricula.png", "Curriculum difficulty", "step", "difficulty", [p for p in panels if p[1]]))
    kept = [(_spec(results, k).get("label", k), *xy, True) for k in runs if _spec(results, k).get("ltd")
            and (xy := _curve(_seeds(results, k)[0], "iteration", "ltd_kept_tokens"))]
    if kept:
        jobs.append(("random_ltd_kept_tokens.png", "Random-LTD kept tokens", "step", "kept tokens", [("", kept)]))
    return jobs


def _save_atomically(fig, path: str) -> None:
    """Save to a temporary file in the same directory, then rename, so a reader never sees half a PNG."""
    tmp = temp_path_beside(path)  # not mkstemp: the PNG gets the umask's permissions, not 0600
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def plot_all(results: Results, out_dir: str) -> list[str]:
    """Write the PNG plots the results support into ``out_dir`` and return their paths.

    Per table ``table{N}_loss_vs_tokens.png`` and ``table{N}_loss_vs_time.png`` (validation loss per case, mean over
    seeds; random-LTD cases dashed), ``curricula.png`` (difficulty against step for every CL run, one subplot per
    metric) and ``random_ltd_kept_tokens.png``; a plot no run has data for is not written.
    """
    jobs = _plot_jobs(results)
    if not jobs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, title, xlabel, ylabel, panels in jobs:
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
        try:
            for ax, (panel_title, lines) in zip(axes[0], panels):
                for label, x, y, dashed in lines:
                    ax.plot(x, y, "--" if dashed else "-", label=label)
                ax.set(title=panel_title or title, xlabel=xlabel, ylabel=ylabel)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
            if len(panels) > 1:
                fig.suptitle(title)
            fig.tight_layout()
            path = os.path.join(out_dir, name)
            _save_atomically(fig, path)
            written.append(path)
        finally:
            plt.close(fig)
    return written


# ---------------------------------------------------------------------------------------------- the report
def _command_lines(results: Results) -> list[str]:
    """Per run, the command of the first seed (to rerun a cell by hand) and any failed seed's error."""
    out = []
    for key, run in results.get("runs", {}).items():
        by_seed = run.get("seeds", {})
        order = [str(s) for s in results.get("seeds", [])] + list(by_seed)
        seed = next((s for s in order if (by_seed.get(s) or {}).get("command")), None)
        out.append(f"- `{key}` ({run.get('spec', {}).get('label', key)})")
        if seed is not None:
            out += [f"  seed {seed}:", "", "  ```sh"] + [f"  {line}" for line in _shell_lines(by_seed[seed]["command"])]
            out += ["  ```", ""]
        else:
            out.append("  no command recorded yet")
        for s, rec in by_seed.items():
            if (rec or {}).get("status") == FAILED:
                error = (str(rec.get("error") or "no error recorded").strip().splitlines() or [""])[-1]
                out.append(f"  - seed {s} failed: `{error[:300].replace(chr(96), chr(39))}`")  # no ` inside `...`
    return out


def _shell_lines(command: str | list[str]) -> list[str]:
    """A recorded command as shell lines: a string, an argv list (quoted here), or a list of whole shell lines
    (a ``commands.sh``, told apart by the space in its first element: an argv starts with a bare program)."""
    if isinstance(command, str):
        return command.splitlines()
    if command and " " in str(command[0]):
        return [str(line) for line in command]
    return [shlex.join(map(str, command))]


def render_report(results: Results, plot_paths: list[str] | None = None) -> str:
    """The whole ``tables.md``: title and provenance, the tables, the claims, the proxy tasks, the plots
    (``plot_paths`` as returned by :func:`plot_all`, else ``results["plots"]``, else the plots the data supports)
    and, folded, the command of each run's first seed."""
    tables = ", ".join(map(str, results.get("tables", [])))
    seeds = ", ".join(map(str, results.get("seeds", [])))
    if plot_paths is None:
        plot_paths = results.get("plots")
    names = ([os.path.basename(p) for p in plot_paths] if plot_paths is not None
             else [job[0] for job in _plot_jobs(results)])
    out = [f"# DeepSpeed Data Efficiency reproduced: Tables {tables}", "",
           f"Scale `{results.get('scale', '?')}` · seeds {seeds or '?'} · machine: {results.get('machine', '?')} · "
           f"created {results.get('created', '?')}", "",
           render_tables(results), render_claims(judge_claims(results)), "## Proxy tasks", ""]
    out += [f"- <a id=\"task-{name}\"></a>**{name}**: {text}" for name, text in results.get("proxy_tasks", {}).items()]
    out += ["", "## Plots", ""] + ([f"- [{n}]({n})" for n in names] or ["- none yet (no run has curves)"])
    out += ["", "## Commands", "", "<details><summary>Command line of each run's first seed</summary>", ""]
    out += _command_lines(results) + ["", "</details>", ""]
    return "\n".join(out)
