"""Megatron-DeepSpeed's data-efficiency recipes as data: the variables we change, the launcher lines we swap, and
the flags each script passes (facts about those scripts; none of their text lives here).

The recipes are ``examples_deepspeed/data_efficiency/{gpt,bert}/`` of deepspeedai/Megatron-DeepSpeed: the analysis
map and reduce scripts, the pretraining base scripts with their ``ds_config_*_2clmetrics_TEMPLATE.json`` and the
``*_run.sh`` scripts whose commented blocks call them. Two tests use this module:

* ``test_megatron_deepspeed_recipe_scripts.py`` takes the scripts' own text (a checkout named by ``$MDS_REPO``) and
  runs it after :func:`substitute`: each ``NAME=...`` assignment of :data:`RECIPES` gets our value (paths, a tiny
  model, a few steps, one process), the launcher line gets our entry point, and from a ``*_run.sh`` the block named
  in :data:`RUN_BLOCKS` is uncommented. Nothing else of the script changes; the DeepSpeed JSON templates are used as
  they are. ``ssh``/``ds_ssh`` (the base scripts' checkpoint-tracker sync over nodes) run locally.
* ``test_megatron_deepspeed_recipes.py`` (CI, no checkout needed) assembles the same command lines from
  :data:`FLAGS` with the values the scripts compute from our variables, and the JSON from :data:`DS_TEMPLATE`,
  which has the keys and fixed values of their template.

The first test also checks that the flags the real scripts pass are :data:`FLAGS`, so the CI test cannot drift.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from data.conftest import kjv_jsonl_path, preprocess_data, write_jsonl

__all__ = ["EXAMPLES", "TINY", "Recipe", "RECIPES", "RUN_BLOCKS", "FLAGS", "command_line", "matches", "DS_TEMPLATE",
           "template_values", "fill_template", "substitute", "uncomment_block", "build_recipe_corpus"]

EXAMPLES = "examples_deepspeed/data_efficiency"
"""Where the recipes live in a Megatron-DeepSpeed checkout."""

TINY = dict(seq=64, layers=24, hidden=32, heads=2, gbs=4, gpt_train_tokens=4 * 64 * 3, train_samples=1000,
            bert_train_iters_in_million="3e-6", eval_iters=1, ltd_start=16, ltd_steps=8, cl_steps=4, seqlen_min=16)
"""Our sizes: 24 layers (their JSON template fixes random-LTD to layers 1..22 of 24) of width 32, sequences of 64
tokens, 4 samples per step, 768 training tokens (about 6 steps under seqlen truncation), one evaluation batch;
curricula over 4 steps, random-LTD from 16 kept tokens over 8 steps."""

LAUNCH_PRETRAIN = "{record} {python} -m torch.distributed.run --standalone --nproc-per-node 1"
"""What ``deepspeed`` becomes: torchrun with one process (``{record}`` logs the command line for the test)."""


@dataclass(frozen=True)
class Recipe:
    """One script: its path under :data:`EXAMPLES`, the assignments we change (``NAME`` -> new right-hand side,
    ``{placeholders}`` filled by the test), and its launcher line (regex -> replacement)."""

    path: str
    variables: dict[str, str]
    launcher: tuple[str, str] | None = None


_ANALYSIS_COMMON = {
    "num_threads": "2",  # theirs: 40 (a node's cores)
    "save_path": "{analysis}",
    "metric": "{metric}",  # the scripts name total_vocab_freq and, commented out, vocab_rarity: we run both
    "seq_len": "{seq}",
    "data_home": "{data_home}",
    "vocab_path": "{vocab}",
}
_ANALYZE_LAUNCHER = (r"^python \.\./analyze_data\.py ", "{record} {python} {repo}/tools/analyze_data.py ")
_PRETRAIN_COMMON = {
    "hidden_size": "{hidden}",
    "num_attn_heads": "{heads}",
    "global_batch_size": "{gbs}",
    "seq_len": "{seq}",
    "num_gpus": "1",  # theirs: counted over the nodes with ds_ssh nvidia-smi
    "num_gpus_pernode": "1",
    "log_interval": "1",
    "eval_iters": "{eval_iters}",
    "num_save": "1",  # one checkpoint, at the end
    "data_home": "{data_home}",
    "vocab_path": "{vocab}",
    "output_home": "{out}",
    "tensorboard_dir": "{out}/tensorboard/",
}

RECIPES: dict[str, Recipe] = {
    "gpt_map": Recipe("gpt/ds_analyze_gpt_data_map.sh", {**_ANALYSIS_COMMON, "merge_path": "{merges}"},
                      _ANALYZE_LAUNCHER),
    "gpt_reduce": Recipe("gpt/ds_analyze_gpt_data_reduce.sh",
                         {**_ANALYSIS_COMMON, "num_threads_reduce": "2", "merge_path": "{merges}"}, _ANALYZE_LAUNCHER),
    "bert_map": Recipe("bert/ds_analyze_bert_data_map.sh", _ANALYSIS_COMMON, _ANALYZE_LAUNCHER),
    "bert_reduce": Recipe("bert/ds_analyze_bert_data_reduce.sh", {**_ANALYSIS_COMMON, "num_threads_reduce": "2"},
                          _ANALYZE_LAUNCHER),
    "gpt_pretrain": Recipe("gpt/pretrain/ds_pretrain_gpt_1.3B_dense_base_script.sh", {
        **_PRETRAIN_COMMON, "merge_path": "{merges}",
        # theirs count in billions/millions with shell integer arithmetic, which cannot express a few steps
        "train_tokens": "{train_tokens}", "lr_warmup_tokens": "{seq}", "lr_decay_tokens": "{train_tokens}",
        # theirs: 300B tokens' worth of samples; the validation set is sized from it (eval_iters per eval_interval)
        "train_samples": "{train_samples}",
        # their names carry 2048sl; the analysis at our length wrote ..._{seq}sl_...
        "doc_idx_path": "{doc_idx}", "sample_idx_path": "{sample_idx}", "shuffle_idx_path": "{shuffle_idx}",
    }, (r"^deepspeed \$\{dir\}/\.\./\.\./\.\./\.\./pretrain_gpt\.py ", LAUNCH_PRETRAIN + " {repo}/pretrain_gpt.py ")),
    "bert_pretrain": Recipe("bert/pretrain/ds_pretrain_bert_336M_base_script.sh", {
        **_PRETRAIN_COMMON, "lr_warmup_iters": "1",
        "num_workers": "0",  # theirs: 4 loader processes per GPU
        "train_idx_path": "{train_idx}",  # theirs carries 509msl (512 - 3)
    }, (r"^deepspeed \$\{dir\}/\.\./\.\./\.\./\.\./pretrain_bert\.py ", LAUNCH_PRETRAIN + " {repo}/pretrain_bert.py ")),
    "gpt_run": Recipe("gpt/pretrain/ds_pretrain_gpt_1.3B_dense_run.sh", {
        "ltd_start": "{ltd_start}", "ltd_step": "{ltd_steps}",
        "cl_1st_index_to_sample_path": '"{voc_samples}"', "cl_1st_index_to_metric_path": '"{voc_metrics}"',
        "cl_1st_total_step": "{cl_steps}", "cl_2nd_min": "{seqlen_min}", "cl_2nd_max": "{seq}",
        "cl_2nd_total_step": "{cl_steps}",
    }),
    "bert_run": Recipe("bert/pretrain/ds_pretrain_bert_336M_run.sh", {
        "train_iters_in_million": "{bert_train_iters_in_million}", "ltd_start": "{ltd_start}",
        "ltd_step_in_million": "{ltd_steps}e-6",
        "cl_1st_index_to_sample_path": '"{voc_samples}"', "cl_1st_index_to_metric_path": '"{voc_metrics}"',
        "cl_1st_total_step_in_million": "{cl_steps}e-6", "cl_2nd_min": "{seqlen_min}", "cl_2nd_max": "{seq}",
        "cl_2nd_total_step_in_million": "{cl_steps}e-6",
    }),
}
"""Each script's changed assignments and launcher. Everything not named here runs as the script has it."""

RUN_BLOCKS = {"gpt_run": "## CL+random-LTD 300B tokens (100%):", "bert_run": "## CL+random-LTD 1049B tokens (100%):"}
"""The commented block of each ``*_run.sh`` we uncomment: the composed CL (vocabulary rarity + seqlen truncation)
and random-LTD setting, which calls the base script with its positional arguments."""

Flag = tuple[str, str | None]
"""``(flag, value)``: a literal value of their script, a ``{placeholder}`` of ours, or None for a switch."""


def _analysis_flags(task: str, data_type: str, epochs: int) -> list[Flag]:
    gpt = data_type == "GPT"
    workers = [("--analyzing-worker-id", "{worker_id}")] if task == "map" else []
    threads = [("--analyzing-num-threads-reduce", "2")] if task == "reduce" else []
    return [("--analyzing-task", task), ("--analyzing-data-type", data_type), ("--analyzing-metric", "{metric}"),
            ("--analyzing-num-workers", "1"), *workers, ("--analyzing-num-threads", "2"), *threads,
            ("--vocab-file", "{vocab}"), *([("--merge-file", "{merges}")] if gpt else []),
            ("--data-path", "{data_path}"), ("--data-impl", "mmap"),
            ("--tokenizer-type", "GPT2BPETokenizer" if gpt else "BertWordPieceLowerCase"),
            ("--micro-batch-size", "10000"), ("--global-batch-size", "10000"), ("--seq-length", "{seq}"),
            ("--max-position-embeddings", "{seq}"), ("--num-layers", "1"), ("--hidden-size", "1"),
            ("--num-attention-heads", "1"), ("--split", "949,50,1"), ("--distributed-backend", "gloo"),
            ("--train-data-exact-num-epochs", str(epochs)), ("--return-data-index", None), ("--save-interval", "1"),
            ("--save", "{analysis}")]


def _pretrain_flags(gpt: bool) -> list[Flag]:
    head = [("--override-opt_param-scheduler", None), ("--adam-beta1", "0.9"), ("--adam-beta2", "0.95" if gpt else
            "0.999"), ("--tensor-model-parallel-size", "1"), ("--init-method-std", "0.013" if gpt else "0.02"),
            ("--lr-decay-tokens", "{train_tokens}"),
            ("--lr-warmup-tokens", "{seq}") if gpt else ("--lr-warmup-iters", "1"),
            ("--micro-batch-size", "{gbs}"), ("--exit-duration-in-mins", "30000000"), ("--global-batch-size", "{gbs}"),
            ("--num-layers", "24"), ("--hidden-size", "{hidden}"), ("--num-attention-heads", "{heads}"),
            ("--seq-length", "{seq}"), ("--max-position-embeddings", "{seq}"), ("--train-tokens", "{train_tokens}"),
            ("--train-samples", "{train_samples}") if gpt else ("--train-iters", "4000000"),
            ("--lr", "2.0e-4" if gpt else "1e-4"), ("--min-lr", "1.0e-6" if gpt else "1e-5"),
            ("--lr-decay-style", "cosine" if gpt else "linear"), ("--split", "949,50,1"), ("--log-interval", "1"),
            ("--eval-interval", "100" if gpt else "1000"), ("--eval-iters", "{eval_iters}"),
            ("--save-interval", "{save_interval}"), ("--weight-decay", "0.1" if gpt else "1e-2"),
            ("--clip-grad", "1.0"), *([("--hysteresis", "2")] if gpt else []), ("--num-workers", "0"),
            ("--fp16", None), ("--seed", "1234"), ("--load", "{checkpoint}"), ("--save", "{checkpoint}"),
            ("--tensorboard-queue-size", "1"), ("--log-timers-to-tensorboard", None),
            ("--log-batch-size-to-tensorboard", None), ("--log-validation-ppl-to-tensorboard", None),
            ("--tensorboard-dir", "{tensorboard}"), *([("--checkpoint-activations", None)] if gpt else []),
            ("--log-optimizer-states-to-tensorboard", None)]
    ltd = [("--random-ltd", None)] if gpt else [("--attention-dropout", "1e-1"), ("--hidden-dropout", "1e-1"),
                                                ("--random-ltd", None)]
    indices = ([("--train-doc-idx-path", "{doc_idx}"), ("--train-sample-idx-path", "{sample_idx}"),
                ("--train-shuffle-idx-path", "{shuffle_idx}")] if gpt else [("--train-idx-path", "{train_idx}")])
    data = [("--vocab-file", "{vocab}"), *([("--merge-file", "{merges}")] if gpt else []),
            ("--data-path", "{data_path}"), ("--data-impl", "mmap")]
    deepspeed = [("--deepspeed", None), ("--deepspeed_config", "{ds_config}"), ("--zero-stage", "1" if gpt else "0"),
                 ("--pipeline-model-parallel-size", "1"), ("--no-pipeline-parallel", None),
                 *([("--deepspeed-activation-checkpointing", None)] if gpt else [])]
    return [*head, *ltd, *indices, ("--data-efficiency-curriculum-learning", None), *data, *deepspeed]


FLAGS: dict[str, list[Flag]] = {
    "gpt_map": _analysis_flags("map", "GPT", 1), "gpt_reduce": _analysis_flags("reduce", "GPT", 1),
    "bert_map": _analysis_flags("map", "BERT", 5), "bert_reduce": _analysis_flags("reduce", "BERT", 5),
    "gpt_pretrain": _pretrain_flags(gpt=True), "bert_pretrain": _pretrain_flags(gpt=False),
}
"""The command line each script passes, in order, in the setting we run (CL + random-LTD on, activation
checkpointing as each base script has it: on for GPT, off for BERT; ZeRO stage 1 for GPT, 0 for BERT)."""


def command_line(flags: list[Flag], values: dict[str, object]) -> list[str]:
    """``flags`` as argv, ``{placeholders}`` filled from ``values``."""
    argv: list[str] = []
    for flag, value in flags:
        argv += [flag] if value is None else [flag, value.format(**values)]
    return argv


def matches(flags: list[Flag], argv: list[str]) -> bool:
    """Whether ``argv`` is ``flags`` with any values at the placeholders (their literals must be equal)."""
    if len(argv) != sum(1 if v is None else 2 for _, v in flags):
        return False
    i = 0
    for flag, value in flags:
        if argv[i] != flag or (value is not None and "{" not in value and argv[i + 1] != value):
            return False
        i += 1 if value is None else 2
    return True


DS_TEMPLATE = """{
  "train_batch_size": GBSIZE, "train_micro_batch_size_per_gpu": MBSIZE, "steps_per_print": LOG_INTERVAL,
  "zero_optimization": {"stage": ZERO_STAGE}, "gradient_clipping": 1.0, "prescale_gradients": PRESCALE_GRAD,
  "fp16": {"enabled": true, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2, "min_loss_scale": 1,
           "initial_scale_power": 11},
  "wall_clock_breakdown": false, "dataloader_drop_last": true,
  "data_efficiency": {"enabled": true, "seed": DATA_EFFICIENCY_SEED,
    "data_routing": {"enabled": LTD_ENABLED, "random_ltd": {"enabled": LTD_ENABLED, "total_layer_num": 24,
      "random_ltd_layer_num": 22, "random_ltd_layer_id": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22],
      "model_mask_name": "attention_mask", "model_type": "MODEL_TYPE", "hidden_state_order": "seq_batch_dim",
      "random_ltd_schedule": {"min_value": LTD_MIN, "max_value": LTD_MAX, "schedule_type": "fixed_linear",
                              "schedule_config": {"require_steps": LTD_STEP, "seq_per_step": 16}}}},
    "data_sampling": {"enabled": CL_ENABLED, "num_workers": DATA_SAMPLING_NUM_WORKERS,
      "curriculum_learning": {"enabled": CL_ENABLED, "data_cluster_path": "CL_CLUSTER_PATH", "curriculum_metrics": {
        "CL_1st_METRIC_NAME": {"index_to_sample_path": "CL_1st_SAMPLE_PATH",
          "index_to_metric_path": "CL_1st_METRIC_PATH", "difficulty_type": "CL_1st_DIFF_TYPE",
          "clustering_type": "CL_1st_CLUSTER_TYPE", "min_difficulty": CL_1st_MIN,
          "max_difficulty": CL_1st_MAX, "schedule_type": "fixed_root", "schedule_config": {
            "total_curriculum_step": CL_1st_TOTAL_STEP, "difficulty_step": CL_1st_DIFF_STEP,
            "root_degree": CL_1st_ROOT}},
        "CL_2nd_METRIC_NAME": {"index_to_sample_path": "CL_2nd_SAMPLE_PATH",
          "index_to_metric_path": "CL_2nd_METRIC_PATH", "difficulty_type": "CL_2nd_DIFF_TYPE",
          "clustering_type": "CL_2nd_CLUSTER_TYPE", "min_difficulty": CL_2nd_MIN,
          "max_difficulty": CL_2nd_MAX, "schedule_type": "fixed_root", "schedule_config": {
            "total_curriculum_step": CL_2nd_TOTAL_STEP, "difficulty_step": CL_2nd_DIFF_STEP,
            "root_degree": CL_2nd_ROOT}}}}}}}
"""
"""The keys and fixed values of their ``ds_config_{gpt,bert}_2clmetrics_TEMPLATE.json`` (which differ only in
``model_type``), with their placeholder names."""


def template_values(*, gpt: bool, values: dict[str, object]) -> dict[str, object]:
    """What the base scripts' ``sed`` chain puts for each placeholder, at our variables (``values``)."""
    zero_stage = 1 if gpt else 0
    return {"GBSIZE": values["gbs"], "MBSIZE": values["gbs"], "LOG_INTERVAL": 1, "ZERO_STAGE": zero_stage,
            "PRESCALE_GRAD": "false" if zero_stage else "true", "DATA_EFFICIENCY_SEED": 1234,
            "MODEL_TYPE": "decoder" if gpt else "encoder", "LTD_ENABLED": "true", "LTD_MIN": values["ltd_start"],
            "LTD_MAX": values["seq"], "LTD_STEP": values["ltd_steps"], "CL_ENABLED": "true",
            "DATA_SAMPLING_NUM_WORKERS": 0, "CL_CLUSTER_PATH": values["data_cluster"], "CL_1st_METRIC_NAME": "voc",
            "CL_1st_SAMPLE_PATH": values["voc_samples"], "CL_1st_METRIC_PATH": values["voc_metrics"],
            "CL_1st_DIFF_TYPE": "percentile", "CL_1st_CLUSTER_TYPE": "schedule_based",
            "CL_1st_MIN": 1 if gpt else 5, "CL_1st_MAX": 100, "CL_1st_TOTAL_STEP": values["cl_steps"],
            "CL_1st_DIFF_STEP": 1, "CL_1st_ROOT": 2, "CL_2nd_METRIC_NAME": "seqlen_truncate",
            "CL_2nd_SAMPLE_PATH": "dummy", "CL_2nd_METRIC_PATH": "dummy", "CL_2nd_DIFF_TYPE": "value",
            "CL_2nd_CLUSTER_TYPE": "single_cluster", "CL_2nd_MIN": values["seqlen_min"], "CL_2nd_MAX": values["seq"],
            "CL_2nd_TOTAL_STEP": values["cl_steps"], "CL_2nd_DIFF_STEP": 8, "CL_2nd_ROOT": 1}


def fill_template(text: str, placeholders: dict[str, object]) -> str:
    """The base scripts' ``sed "s/NAME/value/"`` chain over a template (longest names first, so that no name
    replaces part of another)."""
    for name in sorted(placeholders, key=len, reverse=True):
        text = text.replace(name, str(placeholders[name]))
    return text


def substitute(text: str, recipe: Recipe, values: dict[str, object]) -> str:
    """``text`` with every uncommented ``NAME=...`` line of ``recipe.variables`` given our right-hand side and the
    launcher line swapped; ``values`` fill the ``{placeholders}``.

    Raises:
        ValueError: a variable or the launcher line is not in the script (their script changed: update this module).
    """
    for name, rhs in recipe.variables.items():
        pattern = re.compile(rf"^{re.escape(name)}=.*$", re.M)
        if not pattern.search(text):
            raise ValueError(f"{recipe.path}: no line assigns {name}= (the script changed)")
        value = rhs.format(**values)
        text = pattern.sub(lambda _: f"{name}={value}", text)
    if recipe.launcher is not None:
        pattern, repl = recipe.launcher
        text, n = re.subn(pattern, repl.format(**values).replace("\\", "\\\\"), text, flags=re.M)
        if n != 1:
            raise ValueError(f"{recipe.path}: {n} launcher lines match {pattern!r} (expected 1; the script changed)")
    return text


def uncomment_block(text: str, header: str) -> str:
    """``text`` with the commented lines after ``header`` (up to the next ``####`` rule) uncommented."""
    lines = text.splitlines()
    if header not in lines:
        raise ValueError(f"no block {header!r} in the run script (the script changed)")
    out, inside = [], False
    for line in lines:
        if line == header:
            inside = True
        elif inside and line.startswith("####"):
            inside = False
        elif inside and line.startswith("# "):
            line = line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


def build_recipe_corpus(root: Path, tokenizer: dict[str, str], *, bert: bool) -> dict[str, str]:
    """A corpus for the recipes at our sizes, tokenized with ``tokenizer`` (a tiny-corpus fixture's files), under
    the name the recipe's ``data_path`` gives it (``{root}/pile_text_document`` or
    ``{root}/pile_bert_train_text_sentence``); returns ``tokenizer`` plus ``data_home`` and ``data_path``.

    Their ``--split 949,50,1`` is fixed in the scripts, and the test split must get a document: the first 200 KJV
    chapters as passages of 5 verses make 1,238 documents (about 300k tokens).
    """
    root.mkdir(parents=True, exist_ok=True)
    verses, chapters = [], set()
    with open(kjv_jsonl_path(), encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            chapters.add((verse["book"], verse["chapter"]))
            if len(chapters) > 200:
                break
            verses.append(verse["text"])
    docs = [{"text": " ".join(verses[i:i + 5])} for i in range(0, len(verses), 5)]
    corpus = write_jsonl(root / "passages.jsonl", docs)
    tok = ["--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", tokenizer["vocab_file"],
           "--split-sentences"] if bert else ["--vocab-file", tokenizer["vocab_file"], "--merge-file",
                                              tokenizer["merge_file"], "--append-eod"]
    preprocess_data(["--input", corpus, "--output-prefix", root / "passages", "--workers", "1", *tok])
    built = root / ("passages_text_sentence" if bert else "passages_text_document")
    name = root / ("pile_bert_train_text_sentence" if bert else "pile_text_document")
    for suffix in (".bin", ".idx"):
        shutil.move(f"{built}{suffix}", f"{name}{suffix}")
    return {**tokenizer, "data_home": str(root), "data_path": str(name)}


def recipe_values(root: Path, corpus: dict[str, str], *, gpt: bool) -> dict[str, object]:
    """Every ``{placeholder}`` of :data:`RECIPES` and :data:`FLAGS` for a run under ``root`` on ``corpus`` (from
    :func:`build_recipe_corpus`): our sizes (:data:`TINY`), paths, and what the scripts compute from them."""
    seq, data_home, analysis = TINY["seq"], corpus["data_home"], root / f"analysis_{'gpt' if gpt else 'bert'}"
    stem = f"{data_home}/pile_text_document_train_indexmap_exact1ep_{seq}sl_1234s"
    train_tokens = TINY["gpt_train_tokens"] if gpt else round(
        float(TINY["bert_train_iters_in_million"]) * 1e6 * seq * TINY["gbs"])
    return {**TINY, "data_home": data_home, "data_path": corpus["data_path"], "vocab": corpus["vocab_file"],
            "merges": corpus.get("merge_file", ""), "analysis": analysis, "out": root / "out",
            "voc_samples": analysis / "vocab_rarity" / "vocab_rarity_index_to_sample_percentile_merged",
            "voc_metrics": analysis / "vocab_rarity" / "vocab_rarity_index_to_metric",
            "doc_idx": f"{stem}_doc_idx.npy", "sample_idx": f"{stem}_sample_idx.npy",
            "shuffle_idx": f"{stem}_shuffle_idx.npy",
            "train_idx": f"{data_home}/pile_bert_train_text_sentence_train_indexmap_exact5ep_{seq - 3}msl_0.10ssp_"
                         "1234s.npy",
            "train_tokens": train_tokens, "save_interval": train_tokens // seq // TINY["gbs"], "worker_id": 0}
