"""Pretrain a GPT language model (Megatron's ``pretrain_gpt.py``): the GPT providers plus ``training.pretrain``.

Launch on one process with ``python pretrain_gpt.py ...`` or on several with
``torchrun --nproc-per-node N pretrain_gpt.py ...``; every flag is generated from the rooms' config dataclasses
(``python pretrain_gpt.py --help``). See ``examples/`` for complete recipes.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import torch
from torch import nn

from megatron.data.batch import build_gpt_batch
from megatron.data.gpt_dataset import build_gpt_datasets
from megatron.logging import run_entry_point, setup_logging
from megatron.model.gpt import GPTModel
from megatron.model.language_model import masked_token_mean
from megatron.parallel.state import ParallelState
from megatron.training.config import PretrainConfig
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION, build_data_efficiency_extensions
from megatron.training.loop import TrainResult
from megatron.training.pipeline_model import PipelinedGPT
from megatron.training.pretrain import pretrain


def model_provider(cfg: PretrainConfig, pstate: ParallelState, vocab_size: int) -> nn.Module:
    """GPT with the padded vocabulary; initialization is seeded by ``--seed`` (identical at every TP and PP size).

    With ``--pipeline-model-parallel-size`` > 1 this rank's stages (chunks with
    ``--num-layers-per-virtual-pipeline-stage``), which the loop runs through a pipeline schedule.
    """
    p = cfg.parallel
    if p.pipeline_model_parallel_size > 1:
        return PipelinedGPT(cfg.model, pstate, vocab_size, seed=cfg.training.seed,
                            num_layers_per_virtual_stage=p.num_layers_per_virtual_pipeline_stage)
    return GPTModel(cfg.model, pstate, vocab_size, seed=cfg.training.seed)


def datasets_provider(cfg: PretrainConfig, tokenizer: Any, num_samples: tuple[int, int, int]) -> tuple:
    """Train/valid/test GPT datasets of at least ``num_samples`` samples each, split by ``--split``."""
    return build_gpt_datasets(cfg.data, tokenizer, num_samples, cfg.training.seed)


def collate_fn(samples: list[dict], cfg: PretrainConfig, tokenizer: Any) -> dict[str, Any]:
    """tokens/labels/loss_mask/position_ids (and an attention mask only when document resets need one)."""
    return build_gpt_batch(samples, tokenizer.eod, cfg.data)


def forward_step(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked token mean of the per-token loss of one micro-batch (Megatron's ``loss_func``)."""
    per_token = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])
    loss = masked_token_mean(per_token, batch["loss_mask"])
    return loss, {"loss/lm": loss.detach()}


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse flags, then train; returns the run's counters and losses.

    User mistakes raise ValueError / NotImplementedError (the command line prints them as one ``error:`` line).

    ``--deepspeed_config FILE`` with ``--data-efficiency-curriculum-learning`` / ``--random-ltd`` turns on the data
    efficiency library; its config is checked here, before any process group exists.
    """
    setup_logging()  # the DeepSpeed config's notes are logged before training starts
    cfg = PretrainConfig.from_args(argv, extra_sections=DATA_EFFICIENCY_SECTION)
    extensions = build_data_efficiency_extensions(cfg)
    return pretrain(cfg, model_provider, datasets_provider, forward_step, collate_fn=collate_fn,
                    extensions=extensions)


if __name__ == "__main__":
    run_entry_point(main, sys.argv[1:])
