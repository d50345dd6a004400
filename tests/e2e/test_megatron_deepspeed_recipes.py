"""Megatron-DeepSpeed's data-efficiency recipes, run through our entry points with only their variables changed.

The command lines below follow ``examples_deepspeed/data_efficiency/{gpt,bert}/``: the analysis map and reduce
scripts (``--analyzing-*``, ``--save``, ``--train-data-exact-num-epochs``, ``--return-data-index`` and the model and
training flags they also pass) and the pretraining base scripts (their Megatron, data and DeepSpeed options, with the
DeepSpeed JSON filled in from a template with the same keys as theirs, ``sed``-style). The variables are ours: tiny
sizes, the KJV fixture corpus, one process (``deepspeed pretrain_gpt.py`` becomes a call of our ``main``).

Pins: the map/reduce invocations write DeepSpeed's analysis files and Megatron-DeepSpeed's index files; pretraining
with CL (vocabulary rarity + seqlen truncation) and random-LTD trains on that analysis (through
``--train-doc-idx-path``/``--train-idx-path``), in fp16 with the JSON's loss scale 2^11, the recipe's ignored flags
noted once; the BERT pair (5-epoch analysis, ``--train-idx-path``, encoder random-LTD) likewise.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from training.conftest import load_entry_script, megatron_logs, tiny_bert_corpus, tiny_corpus  # noqa: F401 - fixtures
from megatron.data_efficiency.curriculum.analyzer import output_prefix
from megatron.training.checkpointing import read_tracker

SEQ_GPT, SEQ_BERT, LAYERS = 32, 64, 4

# The keys of Megatron-DeepSpeed's ds_config_{gpt,bert}_2clmetrics_TEMPLATE.json, with its placeholder names.
TEMPLATE = """{
  "train_batch_size": GBSIZE, "train_micro_batch_size_per_gpu": MBSIZE, "steps_per_print": LOG_INTERVAL,
  "zero_optimization": {"stage": ZERO_STAGE}, "gradient_clipping": 1.0, "prescale_gradients": PRESCALE_GRAD,
  "fp16": {"enabled": true, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2, "min_loss_scale": 1,
           "initial_scale_power": 11},
  "wall_clock_breakdown": false, "dataloader_drop_last": true,
  "data_efficiency": {"enabled": true, "seed": DATA_EFFICIENCY_SEED,
    "data_routing": {"enabled": LTD_ENABLED, "random_ltd": {"enabled": LTD_ENABLED, "total_layer_num": LAYERS,
      "random_ltd_layer_num": LTD_LAYER_NUM, "random_ltd_layer_id": LTD_LAYER_IDS, "model_mask_name": "attention_mask",
      "model_type": "MODEL_TYPE", "hidden_state_order": "seq_batch_dim",
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


def _fill(values: dict[str, object], path: Path) -> Path:
    """The base scripts' ``sed "s/NAME/value/"`` chain: longest placeholder names first."""
    text = TEMPLATE
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(name, str(values[name]).lower() if isinstance(values[name], bool) else str(values[name]))
    path.write_text(text, encoding="utf-8")
    json.loads(text)  # the filled template is valid JSON
    return path


def _data_copy(corpus: dict[str, str], root: Path) -> str:
    """The corpus' .bin/.idx in a directory of the test's own (the analysis writes index files beside the data)."""
    root.mkdir(parents=True, exist_ok=True)
    for suffix in (".bin", ".idx"):
        shutil.copy(corpus["data_path"] + suffix, root / (Path(corpus["data_path"]).name + suffix))
    return str(root / Path(corpus["data_path"]).name)


def _analyze(task: str, metric: str, *, data_type: str, data: str, tokenizer: list[str], seq: int, epochs: int,
             save: Path) -> None:
    """One ``ds_analyze_*_data_{map,reduce}.sh`` invocation (worker 0 of 1, 2 threads)."""
    num_workers, worker_id, num_threads, num_threads_reduce, batch_size = 1, 0, 2, 2, 100
    if task == "map":
        options = ["--analyzing-task", "map", "--analyzing-data-type", data_type, "--analyzing-metric", metric,
                   "--analyzing-num-workers", num_workers, "--analyzing-worker-id", worker_id,
                   "--analyzing-num-threads", num_threads]
    else:
        options = ["--analyzing-task", "reduce", "--analyzing-data-type", data_type, "--analyzing-metric", metric,
                   "--analyzing-num-workers", num_workers, "--analyzing-num-threads", num_threads,
                   "--analyzing-num-threads-reduce", num_threads_reduce]
    options += [*tokenizer, "--data-path", data, "--data-impl", "mmap", "--micro-batch-size", batch_size,
                "--global-batch-size", batch_size, "--seq-length", seq, "--max-position-embeddings", seq,
                "--num-layers", 1, "--hidden-size", 1, "--num-attention-heads", 1, "--split", "90,8,2",
                "--distributed-backend", "gloo", "--train-data-exact-num-epochs", epochs, "--return-data-index",
                "--save-interval", 1, "--save", save]
    load_entry_script("tools/analyze_data.py").main([str(o) for o in options])


def _metric_lines(logs) -> list[str]:
    return sorted({r.getMessage() for r in logs.records if r.getMessage().startswith("iteration ")})


def _pretrain_options(*, seq: int, ckpt: Path, tb: Path, train_tokens: int, warmup: list[str]) -> list[str]:
    """The base scripts' megatron_options at tiny sizes (gbs 4, mbs 2, 4 layers)."""
    return ["--override-opt_param-scheduler", "--adam-beta1", "0.9", "--adam-beta2", "0.95",
            "--tensor-model-parallel-size", "1", "--init-method-std", "0.013", "--lr-decay-tokens", str(train_tokens),
            *warmup, "--micro-batch-size", "2", "--exit-duration-in-mins", "30000000", "--global-batch-size", "4",
            "--num-layers", str(LAYERS), "--hidden-size", "32", "--num-attention-heads", "2", "--seq-length", str(seq),
            "--max-position-embeddings", str(seq), "--train-tokens", str(train_tokens), "--lr", "1e-3",
            "--min-lr", "1e-6", "--lr-decay-style", "cosine", "--split", "90,8,2", "--log-interval", "1",
            "--eval-interval", "100", "--eval-iters", "1", "--save-interval", "100", "--weight-decay", "0.1",
            "--clip-grad", "1.0", "--num-workers", "0", "--fp16", "--seed", "1234", "--load", str(ckpt),
            "--save", str(ckpt), "--tensorboard-queue-size", "1", "--log-timers-to-tensorboard",
            "--log-batch-size-to-tensorboard", "--log-validation-ppl-to-tensorboard", "--tensorboard-dir", str(tb),
            "--checkpoint-activations", "--log-optimizer-states-to-tensorboard"]


def _deepspeed_options(config: Path, zero_stage: int) -> list[str]:
    return ["--deepspeed", "--deepspeed_config", str(config), "--zero-stage", str(zero_stage),
            "--pipeline-model-parallel-size", "1", "--no-pipeline-parallel", "--deepspeed-activation-checkpointing"]


def _json_values(*, seq: int, model_type: str, analysis: Path, cl_min: int, zero_stage: int, tmp: Path) -> dict:
    """The base script's template variables: CL voc (percentile, schedule_based) + seqlen_truncate, random-LTD on
    layers 1..L-2."""
    rarity = analysis / "vocab_rarity"
    return {
        "GBSIZE": 4, "MBSIZE": 2, "LOG_INTERVAL": 1, "ZERO_STAGE": zero_stage, "PRESCALE_GRAD": zero_stage == 0,
        "DATA_EFFICIENCY_SEED": 1234, "LTD_ENABLED": True, "LAYERS": LAYERS, "LTD_LAYER_NUM": LAYERS - 2,
        "LTD_LAYER_IDS": list(range(1, LAYERS - 1)), "MODEL_TYPE": model_type, "LTD_MIN": 16, "LTD_MAX": seq,
        "LTD_STEP": 8, "CL_ENABLED": True, "DATA_SAMPLING_NUM_WORKERS": 0, "CL_CLUSTER_PATH": tmp / "data_cluster",
        "CL_1st_METRIC_NAME": "voc", "CL_1st_SAMPLE_PATH": rarity / "vocab_rarity_index_to_sample_percentile_merged",
        "CL_1st_METRIC_PATH": rarity / "vocab_rarity_index_to_metric", "CL_1st_DIFF_TYPE": "percentile",
        "CL_1st_CLUSTER_TYPE": "schedule_based", "CL_1st_MIN": cl_min, "CL_1st_MAX": 100, "CL_1st_TOTAL_STEP": 4,
        "CL_1st_DIFF_STEP": 1, "CL_1st_ROOT": 2, "CL_2nd_METRIC_NAME": "seqlen_truncate",
        "CL_2nd_SAMPLE_PATH": "dummy", "CL_2nd_METRIC_PATH": "dummy", "CL_2nd_DIFF_TYPE": "value",
        "CL_2nd_CLUSTER_TYPE": "single_cluster", "CL_2nd_MIN": 16, "CL_2nd_MAX": seq, "CL_2nd_TOTAL_STEP": 4,
        "CL_2nd_DIFF_STEP": 8, "CL_2nd_ROOT": 1,
    }


def _check_run(result, logs, ckpt: Path, iterations: int) -> list[str]:
    """The run trained ``iterations`` steps in fp16 at the JSON's loss scale, with CL and random-LTD, noted the
    ignored flags once and saved; returns the metric lines."""
    assert result.exit_reason == "finished" and result.iteration == iterations
    assert read_tracker(ckpt) == iterations
    lines = _metric_lines(logs)
    assert len(lines) == iterations
    assert all("loss scale: 2048.0" in line and "ltd_kept_tokens" in line for line in lines)
    assert all("difficulty: voc=" in line and "seqlen_truncate=" in line for line in lines)
    notes = {r.getMessage() for r in logs.records if r.getMessage().startswith("Megatron flags accepted without")}
    assert len(notes) == 1 and "--tensorboard-queue-size 1" in notes.pop()
    return lines


def test_gpt_analysis_then_pretraining_with_cl_and_random_ltd(tiny_corpus, tmp_path, megatron_logs):
    """GPT: map/reduce total_vocab_freq then vocab_rarity with Megatron-DeepSpeed's command lines, then its
    pretraining command line with CL (voc + seqlen_truncate) and random-LTD on the analysis and the index files
    the analysis wrote."""
    data = _data_copy(tiny_corpus, tmp_path / "data")
    tokenizer = ["--vocab-file", tiny_corpus["vocab_file"], "--merge-file", tiny_corpus["merge_file"],
                 "--tokenizer-type", "GPT2BPETokenizer"]
    analysis = tmp_path / "analysis_gpt_1epoch"
    for metric in ("total_vocab_freq", "vocab_rarity"):
        for task in ("map", "reduce"):
            _analyze(task, metric, data_type="GPT", data=data, tokenizer=tokenizer, seq=SEQ_GPT, epochs=1,
                     save=analysis)
    for suffix in ("index_to_sample_percentile_merged", "index_to_metric", "sample_to_metric"):
        assert Path(output_prefix(str(analysis), "vocab_rarity", suffix) + ".bin").is_file()
    stem = f"{data}_train_indexmap_exact1ep_{SEQ_GPT}sl_1234s"
    config = _fill(_json_values(seq=SEQ_GPT, model_type="decoder", analysis=analysis, cl_min=1, zero_stage=1,
                                tmp=tmp_path), tmp_path / "ds_config_gpt.json")
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()  # the base script's mkdir -p ${checkpoint_path}
    argv = [*_pretrain_options(seq=SEQ_GPT, ckpt=ckpt, tb=tmp_path / "tb", train_tokens=4 * 4 * 24,
                               warmup=["--lr-warmup-tokens", "64"]),
            "--train-samples", "1000", "--random-ltd", "--train-doc-idx-path", f"{stem}_doc_idx.npy",
            "--train-sample-idx-path", f"{stem}_sample_idx.npy", "--train-shuffle-idx-path", f"{stem}_shuffle_idx.npy",
            "--data-efficiency-curriculum-learning", *tokenizer[:4], "--data-path", data, "--data-impl", "mmap",
            *_deepspeed_options(config, 1)]
    megatron_logs.set_level(logging.INFO, logger="megatron")
    result = load_entry_script("pretrain_gpt.py").main(argv)
    lines = _check_run(result, megatron_logs, ckpt, iterations=result.iteration)
    # the truncation schedule starts at its minimum and reaches the full length
    assert 4 <= result.iteration <= 8 and "seqlen_truncate=16" in lines[0] and "seqlen_truncate=32" in lines[-1]


def test_bert_analysis_then_pretraining_with_cl_and_random_ltd(tiny_bert_corpus, tmp_path, megatron_logs):
    """BERT: the 5-epoch analysis (map/reduce) with Megatron-DeepSpeed's command lines writes the samples mapping
    its pretraining script names in --train-idx-path; pretraining (default WordPiece tokenizer, as its script
    assumes) trains with CL and encoder random-LTD on that analysis."""
    data = _data_copy(tiny_bert_corpus, tmp_path / "data")
    tokenizer = ["--vocab-file", tiny_bert_corpus["vocab_file"], "--tokenizer-type", "BertWordPieceLowerCase"]
    analysis = tmp_path / "analysis_bert_5epoch"
    for metric in ("total_vocab_freq", "vocab_rarity"):
        for task in ("map", "reduce"):
            _analyze(task, metric, data_type="BERT", data=data, tokenizer=tokenizer, seq=SEQ_BERT, epochs=5,
                     save=analysis)
    train_idx = f"{data}_train_indexmap_exact5ep_{SEQ_BERT - 3}msl_0.10ssp_1234s.npy"
    assert Path(train_idx).is_file()
    config = _fill(_json_values(seq=SEQ_BERT, model_type="encoder", analysis=analysis, cl_min=5, zero_stage=0,
                                tmp=tmp_path), tmp_path / "ds_config_bert.json")
    ckpt = tmp_path / "checkpoint"
    argv = [*_pretrain_options(seq=SEQ_BERT, ckpt=ckpt, tb=tmp_path / "tb", train_tokens=3 * 4 * 40,
                               warmup=["--lr-warmup-iters", "1"]),
            "--train-iters", "1000", "--attention-dropout", "0.1", "--hidden-dropout", "0.1", "--random-ltd",
            "--train-idx-path", train_idx, "--data-efficiency-curriculum-learning",
            "--vocab-file", tiny_bert_corpus["vocab_file"], "--data-path", data, "--data-impl", "mmap",
            *_deepspeed_options(config, 0)]
    megatron_logs.set_level(logging.INFO, logger="megatron")
    result = load_entry_script("pretrain_bert.py").main(argv)
    _check_run(result, megatron_logs, ckpt, iterations=result.iteration)
    assert 2 <= result.iteration <= 6

