"""RACE: the reader (files under folders, blanks filled by the option, the 128-token question cut, the article as
segment B, labels from the answer letters), its errors with file:line, and a tiny fine-tuning run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.tasks.race import read_race
from training.conftest import load_entry_script

WORDS = "the lord said unto moses go light darkness water and who what is".split()
DOC = {"article": "The LORD said unto Moses,\ngo.", "questions": ["who said _ ?", "what is water"],
       "options": [["the lord", "moses", "water", "light"], ["light", "darkness", "water", "go"]],
       "answers": ["A", "C"], "id": "x"}


def _tokenizer(tmp_path: Path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    return build_tokenizer(TokenizerConfig(tokenizer_type="BertWordPieceLowerCase", vocab_file=str(vocab)))


def _write(path: Path, *docs: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def test_reader_builds_four_sequences_per_question(tmp_path):
    """Every *.txt below a folder is read; A = the question with '_' replaced by the option (else the option
    appended), cut to max_qa_tokens; B = the article; labels are the answer letters' indices."""
    _write(tmp_path / "dev" / "middle" / "1.txt", DOC)
    _write(tmp_path / "dev" / "high" / "2.txt", {**DOC, "answers": ["D", "B"]})
    (tmp_path / "dev" / "notes.md").write_text("not a RACE file")
    tok = _tokenizer(tmp_path)
    ds = read_race([str(tmp_path / "dev")], tok, seq_length=32)
    assert len(ds) == 4 and ds.labels.tolist() == [3, 1, 0, 2]  # high/2.txt sorts before middle/1.txt
    item = ds[2]
    assert item["tokens"].shape == (4, 32)

    def words(c: int) -> list[str]:
        return [tok.inv_vocab[int(i)] for i, m in zip(item["tokens"][c], item["padding_mask"][c]) if m]

    article = ["the", "lord", "said", "unto", "moses", "[UNK]", "go", "[UNK]"]
    assert words(1) == ["[CLS]", "who", "said", "moses", "[UNK]", "[SEP]", *article, "[SEP]"]
    assert words(2)[:5] == ["[CLS]", "who", "said", "water", "[UNK]"]
    assert [tok.inv_vocab[int(i)] for i in ds[3]["tokens"][0][:6]] == ["[CLS]", "what", "is", "water", "light",
                                                                       "[SEP]"]
    assert item["types"][1][:6].tolist() == [0] * 6 and item["types"][1][6] == 1
    short = read_race([str(tmp_path / "dev" / "middle" / "1.txt")], tok, seq_length=32, max_qa_tokens=2)
    assert [tok.inv_vocab[int(i)] for i in short[0]["tokens"][0][:4]] == ["[CLS]", "who", "said", "[SEP]"]
    assert len(read_race([str(tmp_path / "dev")], tok, seq_length=32, max_examples=1)) == 1


@pytest.mark.parametrize("doc, message", [
    ({**DOC, "answers": ["A", "E"]}, r"1\.txt:2: answer 'E' of question 1 is not one of A, B, C, D"),
    ({**DOC, "options": [["a", "b", "c"], ["a", "b", "c", "d"]]}, r"1\.txt:2: question 0 has 3 options"),
    ({k: v for k, v in DOC.items() if k != "article"}, r"1\.txt:2: key 'article' missing"),
    ({**DOC, "answers": ["A"]}, r"1\.txt:2: 2 questions, 2 option lists and 1 answers"),
])
def test_reader_errors_name_file_and_line(tmp_path, doc, message):
    """A bad answer letter, an option count other than four, a missing key or mismatched counts name file:line."""
    path = _write(tmp_path / "1.txt", DOC, doc)
    with pytest.raises(ValueError, match=message):
        read_race([str(path)], _tokenizer(tmp_path), seq_length=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no \*\.txt files"):
        read_race([str(tmp_path / "empty")], _tokenizer(tmp_path), seq_length=32)


def test_race_end_to_end(bert_checkpoint, tmp_path):
    """One epoch of RACE through tasks/main.py: a micro-batch of 2 questions (8 sequences), accuracy per folder
    (named after the path below RACE) and pooled."""
    for split, n in (("train", 3), ("dev/middle", 1), ("dev/high", 1)):
        for i in range(n):
            _write(tmp_path / "RACE" / split / f"{i}.txt", DOC)
    result = load_entry_script("tasks/main.py").main([
        "--task", "RACE", "--train-data", str(tmp_path / "RACE" / "train"), "--valid-data",
        str(tmp_path / "RACE" / "dev" / "middle"), str(tmp_path / "RACE" / "dev" / "high"),
        "--pretrained-checkpoint", bert_checkpoint["load"], "--epochs", "1", "--lr", "1e-4",
        "--micro-batch-size", "2", "--log-interval", "1"])
    assert set(result.per_file) == {"dev/middle", "dev/high"}
    assert result.metrics["total"] == 4 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.details["iterations"] == 3 and result.details["train_examples"] == 6
