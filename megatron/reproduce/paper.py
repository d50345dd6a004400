"""The DeepSpeed Data Efficiency tables as data: every case of Tables 1-4, 6 and 7 with the training run it needs,
the paper's own numbers, and the claims the paper draws from them.

A :class:`RunSpec` says what to train (model family, data fraction, curriculum metrics, random-LTD); cases of
different tables that need the same training run (Table 1's baseline is Table 3's and Table 7's) share it, so the
harness trains it once. Claims are comparisons between cases that :mod:`megatron.reproduce.report` judges against
the measured numbers and their seed spread; nothing here is tuned to make a claim hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RunSpec", "Case", "Claim", "TABLES", "TABLE_TITLES", "METRICS", "CLAIMS", "cases_of", "runs_of"]

Family = Literal["gpt", "bert"]
# Curriculum metrics by the names the data_efficiency config uses; "seqlen" (BERT's reorder-based sequence length)
# and "seqlen_vocab_rarity" are percentile metrics of the offline analysis, like "vocab_rarity".
CLMetric = Literal["seqlen_truncate", "seqlen_reshape", "vocab_rarity", "seqlen", "seqlen_vocab_rarity"]

_SHORT = {"seqlen_truncate": "trunc", "seqlen_reshape": "reshape", "vocab_rarity": "voc", "seqlen": "reorder",
          "seqlen_vocab_rarity": "reorder+voc"}


@dataclass(frozen=True)
class RunSpec:
    """One training run: what the harness trains (and evaluates) once, whatever tables show it.

    Attributes:
        family: GPT (decoder, zero-/few-shot proxy evaluation) or BERT (encoder, proxy GLUE fine-tuning).
        data_fraction: data budget relative to the baseline's 100% (the paper's 300B GPT / 1049B BERT tokens).
        cl: curriculum metrics, empty for none.
        ltd: random-LTD on the middle layers.
        match_baseline_data: the accounting control: random-LTD stopped at exactly the baseline's data tokens
            (its schedule counts layer-averaged tokens, so at "100%" it would read more data than the baseline).
        finetune: Table 6: fine-tune the GPT baseline's checkpoint on the fine-tuning corpus instead of pretraining.
    """

    family: Family
    data_fraction: float = 1.0
    cl: tuple[CLMetric, ...] = ()
    ltd: bool = False
    match_baseline_data: bool = False
    finetune: bool = False

    @property
    def key(self) -> str:
        """A file-name-safe identifier, e.g. ``gpt_voc+trunc_ltd_d50``."""
        parts = [self.family, "+".join(_SHORT[m] for m in sorted(self.cl, key=_order)) or "base"]
        if self.ltd:
            parts.append("ltd")
        if self.match_baseline_data:
            parts.append("matched")
        if self.finetune:
            parts.append("ft")
        parts.append(f"d{round(self.data_fraction * 100)}")
        return "_".join(parts)

    @property
    def label(self) -> str:
        """Human-readable, e.g. ``CL voc+trunc + random-LTD, 50% data``."""
        what = []
        if self.cl:
            what.append("CL " + "+".join(_SHORT[m] for m in sorted(self.cl, key=_order)))
        if self.ltd:
            what.append("random-LTD" + (" (baseline data tokens)" if self.match_baseline_data else ""))
        name = " + ".join(what) or "baseline"
        return f"{'fine-tune ' if self.finetune else ''}{name}, {round(self.data_fraction * 100)}% data"


def _order(metric: str) -> int:
    return ["vocab_rarity", "seqlen_vocab_rarity", "seqlen", "seqlen_truncate", "seqlen_reshape"].index(metric)


@dataclass(frozen=True)
class Case:
    """One row of a paper table: its number, the run behind it, and the paper's reported values."""

    table: int
    number: int
    name: str
    run: RunSpec
    paper_data: str
    paper: dict[str, float] = field(default_factory=dict)
    paper_time_h: float | None = None


@dataclass(frozen=True)
class Claim:
    """A statement of the paper as a comparison of two cases of one table on ``metric`` (higher is better unless
    the metric says otherwise): ``kind`` "beats" needs a margin beyond the seed noise, "matches" needs the first case
    to be no worse than the second beyond the noise."""

    table: int
    text: str
    first: int
    second: int
    kind: Literal["beats", "matches"]
    metrics: tuple[str, ...]


# Metric columns of each table family, with whether higher is better.
METRICS: dict[str, tuple[str, bool]] = {
    "zero_shot": ("avg 0-shot acc (%)", True),
    "few_shot": ("avg 10-shot acc (%)", True),
    "glue": ("avg GLUE-proxy score", True),
    "ppl": ("held-out PPL", False),
    "val_loss": ("held-out loss", False),
}

GPT, BERT = "gpt", "bert"
_T = "seqlen_truncate"
_R = "seqlen_reshape"
_V = "vocab_rarity"


def _gpt(fraction: float = 1.0, cl: tuple = (), ltd: bool = False, **kw) -> RunSpec:
    return RunSpec(GPT, fraction, tuple(cl), ltd, **kw)


def _bert(fraction: float = 1.0, cl: tuple = (), ltd: bool = False) -> RunSpec:
    return RunSpec(BERT, fraction, tuple(cl), ltd)


def _c(table: int, number: int, name: str, run: RunSpec, data: str, time_h: float | None = None,
       **paper: float) -> Case:
    return Case(table, number, name, run, data, dict(paper), time_h)


TABLES: dict[int, list[Case]] = {
    1: [
        _c(1, 1, "Baseline", _gpt(), "300B", zero_shot=42.5, few_shot=44.0),
        _c(1, 2, "CL truncation-based sequence length", _gpt(cl=(_T,)), "300B", zero_shot=43.4, few_shot=44.8),
        _c(1, 3, "CL reshape-based sequence length", _gpt(cl=(_R,)), "300B", zero_shot=43.0, few_shot=44.5),
        _c(1, 4, "CL vocabulary rarity", _gpt(cl=(_V,)), "300B", zero_shot=42.3, few_shot=44.5),
        _c(1, 5, "CL combining (2) and (4)", _gpt(cl=(_V, _T)), "300B", zero_shot=43.6, few_shot=44.9),
        _c(1, 6, "CL combining (3) and (4)", _gpt(cl=(_V, _R)), "300B", zero_shot=43.0, few_shot=44.4),
        _c(1, 7, "Baseline", _gpt(2 / 3), "200B (1.5x)", zero_shot=41.9, few_shot=44.0),
        _c(1, 8, "CL combining (2) and (4)", _gpt(2 / 3, (_V, _T)), "200B (1.5x)", zero_shot=42.7, few_shot=44.5),
    ],
    2: [
        _c(2, 1, "Baseline", _bert(), "1049B", glue=87.29),
        _c(2, 2, "CL truncation-based sequence length", _bert(cl=(_T,)), "1049B", glue=87.31),
        _c(2, 3, "CL reorder-based sequence length", _bert(cl=("seqlen",)), "1049B", glue=87.48),
        _c(2, 4, "CL vocabulary rarity", _bert(cl=(_V,)), "1049B", glue=87.36),
        _c(2, 5, "CL combining (2) and (4)", _bert(cl=(_V, _T)), "1049B", glue=87.60),
        _c(2, 6, "CL combining (3) and (4)", _bert(cl=("seqlen_vocab_rarity",)), "1049B", glue=87.06),
        _c(2, 7, "Baseline", _bert(2 / 3), "703B (1.5x)", glue=87.19),
        _c(2, 8, "CL combining (2) and (4)", _bert(2 / 3, (_V, _T)), "703B (1.5x)", glue=87.29),
    ],
    3: [
        _c(3, 1, "Baseline", _gpt(), "300B", zero_shot=42.5),
        _c(3, 2, "Random-LTD", _gpt(ltd=True), "300B", zero_shot=43.7),
        _c(3, 3, "Random-LTD", _gpt(2 / 3, ltd=True), "200B (1.5x)", zero_shot=42.5),
        # Not in the paper: the accounting control (see RunSpec.match_baseline_data).
        _c(3, 4, "Random-LTD at the baseline's data tokens (control)", _gpt(ltd=True, match_baseline_data=True),
           "= (1)"),
    ],
    4: [
        _c(4, 1, "Baseline", _bert(), "1049B", glue=87.29),
        _c(4, 2, "Random-LTD", _bert(0.5, ltd=True), "524B (2x)", glue=87.32),
    ],
    6: [
        _c(6, 1, "Baseline", _gpt(finetune=True), "100%", ppl=16.11),
        _c(6, 2, "Random-LTD", _gpt(ltd=True, finetune=True), "100%", ppl=15.9),
    ],
    7: [
        _c(7, 1, "Baseline", _gpt(), "300B", 260, zero_shot=42.5, few_shot=44.0),
        _c(7, 2, "CL best metric", _gpt(cl=(_V, _T)), "300B", 259, zero_shot=43.6, few_shot=44.9),
        _c(7, 3, "random-LTD", _gpt(ltd=True), "300B", 263, zero_shot=43.7, few_shot=44.9),
        _c(7, 4, "CL + random-LTD", _gpt(cl=(_V, _T), ltd=True), "300B", 260, zero_shot=43.8, few_shot=45.1),
        _c(7, 5, "Baseline", _gpt(0.5), "150B (2x)", 130, zero_shot=42.0, few_shot=42.7),
        _c(7, 6, "CL best metric", _gpt(0.5, (_V, _T)), "150B (2x)", 129, zero_shot=42.6, few_shot=43.7),
        _c(7, 7, "random-LTD", _gpt(0.5, ltd=True), "150B (2x)", 131, zero_shot=42.7, few_shot=43.5),
        _c(7, 8, "CL + random-LTD", _gpt(0.5, (_V, _T), ltd=True), "150B (2x)", 130, zero_shot=42.8,
           few_shot=44.0),
    ],
}

TABLE_TITLES = {
    1: "GPT pretraining with curriculum learning: data and average proxy accuracy",
    2: "BERT pretraining with curriculum learning: data and average GLUE-proxy fine-tuning score",
    3: "GPT pretraining with random-LTD: data and average 0-shot proxy accuracy",
    4: "BERT pretraining with random-LTD: data and average GLUE-proxy fine-tuning score",
    6: "GPT fine-tuning with random-LTD: held-out perplexity of the fine-tuning corpus",
    7: "GPT pretraining with CL and random-LTD composed: data, time and average proxy accuracy",
}

_GPT_M = ("zero_shot", "few_shot")
CLAIMS: list[Claim] = [
    Claim(1, "Every CL metric beats the baseline at equal data (Table 1 cases 2-6 vs 1)", 2, 1, "beats", _GPT_M),
    Claim(1, "", 3, 1, "beats", _GPT_M),
    Claim(1, "", 4, 1, "beats", _GPT_M),
    Claim(1, "", 5, 1, "beats", _GPT_M),
    Claim(1, "", 6, 1, "beats", _GPT_M),
    Claim(1, "CL (trunc + voc) with 67% of the data matches the baseline with 100% (case 8 vs 1)", 8, 1, "matches",
          _GPT_M),
    Claim(1, "CL (trunc + voc) beats the baseline at 67% data (case 8 vs 7)", 8, 7, "beats", _GPT_M),
    Claim(2, "Every CL metric but (6) beats the BERT baseline at equal data (cases 2-5 vs 1)", 2, 1, "beats",
          ("glue",)),
    Claim(2, "", 3, 1, "beats", ("glue",)),
    Claim(2, "", 4, 1, "beats", ("glue",)),
    Claim(2, "", 5, 1, "beats", ("glue",)),
    Claim(2, "CL (trunc + voc) with 67% of the data matches the BERT baseline with 100% (case 8 vs 1)", 8, 1,
          "matches", ("glue",)),
    Claim(3, "Random-LTD at 100% data beats the baseline (case 2 vs 1)", 2, 1, "beats", ("zero_shot",)),
    Claim(3, "Random-LTD at the baseline's data tokens still beats it (control: case 4 vs 1)", 4, 1, "beats",
          ("zero_shot",)),
    Claim(3, "Random-LTD with 67% of the data matches the baseline with 100% (case 3 vs 1)", 3, 1, "matches",
          ("zero_shot",)),
    Claim(4, "BERT random-LTD with 50% of the data matches the baseline with 100% (case 2 vs 1)", 2, 1, "matches",
          ("glue",)),
    Claim(6, "Fine-tuning with random-LTD gives a lower perplexity than without (case 2 vs 1)", 2, 1, "beats",
          ("ppl",)),
    Claim(7, "CL + random-LTD at 100% data beats the baseline (case 4 vs 1)", 4, 1, "beats", _GPT_M),
    Claim(7, "At 50% data the baseline is worse than at 100% (case 1 vs 5)", 1, 5, "beats", _GPT_M),
    Claim(7, "CL + random-LTD with 50% of the data matches the baseline with 100% (case 8 vs 1)", 8, 1, "matches",
          _GPT_M),
    Claim(7, "At 50% data CL + random-LTD beats the baseline (case 8 vs 5)", 8, 5, "beats", _GPT_M),
]


def cases_of(tables: list[int]) -> list[Case]:
    """The cases of ``tables``, in table order."""
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ValueError(f"tables {unknown} are not reproduced; choose from {sorted(TABLES)} (--tables)")
    return [case for t in sorted(set(tables)) for case in TABLES[t]]


def runs_of(cases: list[Case]) -> list[RunSpec]:
    """The distinct training runs behind ``cases``: pretraining runs first (Table 6 fine-tunes the GPT
    baseline's checkpoint, so that run is added when a fine-tuning case needs it)."""
    runs: dict[str, RunSpec] = {}
    for case in cases:
        if case.run.finetune:
            runs.setdefault(_gpt().key, _gpt())
        runs.setdefault(case.run.key, case.run)
    return sorted(runs.values(), key=lambda r: (r.finetune, r.match_baseline_data, r.family, -r.data_fraction,
                                                r.key))
