"""``tools/train_tokenizer.py`` / ``megatron.data.preprocessing.tokenizer_training``: trained files load through
``build_tokenizer``, agree with the HF ``tokenizer.json`` written beside them, and are byte-identical across runs.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from megatron.data.preprocessing.corpora import kjv_documents, write_jsonl
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data.preprocessing.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

TOOL = Path(__file__).resolve().parents[2] / "tools" / "train_tokenizer.py"
UNSEEN = "Ünïcode the tokenizer never saw: 😀 中文 Ελληνικά"


def _tool():
    spec = importlib.util.spec_from_file_location("train_tokenizer_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve field types through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, list[str]]:
    """80 KJV chapters as JSONL (~280 kB) and their texts."""
    docs = list(itertools.islice(kjv_documents(), 80))
    path = str(tmp_path_factory.mktemp("corpus") / "kjv.jsonl")
    write_jsonl(docs, path)
    return path, [d["text"] for d in docs]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_gpt2bpe_cli_outputs_load(corpus, tmp_path, capsys):
    """--type gpt2bpe writes vocab.json + merges.txt (+ tokenizer.json) with <|endoftext|>; they load as
    GPT2BPETokenizer, are lossless on unseen unicode, and match the HF tokenizer.json ids."""
    path, texts = corpus
    out = tmp_path / "bpe"
    assert _tool().main(["--input", path, "--type", "gpt2bpe", "--vocab-size", "600", "--output-dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["merges.txt", "tokenizer.json", "vocab.json"]
    assert "--tokenizer-type GPT2BPETokenizer" in capsys.readouterr().out
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 600 and "<|endoftext|>" in vocab
    tok = build_tokenizer(TokenizerConfig(vocab_file=str(out / "vocab.json"), merge_file=str(out / "merges.txt")))
    assert tok.vocab_size == 600 and tok.eod == vocab["<|endoftext|>"]
    assert tok.detokenize(tok.tokenize(UNSEEN)) == UNSEEN
    ref = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.tokenize_batch(texts[:10]) == [e.ids for e in ref.encode_batch(texts[:10])]


def test_wordpiece_outputs_load(corpus, tmp_path):
    """--type wordpiece writes a vocab.txt with BERT's specials first; ours and HF's tokenizer.json agree."""
    path, texts = corpus
    result = train_tokenizer(TokenizerTrainingConfig(input=[path], type="wordpiece", vocab_size=800, output_dir=str(tmp_path)))
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = build_tokenizer(result.tokenizer_config)
    assert result.tokenizer_config.tokenizer_type == "BertWordPieceLowerCase"
    assert tok.vocab_size == len(lines) + 2  # Megatron's [BOS], [EOS]
    ref = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in texts[:10]:
        assert tok.tokenize(text) == ref.encode(text, add_special_tokens=False).ids
    assert tok.detokenize(tok.tokenize("In the beginning God created")) == "in the beginning god created"


def test_wordpiece_cased(corpus, tmp_path):
    """--no-lowercase trains a cased vocabulary that loads as BertWordPieceCase."""
    path, _ = corpus
    result = train_tokenizer(TokenizerTrainingConfig(
        input=[path], type="wordpiece", vocab_size=800, lowercase=False, output_dir=str(tmp_path)))
    assert result.tokenizer_config.tokenizer_type == "BertWordPieceCase"
    tok = build_tokenizer(result.tokenizer_config)
    assert tok.tokenize("God") != tok.tokenize("god")


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_outputs_load(corpus, tmp_path, model_type):
    """--type sentencepiece writes tokenizer.model; it loads both ways and round-trips KJV text exactly."""
    path, texts = corpus
    result = train_tokenizer(TokenizerTrainingConfig(
        input=[path], type="sentencepiece", sentencepiece_model_type=model_type, vocab_size=700, output_dir=str(tmp_path)))
    tok = build_tokenizer(result.tokenizer_config)
    assert tok.vocab_size == 700 + 5  # <CLS> <SEP> <EOD> <MASK> <PAD>; <s>/</s> come with the model
    raw = build_tokenizer(TokenizerConfig(
        tokenizer_type="GPTSentencePieceTokenizer", tokenizer_model=result.tokenizer_config.tokenizer_model))
    assert raw.vocab_size == 700
    assert raw.detokenize(raw.tokenize(texts[5])) == texts[5]
    assert tok.tokenize(texts[5]) == raw.tokenize(texts[5])


def test_training_is_reproducible(corpus, tmp_path):
    """The same input and config give byte-identical files for every tokenizer type. (WordPiece once differed in
    about half of the runs, HF's trainer breaking frequency ties in hash-map order; three runs catch that.)"""
    path, _ = corpus
    for kind in ("gpt2bpe", "wordpiece", "sentencepiece"):
        runs = []
        for run in ("a", "b", "c"):
            out = tmp_path / kind / run
            train_tokenizer(TokenizerTrainingConfig(input=[path], type=kind, vocab_size=700, output_dir=str(out)))
            runs.append(_files(out))
        assert runs[0] == runs[1] == runs[2], kind


def test_bad_inputs(tmp_path, corpus):
    """Missing input, malformed JSONL (file:line named), too-small or unfillable vocab sizes are ValueErrors."""
    path, _ = corpus
    with pytest.raises(ValueError, match="does not exist"):
        train_tokenizer(TokenizerTrainingConfig(input=[str(tmp_path / "none.jsonl")], output_dir=str(tmp_path / "o")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "wrong key"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: key 'text'"):
        train_tokenizer(TokenizerTrainingConfig(input=[str(bad)], vocab_size=300, output_dir=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="257"):
        TokenizerTrainingConfig(input=[path], type="gpt2bpe", vocab_size=100, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="lower --vocab-size"):
        train_tokenizer(TokenizerTrainingConfig(
            input=[path], type="sentencepiece", vocab_size=500_000, output_dir=str(tmp_path / "sp")))
    assert not (tmp_path / "sp" / "tokenizer.model").exists()


def test_cli_requires_input_and_output(capsys):
    """The CLI rejects a call without --input / --output-dir with a usage error."""
    with pytest.raises(SystemExit) as err:
        _tool().main(["--type", "gpt2bpe"])
    assert err.value.code == 2
    assert "--input" in capsys.readouterr().err
