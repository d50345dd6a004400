"""Proxy downstream tasks for GPT built from held-out documents, in the generic multiple-choice JSONL format that
``tasks/main.py --task MC`` reads (``{"context", "choices", "gold"}``).

The paper averages 19 benchmark tasks that a model pretrained for minutes on two CPU cores cannot solve above
chance. These proxies ask what such a model can learn, with the same scoring (log-likelihood of each choice after
the context, accuracy and few-shot prompting as for the real tasks):

* ``lastword_mc``: a held-out sentence without its last word; the true last word against three words of about the
  same frequency in the held-out text (so unigram frequency alone does not give the answer).
* ``next_sentence_mc``: a held-out sentence; the sentence that follows it in its document against three
  sentences of about the same length from other held-out documents.

Each task has a ``test`` file (the scored examples) and a ``train`` file (the few-shot demonstration pool) drawn
from disjoint documents. Everything is a pure function of the documents and the seed.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from typing import Callable, Sequence

from megatron.data.preprocessing.sentence_splitter import split_sentences

__all__ = ["PROXY_TASKS", "build_gpt_proxy_tasks"]

PROXY_TASKS = {
    "lastword_mc": "last word of a held-out sentence among 4 words of similar frequency (4-way, chance 25%)",
    "next_sentence_mc": "the sentence that follows a held-out sentence among 4 of similar length from other "
                        "documents (4-way, chance 25%)",
}
_WORD = re.compile(r"^[A-Za-z][A-Za-z']*[A-Za-z]$")
_CHOICES = 4


def _sentences(text: str, lo: int, hi: int) -> list[str]:
    """The document's sentences, and clauses (split at ``;`` and ``:``, which the KJV uses between clauses), of
    ``lo``..``hi`` words, whitespace collapsed, in document order."""
    out = []
    for sentence in split_sentences(text):
        for clause in re.split(r"(?<=[;:])\s+", sentence):
            clause = " ".join(clause.split())
            if lo <= len(clause.split()) <= hi:
                out.append(clause)
    return out


def _lastword_examples(docs: Sequence[str], freq: Counter, rng: random.Random, limit: int,
                       max_words: int) -> list[dict]:
    ranked = [w for w, _ in freq.most_common() if _WORD.match(w)]
    rank = {w: i for i, w in enumerate(ranked)}
    rows = []
    for text in docs:
        for s in _sentences(text, min(6, max_words), max_words):
            words = s.split()
            last = words[-1].rstrip(".,;:!?\"')")
            if not _WORD.match(last) or last not in rank or len(ranked) < 50:
                continue
            # Distractors from a window of similar frequency rank around the answer.
            r = rank[last]
            lo, hi = max(0, r - 25), min(len(ranked), r + 26)
            pool = [w for w in ranked[lo:hi] if w.lower() != last.lower()]
            if len(pool) < _CHOICES - 1:
                continue
            choices = rng.sample(pool, _CHOICES - 1)
            gold = rng.randrange(_CHOICES)
            choices.insert(gold, last)
            rows.append({"context": " ".join(words[:-1]), "choices": choices, "gold": gold})
            if len(rows) >= limit:
                return rows
    return rows


def _next_sentence_examples(docs: Sequence[str], rng: random.Random, limit: int,
                            max_words: int) -> list[dict]:
    per_doc = [_sentences(text, min(4, max_words), max_words) for text in docs]
    pool = [(d, s) for d, sents in enumerate(per_doc) for s in sents]
    rows = []
    for d, sents in enumerate(per_doc):
        for a, b in zip(sents, sents[1:]):
            others = [s for e, s in pool if e != d and abs(len(s.split()) - len(b.split())) <= 4]
            if len(others) < _CHOICES - 1:
                continue
            choices = rng.sample(others, _CHOICES - 1)
            gold = rng.randrange(_CHOICES)
            choices.insert(gold, b)
            rows.append({"context": a, "choices": choices, "gold": gold})
            if len(rows) >= limit:
                return rows
    return rows


def _write(path: str, rows: list[dict]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def build_gpt_proxy_tasks(docs: Sequence[str], out_dir: str, examples: int, seed: int = 1234,
                          max_words: int = 30, fits: Callable[[str], bool] | None = None) -> dict[str, dict]:
    """Write ``{task}_test.jsonl`` (``examples`` rows) and ``{task}_train.jsonl`` (demonstrations) for every proxy
    task into ``out_dir``; returns ``{task: {"test": path, "train": path, "examples": n}}``. Sentences have at most
    ``max_words`` words; ``fits(text)`` (e.g. "tokenizes to at most half the sequence length") filters the
    sentences further, so a context and a choice fit the model's sequence length.

    The held-out documents are interleaved into a test half and a demonstration half, so no demonstration comes
    from a test example's document.

    Raises:
        ValueError: the documents give fewer than ``examples // 2`` examples of a task.
    """
    os.makedirs(out_dir, exist_ok=True)
    if fits is not None:  # keep only documents' sentences that fit: filter the text the generators see
        docs = [" ".join(s for s in _sentences(text, 1, max_words) if fits(s)) for text in docs]
    test_docs, train_docs = list(docs[0::2]), list(docs[1::2])
    freq = Counter(w.rstrip(".,;:!?\"')") for text in docs for w in text.split())
    out = {}
    for task in PROXY_TASKS:
        files = {}
        for part, part_docs, limit in (("test", test_docs, examples), ("train", train_docs, max(examples, 50))):
            rng = random.Random(f"{seed}-{task}-{part}")
            rows = (_lastword_examples(part_docs, freq, rng, limit, max_words) if task == "lastword_mc"
                    else _next_sentence_examples(part_docs, rng, limit, max_words))
            if len(rows) < max(2, examples // 2):
                raise ValueError(f"the held-out documents give only {len(rows)} {task} {part} examples (want "
                                 f"{examples}); hold out more text or lower the scale's eval_examples")
            path = os.path.join(out_dir, f"{task}_{part}.jsonl")
            _write(path, rows)
            files[part] = path
        out[task] = {**files, "examples": examples}
    return out
