"""Pretrain a BERT model (Megatron's ``pretrain_bert.py``): masked-LM + next-sentence providers plus ``pretrain``.

Data: sentence-split ``.bin/.idx`` files (``tools/preprocess_data.py --split-sentences`` with a WordPiece
tokenizer). Each sample is ``[CLS] A [SEP] B [SEP]`` with about ``--mask-prob`` of its tokens to predict; with the
binary head (default; ``--bert-no-binary-head`` turns it off) B is a random segment half of the time and the model
also predicts that. Launch with ``python pretrain_bert.py ...`` or ``torchrun --nproc-per-node N pretrain_bert.py``;
every flag comes from the rooms' config dataclasses (``--help``). ``examples/pretrain_bert_cpu.sh`` is a recipe.
``--deepspeed_config FILE --random-ltd`` turns on random-LTD (``model_type: "encoder"``: kept tokens per sample, the
padding mask gathered at them).
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import torch
from torch import nn

from megatron.data.batch import build_bert_batch
from megatron.data.bert_dataset import BertDataConfig, build_bert_datasets
from megatron.logging import run_entry_point, setup_logging
from megatron.model.bert import BertModel
from megatron.model.language_model import masked_token_mean
from megatron.parallel.state import ParallelState
from megatron.training.config import PretrainConfig
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION, build_data_efficiency_extensions
from megatron.training.loop import TrainResult
from megatron.training.pretrain import pretrain

BERT_SECTION: dict[str, type] = {"bert": BertDataConfig, **DATA_EFFICIENCY_SECTION}
"""``extra_sections`` for ``PretrainConfig.from_args``: ``--mask-prob``, ``--short-seq-prob``,
``--bert-no-binary-head`` land in ``cfg.extras["bert"]``; the data-efficiency flags in
``cfg.extras["data_efficiency"]``."""


def model_provider(cfg: PretrainConfig, pstate: ParallelState, vocab_size: int) -> nn.Module:
    """BERT with the padded vocabulary and, unless ``--bert-no-binary-head``, the next-sentence head."""
    return BertModel(cfg.model, pstate, vocab_size, add_binary_head=cfg.extras["bert"].bert_binary_head,
                     seed=cfg.training.seed)


def datasets_provider(cfg: PretrainConfig, tokenizer: Any, num_samples: tuple[int, int, int]) -> tuple:
    """Train/valid/test BERT datasets of at least ``num_samples`` samples each, split by ``--split``."""
    return build_bert_datasets(cfg.data, cfg.extras["bert"], tokenizer, num_samples, cfg.training.seed)


def collate_fn(samples: list[dict], cfg: PretrainConfig, tokenizer: Any) -> dict[str, Any]:
    """tokens/types/labels/loss_mask/padding_mask/is_random of a micro-batch."""
    return build_bert_batch(samples)


def forward_step(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked-LM loss (mean over the predicted tokens) plus, with the binary head, the next-sentence loss."""
    per_token, binary_logits = model(batch["tokens"], batch["padding_mask"], batch["types"],
                                     lm_labels=batch["labels"])
    lm_loss = masked_token_mean(per_token, batch["loss_mask"])
    metrics = {"loss/lm": lm_loss.detach()}
    if binary_logits is None:
        return lm_loss, metrics
    sop_loss = nn.functional.cross_entropy(binary_logits.float(), batch["is_random"], ignore_index=-1)
    metrics["loss/sop"] = sop_loss.detach()
    return lm_loss + sop_loss, metrics


def check_bert_config(cfg: PretrainConfig) -> None:
    """Rules across the BERT sections, before any process group exists."""
    p = cfg.parallel
    if p.pipeline_model_parallel_size > 1 or p.num_layers_per_virtual_pipeline_stage is not None:
        raise NotImplementedError("BERT with --pipeline-model-parallel-size / --num-layers-per-virtual-pipeline-stage"
                                  " is not built (pipeline stages exist for GPT only); drop them, or use "
                                  "--tensor-model-parallel-size and data parallelism")
    if cfg.model.position_embedding_type != "learned_absolute":
        raise NotImplementedError("BERT uses learned absolute positions; drop --position-embedding-type")
    if cfg.data.seq_length > cfg.model.max_position_embeddings:
        raise ValueError(f"--seq-length ({cfg.data.seq_length}) exceeds --max-position-embeddings "
                         f"({cfg.model.max_position_embeddings}); lower it or raise the table size")


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse flags, then train; returns the run's counters and losses.

    User mistakes raise ValueError / NotImplementedError (the command line prints them as one ``error:`` line).

    The data-efficiency config (``--deepspeed_config``) is checked against a BERT model here, before any process
    group exists: random-LTD must be ``model_type: "encoder"``.
    """
    setup_logging()  # the DeepSpeed config's notes are logged before training starts
    cfg = PretrainConfig.from_args(argv, extra_sections=BERT_SECTION,
                                   defaults={"tokenizer_type": "BertWordPieceLowerCase"})
    check_bert_config(cfg)
    extensions = build_data_efficiency_extensions(cfg, "bert")
    return pretrain(cfg, model_provider, datasets_provider, forward_step, collate_fn=collate_fn,
                    extensions=extensions)


if __name__ == "__main__":
    run_entry_point(main, sys.argv[1:])
