#!/usr/bin/env python
"""Offline curriculum-learning analysis of the GPT or BERT training split (thin CLI over the curriculum analyzer).

Builds the training dataset exactly as training will see it with ``--train-data-exact-num-epochs`` (default 1;
same data, split, seed and seq-length flags as pretrain_gpt.py, or with ``--dataset-type bert`` as pretrain_bert.py,
including ``--short-seq-prob``/``--bert-no-binary-head``), so sample id = position in that dataset, and writes
DeepSpeed-named index files under ``--save-path/{metric}/``. BERT samples are analyzed unmasked (``--mask-prob`` is
accepted and ignored: masking changes no sample's length or pairing) and their metrics count real tokens only:
``seqlen`` is the number of non-pad tokens, ``vocab_rarity`` sums over them. A blended training set is analyzed per
component, into ``--save-path/dataset{c}/{metric}/`` (list those paths, in blend order, in the curriculum config).
Each metric's reduce marker records the split's identity (data file, split, seq-length, seed, tokenizer, BERT
sample settings; ``megatron.data_efficiency.curriculum.identity``): training refuses an analysis of another one.

    .venv/bin/python tools/analyze_data.py --data-path data/kjv_text_document --split 949,50,1 --seq-length 1024 \
        --metrics vocab_rarity --save-path data/analysis --num-threads 2

Map/reduce over machines: run ``--task map --num-workers W --worker-id w`` on each, then ``--task reduce`` once;
``--task both`` (default) does everything, running total_vocab_freq before vocab_rarity.

Megatron-DeepSpeed's analyzer command line (``examples_deepspeed/data_efficiency/analyze_data.py``) runs as is:
``--analyzing-task/-metric/-num-workers/-worker-id/-num-threads/-specific-threads`` are the flags above,
``--analyzing-data-type GPT|BERT`` is ``--dataset-type``, ``--save`` is ``--save-path``, ``--global-batch-size``
the map batch (unless ``--batch-size``), ``--train-data-exact-num-epochs N`` the epochs of the analyzed split (BERT
recipes use 5), and the model/training flags those scripts also pass are accepted and listed once as unused. With
``--analyzing-data-type``, total_vocab_freq counts padded_vocab_size + 1 ids as theirs does (the never-seen ids
enter vocab_rarity's normalization), so the files equal theirs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.config import add_dataclass_arguments, dataclass_from_namespace  # noqa: E402
from megatron.data.bert_dataset import BertDataConfig  # noqa: E402
from megatron.data.config import DataConfig  # noqa: E402
from megatron.data.forced_indices import (  # noqa: E402
    mds_bert_index_path,
    mds_gpt_index_paths,
    write_mds_bert_index,
    write_mds_gpt_indices,
)
from megatron.data.tokenizers.build import build_tokenizer  # noqa: E402
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size  # noqa: E402
from megatron.data_efficiency.curriculum.analyzer import AnalyzerOptions, analyze  # noqa: E402
from megatron.data_efficiency.curriculum.index_files import output_prefix  # noqa: E402
from megatron.data_efficiency.curriculum.identity import analysis_identities  # noqa: E402
from megatron.data_efficiency.curriculum.metrics import resolve_metric  # noqa: E402
from megatron.logging import get_logger, setup_logging  # noqa: E402
from megatron.training.config import PretrainConfig  # noqa: E402
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION  # noqa: E402

# DataConfig.num_workers (loader processes) would clash with the analyzer's --num-workers (map workers); forced
# training index files are a training matter.
_DATA_EXCLUDE = ("num_workers", "train_doc_idx_path", "train_sample_idx_path", "train_shuffle_idx_path",
                 "train_idx_path")

logger = get_logger("tools.analyze_data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataclass_arguments(p, AnalyzerOptions, title="analysis")
    add_dataclass_arguments(p, DataConfig, title="data", exclude=_DATA_EXCLUDE)
    add_dataclass_arguments(p, TokenizerConfig, title="tokenizer")
    add_dataclass_arguments(p, BertDataConfig, title="bert (with --dataset-type bert)")
    p.add_argument("--dataset-type", choices=("gpt", "bert"), default="gpt",
                   help="Training dataset to analyze: pretrain_gpt.py's (default) or pretrain_bert.py's.")
    p.add_argument("--analyzing-data-type", choices=("GPT", "BERT"), default=None,
                   help="Megatron-DeepSpeed's spelling of --dataset-type; also sizes total_vocab_freq as theirs "
                        "(padded vocabulary + 1).")
    p.add_argument("--seed", type=int, default=1234, help="Random seed of the dataset indices (as in training).")
    p.add_argument("--no-progress", action="store_true", help="Disable the progress bars.")
    return p


def build_train_components(data_cfg: DataConfig, tok_cfg: TokenizerConfig, seed: int,
                           bert_cfg: BertDataConfig | None = None):
    """The training split built for exactly train_data_exact_num_epochs epochs (default 1) - its components for a
    weighted blend - and the tokenizer.

    This is the dataset pretrain_gpt.py (``bert_cfg`` None) or pretrain_bert.py trains on under curriculum learning
    (the same builder with ``train_data_exact_num_epochs=1``; BERT with masking off, which leaves each sample's
    segments and length as in training); a blend component is its prefix's own one-epoch dataset, so each
    component's analysis is addressed by the component's sample ids.
    """
    from megatron.data.bert_dataset import build_bert_datasets
    from megatron.data.gpt_dataset import build_gpt_datasets

    tokenizer = build_tokenizer(tok_cfg)
    cfg = dataclasses.replace(data_cfg, train_data_exact_num_epochs=data_cfg.train_data_exact_num_epochs or 1)
    if bert_cfg is None:
        train, _, _ = build_gpt_datasets(cfg, tokenizer, (0, 0, 0), seed)
    else:
        unmasked = dataclasses.replace(bert_cfg, mask_prob=0.0)
        train, _, _ = build_bert_datasets(cfg, unmasked, tokenizer, (0, 0, 0), seed)
    if train is None:
        raise ValueError(f"{cfg.data_path or cfg.train_data_path}: the split {cfg.split!r} leaves no training "
                         "documents")
    return (list(train.datasets) if hasattr(train, "datasets") else [train]), tokenizer


def _training_flags(parser: argparse.ArgumentParser, rest: list[str]) -> argparse.Namespace:
    """Parse the flags the analyzer does not use as pretraining flags (Megatron-DeepSpeed's analyzer scripts pass
    model and training flags); a flag that is not a pretraining flag either is an error, as usual."""
    train_parser = PretrainConfig.build_parser({"bert": BertDataConfig, **DATA_EFFICIENCY_SECTION})
    train_parser.prog = parser.prog
    return train_parser.parse_args(rest)


def _write_training_indices(dataset, data_cfg: DataConfig, seed: int, bert_cfg: BertDataConfig | None) -> None:
    """Write the analyzed split's indices under Megatron-DeepSpeed's names beside the data, as its analysis does,
    so that its pretraining scripts' --train-*-idx-path flags find them (existing files are kept)."""
    prefix, epochs = data_cfg.data_path[0], data_cfg.train_data_exact_num_epochs
    if bert_cfg is None:
        paths = mds_gpt_index_paths(prefix, data_cfg.seq_length, seed, epochs)
        if not all(os.path.exists(p) for p in paths.values()):
            arrays = {"doc_index": dataset.doc_index, "sample_index": dataset.sample_index,
                      "shuffle_index": dataset.shuffle_index}
            paths = write_mds_gpt_indices(prefix, arrays, data_cfg.seq_length, seed, epochs)
    else:
        path = mds_bert_index_path(prefix, data_cfg.seq_length, bert_cfg.short_seq_prob, seed, epochs)
        paths = {"samples mapping": path} if os.path.exists(path) else {"samples mapping": write_mds_bert_index(
            prefix, dataset.sample_index, data_cfg.seq_length, bert_cfg.short_seq_prob, seed, epochs)}
    for name, path in paths.items():
        if path is not None:
            logger.info("training split %s: %s", name.replace("_", " "), path)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    for required in ("metrics", "save_path"):
        if not hasattr(ns, required):
            parser.error(f"--{required.replace('_', '-')} is required (Megatron-DeepSpeed's spelling: "
                         f"{'--analyzing-metric' if required == 'metrics' else '--save'})")
    extra = vars(_training_flags(parser, rest)) if rest else {}
    setup_logging()
    if extra:
        logger.info("flags not used by the analysis (model/training settings): %s",
                    ", ".join(f"--{k.replace('_', '-')}" for k in sorted(extra)))
    mds = ns.analyzing_data_type is not None
    if mds:
        ns.dataset_type = ns.analyzing_data_type.lower()
    if not hasattr(ns, "batch_size") and "global_batch_size" in extra:
        ns.batch_size = extra["global_batch_size"]  # Megatron-DeepSpeed maps batches of --global-batch-size
    try:
        opts = dataclass_from_namespace(AnalyzerOptions, ns)
        data_cfg = dataclass_from_namespace(DataConfig, ns)
        if data_cfg.train_data_exact_num_epochs is None:
            data_cfg.train_data_exact_num_epochs = 1
        tok_cfg = dataclass_from_namespace(TokenizerConfig, ns)
        bert_cfg = dataclass_from_namespace(BertDataConfig, ns) if ns.dataset_type == "bert" else None
        components, tokenizer = build_train_components(data_cfg, tok_cfg, ns.seed, bert_cfg)
    except (ValueError, NotImplementedError) as e:
        parser.error(str(e))
    if mds and len(components) == 1 and data_cfg.data_path is not None:
        _write_training_indices(components[0], data_cfg, ns.seed, bert_cfg)
    vocab = tokenizer.vocab_size
    if mds:  # Megatron-DeepSpeed's bincount(minlength=padded_vocab_size + 1)
        vocab = padded_vocab_size(vocab, tok_cfg.make_vocab_size_divisible_by,
                                  extra.get("tensor_model_parallel_size", 1)) + 1
    # The settings that define the analyzed split, per blend component: recorded in the reduce markers (and digested
    # into the fingerprint) so that training refuses an analysis of another seed, split, length, data or tokenizer.
    identities = analysis_identities(data_cfg, tok_cfg, ns.seed, bert_cfg)
    assert len(identities) == len(components), f"{len(identities)} identity records, {len(components)} components"
    # GPT samples hold seq_length + 1 tokens (inputs and the last label); BERT samples seq_length, padded.
    sample_length = data_cfg.seq_length + (1 if bert_cfg is None else 0)
    for c, dataset in enumerate(components):
        save = opts.save_path if len(components) == 1 else os.path.join(opts.save_path, f"dataset{c}")
        print(f"analyzing {len(dataset):,} samples{f' of blend component {c}' if len(components) > 1 else ''} "
              f"into {save}", file=sys.stderr)
        analyze(dataset, dataclasses.replace(opts, save_path=save), vocab_size=vocab, pad_id=None,
                sample_length=sample_length, identity=identities[c], progress=not ns.no_progress)
    if opts.task != "map":
        for metric in map(resolve_metric, opts.metrics):
            if metric.kind != "per_sample":
                continue
            name = metric.name
            paths = [output_prefix(opts.save_path if len(components) == 1 else
                                   os.path.join(opts.save_path, f"dataset{c}"), name, "index_to_sample")
                     for c in range(len(components))]
            print(f"{name}: index_to_sample_path {paths if len(paths) > 1 else paths[0]}")


if __name__ == "__main__":
    main()
