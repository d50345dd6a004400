#!/usr/bin/env python
"""Plot a curriculum: each metric's distribution (from the analyzer outputs) and its pacing schedule, as one PNG.

One row per curriculum metric (and the legacy seqlen warm-up): left, the number of samples per metric value
(one line per blend component); right, the difficulty against the curriculum step and, for schedule-based
metrics, the fraction of samples admitted. The PNG is written atomically (matplotlib, Agg backend).

    .venv/bin/python tools/plot_curriculum.py --config examples/curriculum/gpt_1.3b_cl_vocab_rarity.json \
        --output runs/curriculum.png
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data.indexed_dataset import temp_path_beside  # noqa: E402
from megatron.data_efficiency.config import CurriculumMetricConfig, load_data_efficiency_config  # noqa: E402
from megatron.data_efficiency.curriculum.index_files import read_flat  # noqa: E402
from megatron.data_efficiency.curriculum.scheduler import DifficultySchedule  # noqa: E402

MERGED = "_percentile_merged"


def metric_distribution(cfg: CurriculumMetricConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per blend component ``(distinct values, samples per value)`` from the analyzer files (empty if none)."""
    samples = cfg.index_to_sample_path if isinstance(cfg.index_to_sample_path, list) else [cfg.index_to_sample_path]
    metrics = cfg.index_to_metric_path if isinstance(cfg.index_to_metric_path, list) else [cfg.index_to_metric_path]
    out = []
    for s, m in zip(samples, metrics):
        if not s or not m:
            continue
        plain = s[: -len(MERGED)] if s.endswith(MERGED) else s  # per-value rows live in the unmerged file
        if not os.path.exists(plain + ".idx") or not os.path.exists(m + ".idx"):
            raise ValueError(f"analysis files {plain}.idx / {m}.idx not found; run tools/analyze_data.py first")
        values, _ = read_flat(m)
        _, counts = read_flat(plain)
        out.append((np.asarray(values, dtype=np.int64), counts))
    return out


def _admitted_fraction(schedule: DifficultySchedule, cfg: CurriculumMetricConfig, steps: np.ndarray,
                       dist: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    d = schedule.difficulties(steps)
    if cfg.difficulty_type == "percentile":
        return np.minimum(d, 100) / 100.0
    values, counts = dist
    cum = np.concatenate(([0], np.cumsum(counts)))
    return cum[np.searchsorted(values, d, side="right")] / cum[-1]


def plot(config_path: str, output: str, num_steps: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = load_data_efficiency_config(config_path)
    rows: list[tuple[str, CurriculumMetricConfig | None, DifficultySchedule]] = []
    if cfg.curriculum_enabled:
        for name, m in cfg.data_sampling.curriculum_learning.curriculum_metrics.items():
            if m.schedule_type == "custom":
                print(f"skipping {name}: a custom schedule is a Python callable and cannot be plotted from JSON")
                continue
            rows.append((name, m, DifficultySchedule.from_config(m)))
    if cfg.legacy_curriculum.enabled and cfg.legacy_curriculum.schedule_type != "custom":
        rows.append(("legacy seqlen warm-up", None, DifficultySchedule.from_config(cfg.legacy_curriculum)))
    if not rows:
        raise SystemExit(f"{config_path}: no curriculum to plot (curriculum learning and the legacy block are off)")
    last = num_steps or int(1.1 * max((s.final_step() or 1) for _, _, s in rows)) + 1
    steps = np.unique(np.linspace(0, last, 400).astype(np.int64))
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 3.2 * len(rows)), squeeze=False)
    for (name, m, schedule), (ax_d, ax_s) in zip(rows, axes):
        dists = metric_distribution(m) if m is not None and m.clustering_type == "schedule_based" else []
        for c, (values, counts) in enumerate(dists):
            ax_d.plot(values, counts, drawstyle="steps-mid", label=f"component {c}" if len(dists) > 1 else None)
        if not dists:
            ax_d.axis("off")
            ax_d.text(0.5, 0.5, f"{name}: selects no samples\n(batch post-processing only)", ha="center",
                      va="center", transform=ax_d.transAxes)
        ax_d.set_title(f"{name}: samples per metric value" if dists else "")
        ax_d.set_xlabel("metric value")
        ax_d.set_ylabel("samples")
        if len(dists) > 1:
            ax_d.legend()
        ax_s.plot(steps, schedule.difficulties(steps), color="C1")
        ax_s.set_title(f"{name}: {schedule.schedule_type} {schedule.min_difficulty} -> {schedule.max_difficulty}")
        ax_s.set_xlabel("curriculum step (global batches)")
        ax_s.set_ylabel("difficulty")
        if dists:
            frac = ax_s.twinx()
            for c, dist in enumerate(dists):
                frac.plot(steps, _admitted_fraction(schedule, m, steps, dist), color=f"C{2 + c}", linestyle="--")
            frac.set_ylabel("fraction of samples admitted")
            frac.set_ylim(0, 1.05)
    fig.tight_layout()
    _save_atomic(fig, output)
    plt.close(fig)


def _save_atomic(fig, output: str) -> None:
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    tmp = temp_path_beside(output)  # not mkstemp: the PNG gets the umask's permissions, not 0600
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="DeepSpeed JSON (or bare data_efficiency section)")
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--num-steps", type=int, default=None, help="x-axis length (default: 1.1 x curriculum length)")
    args = p.parse_args(argv)
    try:
        plot(args.config, args.output, args.num_steps)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
