"""Evaluation throughput of ``tasks/main.py --task MC`` against lm-evaluation-harness on the same model and task.

One random GPT (``--layers/--hidden/--heads``, the real GPT-2 vocabulary) is saved as our checkpoint and exported to
Hugging Face with ``tools/checkpoint/convert.py``; a multiple-choice task of ``--examples`` rows (4 choices each,
built from the installed KJV the way the reproduction harness builds its next-sentence proxy task) is evaluated
0-shot by both: ours in-process through ``tasks/main.py``'s ``main`` (batched log-likelihoods, longest first), lm-eval
0.4 through ``simple_evaluate(model="hf")`` over a task YAML on the local JSONL. Both run the whole evaluation
including loading the model, on the same threads, interleaved ``--repeats`` times (``bench/compare.py``) so
machine noise hits both; the table reports min and median seconds per side, both ratios, a verdict on the noise,
and the accuracy each computed (they must agree).

    .venv/bin/python bench/bench_eval_throughput.py [--examples 400 --layers 4 --hidden 256 --batch 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import HEADER, Timed, compare, machine_line  # noqa: E402

from megatron.data.preprocessing.corpora import kjv_documents  # noqa: E402
from megatron.data.tokenizers.build import build_tokenizer  # noqa: E402
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size  # noqa: E402
from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt import GPTModel  # noqa: E402
from megatron.parallel.config import ParallelConfig  # noqa: E402
from megatron.parallel.state import ParallelState  # noqa: E402
from megatron.reproduce.proxy_tasks import build_gpt_proxy_tasks  # noqa: E402
from megatron.training.checkpointing import save_checkpoint  # noqa: E402
from megatron.training.config import PretrainConfig  # noqa: E402
from megatron.data.config import DataConfig  # noqa: E402
from megatron.interop.lm_eval_tasks import multiple_choice_task_yaml  # noqa: E402

TASK = "bench_next_sentence"


def _load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build(work: Path, args) -> tuple[Path, Path, Path]:
    """Checkpoint, HF export and task files in ``work``."""
    tok_cfg = TokenizerConfig(tokenizer_type="GPT2BPETokenizer")
    tokenizer = build_tokenizer(tok_cfg)
    cfg = TransformerConfig(num_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                            max_position_embeddings=args.seq, hidden_dropout=0.0, attention_dropout=0.0)
    model = GPTModel(cfg, ParallelState.single(), padded_vocab_size(tokenizer.vocab_size, 128, 1), seed=7).eval()
    run = PretrainConfig(model=cfg, tokenizer=tok_cfg, data=DataConfig(seq_length=args.seq),
                         parallel=ParallelConfig(), world_size=1).to_dict()
    ckpt, hf = work / "ckpt", work / "hf"
    save_checkpoint(ckpt, 1, model=model, optimizer=None, scheduler=None, pstate=ParallelState.single(),
                    train_state={}, config=run)
    _load_script(REPO / "tools" / "checkpoint" / "convert.py", "bench_convert").main(
        ["--model-type", "GPT", "--loader", "megatron", "--saver", "hf", "--load-dir", str(ckpt), "--save-dir",
         str(hf)])
    docs = [d["text"] for d in list(kjv_documents())[:400]]
    tasks = build_gpt_proxy_tasks(docs, str(work / "tasks"), args.examples, max_words=25)
    data = Path(tasks["next_sentence_mc"]["test"])
    (work / "yaml").mkdir()
    (work / "yaml" / f"{TASK}.yaml").write_text(multiple_choice_task_yaml(TASK, str(data), "{{context}}"),
                                                 encoding="utf-8")
    return ckpt, hf, data


def ours(ckpt: Path, data: Path, args) -> tuple[float, float]:
    main = _load_script(REPO / "tasks" / "main.py", "bench_tasks_main").main
    start = time.perf_counter()
    result = main(["--task", "MC", "--load", str(ckpt), "--valid-data", str(data), "--eval-micro-batch-size",
                   str(args.batch)])
    return time.perf_counter() - start, result.metrics["accuracy"]


def theirs(hf: Path, work: Path, args) -> tuple[float, float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf},dtype=float32", tasks=[TASK],
                                  task_manager=TaskManager(include_path=str(work / "yaml")), num_fewshot=0,
                                  batch_size=args.batch, device="cpu")
    return time.perf_counter() - start, out["results"][TASK]["acc,none"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=400)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    os.environ["MEGATRON_DE_NO_PROGRESS"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    os.environ["HF_HOME"] = str(work / "hf_home")
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf_datasets")
    ckpt, hf, data = build(work, args)
    n = sum(1 for _ in open(data, encoding="utf-8"))
    theirs(hf, work, args)  # warm-up: lm-eval builds its dataset cache once
    comparison, acc_ours, acc_theirs = compare(lambda: Timed(*ours(ckpt, data, args)),
                                               lambda: Timed(*theirs(hf, work, args)), repeats=args.repeats,
                                               warmup=0)
    print(f"\nMC evaluation, {n} examples x 4 choices, {args.layers}x{args.hidden} GPT, GPT-2 vocabulary, "
          f"batch {args.batch}, {args.threads} threads, {args.repeats} interleaved repeats; {machine_line()}")
    print("| side | min s | median s | examples/s (best) | accuracy |")
    print("|---|---|---|---|---|")
    for side, label, acc in ((comparison.ours, "ours", acc_ours), (comparison.peer, "lm-eval", acc_theirs)):
        print(f"| {label} | {side.min:.2f} | {side.median:.2f} | {n / side.min:.1f} | {acc:.4f} |")
    print(HEADER)
    print(comparison.row("seconds per evaluation (ratio: ours / lm-eval throughput)", digits=2))
    print(json.dumps({"examples": n, **comparison.as_dict(), "accuracy": {"ours": acc_ours, "lm-eval": acc_theirs}}))


if __name__ == "__main__":
    main()
