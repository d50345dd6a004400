"""The paper's recipes scaled down: model sizes per scale, and every scaling rule that turns a :class:`RunSpec` into
the flags of ``pretrain_gpt.py`` / ``pretrain_bert.py`` and its DeepSpeed ``data_efficiency`` config.

Each rule is written once here, as a fraction of the run, with the recipe value it comes from
(``examples_deepspeed/data_efficiency/{gpt,bert}/pretrain`` of Megatron-DeepSpeed):

* GPT-3 1.3B: 300B tokens = 286,102 steps of 512 x 2048 tokens; curriculum over 110k steps (38.4% of the 100%
  run), scaled with the data (73k at 200B, 55k at 150B); random-LTD from 128 of 2048 tokens (1/16) in steps of 16
  over 200k steps (69.9%, likewise scaled); warm-up 3B tokens (1% of the 100% run) at every budget; peak LR 2e-4 at
  100%, times 1/data fraction (3e-4 at 200B, 4e-4 at 150B); min LR 1e-6 (0.5% of the 100% peak); cosine decay over
  the run's tokens; seqlen truncation 80 -> 2048 (1/25.6) in steps of 8; vocabulary rarity percentile 1 -> 100,
  root degree 2.
* BERT-Large: 2M steps of 1024 x 512 tokens; curriculum over 0.96M steps (48%, scaled with the data), vocabulary
  rarity (and the reorder metrics) percentile 5 -> 100 root 2, truncation 128 -> 512 (1/4) in steps of 8; random-LTD
  from 128 of 512 tokens (1/4) in steps of 16 (1/32) over the whole run (2M / 1.34M / 1M steps at 100 / 67 / 50%);
  warm-up 10k steps (0.5%); peak LR 1e-4 x 1/data fraction; min LR 1e-5 (10%); linear decay over the run's tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from megatron.reproduce.paper import RunSpec

__all__ = ["ModelScale", "Scale", "SCALES", "pretrain_flags", "data_efficiency_config"]

# Fractions of the 100%-data run, from the recipes (see the module docstring).
GPT_CL_FRACTION = 110_000 / 286_102
GPT_LTD_FRACTION = 200_000 / 286_102
GPT_WARMUP_FRACTION = 3e9 / 300e9
GPT_MIN_LR_RATIO = 1e-6 / 2e-4
GPT_TRUNC_START = 80 / 2048
GPT_LTD_START = 128 / 2048
GPT_LTD_STEP = 16 / 2048
BERT_CL_FRACTION = 0.96e6 / 2e6
BERT_LTD_FRACTION = 1.0
BERT_WARMUP_FRACTION = 10_000 / 2e6
BERT_MIN_LR_RATIO = 1e-5 / 1e-4
BERT_TRUNC_START = 128 / 512
BERT_LTD_START = 128 / 512
BERT_LTD_STEP = 16 / 512


@dataclass(frozen=True)
class ModelScale:
    """The size and budget of one family's runs at a scale: the 100%-data run is ``steps`` steps of
    ``global_batch`` sequences of ``seq_length`` tokens."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    seq_length: int
    global_batch: int
    micro_batch: int
    steps: int
    lr: float
    dropout: float = 0.0

    @property
    def tokens(self) -> int:
        """Data tokens of the 100% run."""
        return self.steps * self.global_batch * self.seq_length


@dataclass(frozen=True)
class Scale:
    """A named size of the whole reproduction (models, budgets, vocabularies, evaluation sizes)."""

    name: str
    gpt: ModelScale
    bert: ModelScale
    gpt_vocab: int
    """Size of the BPE vocabulary trained on the pretraining documents (small, so the output layer does not
    dominate a small model's step)."""
    bert_vocab: int
    corpus: str
    """``tiny`` (a slice of the KJV) or ``full`` (KJV + Shakespeare) when no --input is given."""
    eval_examples: int
    """Examples per proxy task."""
    finetune_fraction: float
    """Table 6: fine-tuning steps as a fraction of the GPT 100% run."""
    glue_epochs: int
    glue_lr: float
    glue_train_examples: int
    glue_eval_examples: int
    fewshot: int = 10
    extra: dict[str, Any] = field(default_factory=dict)


SCALES: dict[str, Scale] = {
    # Seconds per case: for tests and smoke runs, not for conclusions.
    "tiny": Scale(
        name="tiny",
        gpt=ModelScale(num_layers=4, hidden_size=32, num_attention_heads=2, seq_length=64, global_batch=4,
                       micro_batch=4, steps=16, lr=2e-3),
        bert=ModelScale(num_layers=4, hidden_size=32, num_attention_heads=2, seq_length=32, global_batch=4,
                        micro_batch=4, steps=12, lr=1e-3),
        gpt_vocab=512, bert_vocab=512, corpus="tiny", eval_examples=12, finetune_fraction=0.5, glue_epochs=1,
        glue_lr=1e-3, glue_train_examples=16, glue_eval_examples=8, fewshot=2,
    ),
    # Two CPU cores: Table 7 (8 cases x 2 seeds) within an hour. Sized by measurement: the project machine trains
    # this model at ~2,000-2,500 tokens/s (a 256-wide model with an 8k vocabulary ran at ~600), and evaluation costs
    # about a third of a 100% run per run.
    "cpu": Scale(
        name="cpu",
        gpt=ModelScale(num_layers=4, hidden_size=128, num_attention_heads=4, seq_length=128, global_batch=16,
                       micro_batch=16, steps=200, lr=1e-3),
        bert=ModelScale(num_layers=4, hidden_size=128, num_attention_heads=4, seq_length=128, global_batch=32,
                        micro_batch=32, steps=150, lr=5e-4),
        gpt_vocab=4096, bert_vocab=4096, corpus="full", eval_examples=100, finetune_fraction=0.25,
        glue_epochs=2, glue_lr=1e-4, glue_train_examples=1000, glue_eval_examples=200,
        extra={"tokens_per_s": 2000},
    ),
    # One GPU: the paper's 125M GPT (and a BERT-base-sized encoder) on the same corpora.
    "gpu": Scale(
        name="gpu",
        gpt=ModelScale(num_layers=12, hidden_size=768, num_attention_heads=12, seq_length=1024, global_batch=64,
                       micro_batch=16, steps=2000, lr=6e-4, dropout=0.1),
        bert=ModelScale(num_layers=12, hidden_size=768, num_attention_heads=12, seq_length=512, global_batch=128,
                        micro_batch=32, steps=2000, lr=1e-4, dropout=0.1),
        gpt_vocab=16384, bert_vocab=16384, corpus="full", eval_examples=1000, finetune_fraction=0.25,
        glue_epochs=3, glue_lr=2e-5, glue_train_examples=10000, glue_eval_examples=1000,
    ),
}


def _round_to(value: float, step: int, lo: int) -> int:
    """``value`` rounded to a multiple of ``step``, at least ``lo``."""
    return max(lo, int(round(value / step)) * step)


def _percentile_metric(name: str, start: int, steps: int, index_dir: str, reorder: bool = False) -> dict[str, Any]:
    """A percentile, schedule-based curriculum over an analyzed metric (the recipes' vocabulary rarity shape)."""
    return {
        "index_to_sample_path": f"{index_dir}/{name}/{name}_index_to_sample_percentile_merged",
        "index_to_metric_path": f"{index_dir}/{name}/{name}_index_to_metric",
        "difficulty_type": "percentile", "clustering_type": "schedule_based", "min_difficulty": start,
        "max_difficulty": 100, "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 1, "root_degree": 2},
    }


def _seqlen_metric(start: int, end: int, steps: int) -> dict[str, Any]:
    """A value-based sequence-length curriculum (truncation or reshape) in steps of 8 tokens, linear pacing."""
    return {"difficulty_type": "value", "clustering_type": "single_cluster", "min_difficulty": start,
            "max_difficulty": end, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 8}}


def data_efficiency_config(run: RunSpec, scale: Scale, seed: int, index_dir: str | None) -> dict[str, Any] | None:
    """The DeepSpeed config (``data_efficiency`` section) of ``run``, or None when it uses neither technique.

    ``index_dir`` holds the offline analysis of this seed's training split (needed by percentile metrics).
    """
    if not run.cl and not run.ltd:
        return None
    m = scale.gpt if run.family == "gpt" else scale.bert
    gpt = run.family == "gpt"
    f = run.data_fraction
    section: dict[str, Any] = {"enabled": True, "seed": seed}
    if run.cl:
        cl_steps = max(1, round((GPT_CL_FRACTION if gpt else BERT_CL_FRACTION) * m.steps * f))
        metrics: dict[str, Any] = {}
        for name in run.cl:
            if name in ("seqlen_truncate", "seqlen_reshape"):
                start = _round_to(m.seq_length * (GPT_TRUNC_START if gpt else BERT_TRUNC_START), 8, 8)
                metrics[name] = _seqlen_metric(start, m.seq_length, cl_steps)
            else:
                if index_dir is None:
                    raise ValueError(f"curriculum metric {name} needs an offline analysis directory")
                metrics[name] = _percentile_metric(name, 1 if gpt else 5, cl_steps, index_dir)
        section["data_sampling"] = {"enabled": True, "num_epochs": 1, "num_workers": 0,
                                    "curriculum_learning": {"enabled": True, "curriculum_metrics": metrics}}
    if run.ltd:
        L = m.num_layers
        start = _round_to(m.seq_length * (GPT_LTD_START if gpt else BERT_LTD_START), 8, 8)
        step = max(1, round(m.seq_length * (GPT_LTD_STEP if gpt else BERT_LTD_STEP)))
        require = max(1, round((GPT_LTD_FRACTION if gpt else BERT_LTD_FRACTION) * m.steps * f))
        section["data_routing"] = {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": L, "random_ltd_layer_num": L - 2,
            "random_ltd_layer_id": list(range(1, L - 1)), "model_mask_name": "attention_mask",
            "model_type": "decoder" if gpt else "encoder", "hidden_state_order": "seq_batch_dim",
            "random_ltd_schedule": {"min_value": start, "max_value": m.seq_length, "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": require, "seq_per_step": step}}}}
    return {"train_batch_size": m.global_batch, "train_micro_batch_size_per_gpu": m.micro_batch,
            "data_efficiency": section}


def pretrain_flags(run: RunSpec, scale: Scale, seed: int, *, data_path: str, tokenizer: list[str],
                   ds_config: str | None) -> list[str]:
    """The ``pretrain_gpt.py`` / ``pretrain_bert.py`` flags of ``run`` (without save/load/metrics paths).

    The budget is the data fraction of the 100% run's tokens (``--train-tokens``; random-LTD counts layer-averaged
    tokens there, as Megatron-DeepSpeed does), with an iteration cap of 4x the baseline's steps for curricula that
    shorten early batches. The accounting control stops at the baseline's steps instead, with its LR schedule over
    those steps, so it reads exactly the baseline's data tokens.
    """
    gpt = run.family == "gpt"
    m = scale.gpt if gpt else scale.bert
    f = run.data_fraction
    lr = m.lr / f  # the recipes scale the peak LR by 1 / data fraction
    min_lr = m.lr * (GPT_MIN_LR_RATIO if gpt else BERT_MIN_LR_RATIO)
    warmup_tokens = int((GPT_WARMUP_FRACTION if gpt else BERT_WARMUP_FRACTION) * m.tokens)
    flags = [
        "--num-layers", m.num_layers, "--hidden-size", m.hidden_size, "--num-attention-heads",
        m.num_attention_heads, "--seq-length", m.seq_length, "--max-position-embeddings", m.seq_length,
        "--micro-batch-size", m.micro_batch, "--global-batch-size", m.global_batch,
        "--data-path", data_path, "--split", "98,2,0", *tokenizer, "--seed", seed,
        "--lr", f"{lr:.6g}", "--min-lr", f"{min_lr:.6g}", "--lr-decay-style", "cosine" if gpt else "linear",
        "--weight-decay", 0.1 if gpt else 0.01, "--adam-beta1", 0.9, "--adam-beta2", 0.95 if gpt else 0.999,
        "--clip-grad", 1.0, "--hidden-dropout", m.dropout, "--attention-dropout", m.dropout,
        "--init-method-std", 0.02,
        "--eval-interval", max(1, m.steps // 16), "--eval-iters", 4, "--log-interval", max(1, m.steps // 64),
        "--skip-test",
    ]
    if run.match_baseline_data:
        flags += ["--train-iters", m.steps, "--lr-warmup-iters", max(1, round(m.steps * (
            GPT_WARMUP_FRACTION if gpt else BERT_WARMUP_FRACTION))), "--lr-decay-iters", m.steps]
    else:
        tokens = int(round(m.tokens * f))
        flags += ["--train-tokens", tokens, "--train-iters", 4 * m.steps, "--lr-warmup-tokens",
                  max(1, warmup_tokens), "--lr-decay-tokens", tokens]
    if ds_config is not None:
        flags += ["--deepspeed", "--deepspeed_config", ds_config]
        if run.cl:
            flags.append("--data-efficiency-curriculum-learning")
        if run.ltd:
            flags.append("--random-ltd")
    return [str(x) for x in flags]


def finetune_flags(run: RunSpec, scale: Scale, seed: int, *, data_path: str, valid_data_path: str,
                   tokenizer: list[str], ds_config: str | None, pretrained: str) -> list[str]:
    """Table 6: fine-tune the GPT baseline's checkpoint for ``finetune_fraction`` of the 100% run on the fine-tuning
    corpus, with the recipes' optimizer and a tenth of the pretraining LR (GPT-2 fine-tuning practice).

    The fine-tuning corpus is a handful of long documents (plays), too few for a document-level ``--split`` to
    leave a validation share, so the in-run validation reads ``valid_data_path`` (the held-out fine-tuning text
    the perplexity is measured on) through Megatron's per-split ``--train-data-path`` / ``--valid-data-path``.
    """
    m = scale.gpt
    steps = max(2, round(m.steps * scale.finetune_fraction))
    flags = pretrain_flags(RunSpec("gpt", 1.0, (), run.ltd), scale, seed, data_path=data_path,
                           tokenizer=tokenizer, ds_config=ds_config)
    flags = _drop(flags, ("--train-tokens", "--train-iters", "--lr-warmup-tokens", "--lr-decay-tokens", "--lr",
                          "--min-lr", "--eval-interval", "--log-interval", "--data-path", "--split"))
    return flags + ["--train-data-path", data_path, "--valid-data-path", valid_data_path, "--finetune", "--load", pretrained, "--train-iters", str(steps), "--lr", f"{m.lr / 10:.6g}",
                    "--min-lr", f"{m.lr / 100:.6g}", "--lr-warmup-iters", str(max(1, steps // 20)),
                    "--eval-interval", str(max(1, steps // 4)), "--log-interval", str(max(1, steps // 32))]


def _drop(flags: list[str], names: tuple[str, ...]) -> list[str]:
    """``flags`` without the valued flags ``names``."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
            continue
        if flag in names:
            skip = True
            continue
        out.append(flag)
    return out


def steps_estimate(run: RunSpec, scale: Scale) -> int:
    """Optimizer steps the run takes when no curriculum shortens batches (for --dry-run plans)."""
    m = scale.gpt if run.family == "gpt" else scale.bert
    if run.finetune:
        return max(2, round(m.steps * scale.finetune_fraction))
    return m.steps if run.match_baseline_data else math.ceil(m.steps * run.data_fraction)
