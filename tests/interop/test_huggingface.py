"""Hugging Face interop (``tools/checkpoint/convert.py``): our GPT/BERT checkpoints at TP=1 and TP=2 convert to
``GPT2LMHeadModel`` / ``GPTNeoXForCausalLM`` / ``LlamaForCausalLM`` / ``MegatronBert*`` with the same logits, convert
back bit-exactly at any TP size, and bad inputs (or architectures no HF class computes) fail with errors naming the
path, flag or setting.

Models are tiny (2 layers, hidden 32, 4 heads) with every parameter (biases and LayerNorms included) drawn at
random, so a misplaced or untransposed tensor changes the logits. The tiny vocabularies (266 BPE / 64 WordPiece ids)
pad to the same row count at TP=1 and TP=2 (multiple of 8 per rank), so a TP=2 checkpoint written by the real
sharded model and one converted from TP=1 must be identical tensor for tensor.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import zlib
from pathlib import Path

import pytest
import torch

from dist_utils import run_distributed
from megatron.data.bert_dataset import BertDataConfig
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.data.tokenizers.bpe import bytes_to_unicode
from megatron.model.bert import BertModel
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.config import ParallelConfig
from megatron.parallel.state import ParallelState
from megatron.parallel.utils import shard_of
from megatron.training.checkpointing import _read_payload, checkpoint_path, read_tracker, save_checkpoint
from megatron.training.config import PretrainConfig

# transformers is imported by the tests that use it (``transformers`` fixture), not here: the two spawned ranks
# that write the TP=2 checkpoints import this module and need only torch.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="needs transformers (pip install transformers)")

REPO = Path(__file__).resolve().parents[2]
DIVISIBLE_BY = 8
ARCH = dict(num_layers=2, hidden_size=32, num_attention_heads=4, max_position_embeddings=32, hidden_dropout=0.0,
            attention_dropout=0.0)
CASES: dict[str, tuple[str, dict]] = {
    "gpt_learned": ("GPT", {}),
    "gpt_learned_untied_nobias": ("GPT", dict(untie_embeddings_and_output_weights=True, add_bias_linear=False)),
    "gpt_rope": ("GPT", dict(position_embedding_type="rope", rotary_percent=0.5)),
    "gpt_rope_untied_nobias": ("GPT", dict(position_embedding_type="rope", untie_embeddings_and_output_weights=True,
                                           add_bias_linear=False)),
    # Llama-style: RMSNorm, SwiGLU, 2 key/value heads for 4 heads; untied, no biases (Llama's usual form) ...
    "gpt_llama_gqa_untied": ("GPT", dict(position_embedding_type="rope", normalization="RMSNorm", swiglu=True,
                                  group_query_attention=True, num_query_groups=2, add_bias_linear=False,
                                  untie_embeddings_and_output_weights=True, rotary_base=500000)),
    # ... and multi-head, tied, with biases (Llama's attention_bias / mlp_bias) and another epsilon.
    "gpt_llama_tied_bias": ("GPT", dict(position_embedding_type="rope", normalization="RMSNorm", swiglu=True,
                                        layernorm_epsilon=1e-6)),
    "bert_binary_head": ("BERT", dict(binary_head=True)),
    "bert_no_binary_head": ("BERT", dict(binary_head=False)),
}
HF_CLASS = {"gpt_learned": "GPT2LMHeadModel", "gpt_learned_untied_nobias": "GPT2LMHeadModel",
            "gpt_rope": "GPTNeoXForCausalLM", "gpt_rope_untied_nobias": "GPTNeoXForCausalLM",
            "gpt_llama_gqa_untied": "LlamaForCausalLM", "gpt_llama_tied_bias": "LlamaForCausalLM",
            "bert_binary_head": "MegatronBertForPreTraining", "bert_no_binary_head": "MegatronBertForMaskedLM"}
# fp32 throughout. HF computes the same sums as our model, only in a different kernel order (separate vs fused
# projections, eager vs SDPA attention): measured differences are 0 to ~1e-7 on logits of magnitude ~1, while a
# wrong transpose, head order or LayerNorm mapping moves them by >= 1e-2. 1e-5 sits well between the two.
ATOL, RTOL = 1e-5, 1e-5


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


# ---- fixtures: tokenizers and our checkpoints --------------------------------------------------------------------
def _write_tokenizers(root: Path) -> dict[str, TokenizerConfig]:
    """A byte-level BPE (256 bytes + 9 merges + eod = 266 ids) and a lower-case WordPiece (62 lines + [BOS]/[EOS])."""
    root.mkdir(parents=True, exist_ok=True)
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("e", "r"), ("Ġ", "w"), ("o", "r"),
              ("Ġw", "or")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (root / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "hello", "world", "cafe",
             "naive", "line", "tab", "and", "new", "times", "##s", "##ing", "!", ",", ".", ":"]
    words += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    words += [f"##{c}" for c in "xyz"][: 62 - len(words)]
    (root / "vocab.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return {
        "GPT": TokenizerConfig(tokenizer_type="GPT2BPETokenizer", vocab_file=str(root / "vocab.json"),
                               merge_file=str(root / "merges.txt"), make_vocab_size_divisible_by=DIVISIBLE_BY),
        "BERT": TokenizerConfig(tokenizer_type="BertWordPieceLowerCase", vocab_file=str(root / "vocab.txt"),
                                make_vocab_size_divisible_by=DIVISIBLE_BY),
    }


def _architecture(case: str) -> tuple[str, TransformerConfig, bool]:
    model_type, extra = CASES[case]
    extra = dict(extra)
    binary_head = extra.pop("binary_head", False)
    return model_type, TransformerConfig(**ARCH, **extra), binary_head


def _perturb(model: torch.nn.Module, tp_rank: int, tp_size: int) -> None:
    """Every parameter drawn from a generator seeded by its name, as a full tensor, then this rank's shard: the
    same function at every TP size, with non-trivial biases and LayerNorm weights."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            dim = p.partition_dim if getattr(p, "tensor_model_parallel", False) else None
            shape = list(p.shape)
            if dim is not None:
                shape[dim] *= tp_size
            full = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode()))) * 0.1
            if "norm" in name and name.endswith("weight"):
                full += 1.0
            p.copy_(full if dim is None else shard_of(full, dim, tp_rank, tp_size))


def build_ours(case: str, tok: TokenizerConfig, pstate: ParallelState) -> torch.nn.Module:
    """Our model of ``case`` at ``pstate``'s TP size with the test's random weights."""
    model_type, cfg, binary_head = _architecture(case)
    vocab = padded_vocab_size(build_tokenizer(tok).vocab_size, DIVISIBLE_BY, pstate.tp_size)
    if model_type == "GPT":
        model = GPTModel(cfg, pstate, vocab, seed=7)
    else:
        model = BertModel(cfg, pstate, vocab, add_binary_head=binary_head, seed=7)
    _perturb(model, pstate.tp_rank, pstate.tp_size)
    return model.eval()


def _save(root: Path, case: str, tok: TokenizerConfig, pstate: ParallelState) -> None:
    model_type, cfg, binary_head = _architecture(case)
    extras = {"bert": BertDataConfig(bert_binary_head=binary_head)} if model_type == "BERT" else {}
    run = PretrainConfig(model=cfg, tokenizer=tok, parallel=ParallelConfig(tensor_model_parallel_size=pstate.tp_size),
                         extras=extras, world_size=pstate.tp_size).to_dict()
    save_checkpoint(root / case, 7, model=build_ours(case, tok, pstate), optimizer=None, scheduler=None,
                    pstate=pstate, train_state={"consumed_train_samples": 0}, config=run)


def _save_tp2_body(rank: int, world_size: int, root: Path, toks: dict[str, TokenizerConfig]) -> None:
    pstate = ParallelState.build(world_size)
    for case, (model_type, _) in CASES.items():
        _save(root, case, toks[model_type], pstate)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """Our TP=1 checkpoints of every case: ``{"tp1": root, "tok": tokenizer configs}``."""
    base = tmp_path_factory.mktemp("interop")
    toks = _write_tokenizers(base / "tok")
    for case, (model_type, _) in CASES.items():
        _save(base / "tp1", case, toks[model_type], ParallelState.single())
    return {"tp1": base / "tp1", "tok": toks}


@pytest.fixture(scope="module")
def tp2_checkpoints(checkpoints, tmp_path_factory) -> Path:
    """Root of the TP=2 checkpoints of every case, written by the real sharded models in a two-process gloo
    group (the TP=1 fixture's tokenizers)."""
    root = tmp_path_factory.mktemp("interop_tp2")
    run_distributed(_save_tp2_body, 2, root, checkpoints["tok"])
    return root


def _source(request, checkpoints, tp: str) -> Path:
    return checkpoints["tp1"] if tp == "tp1" else request.getfixturevalue("tp2_checkpoints")


TP_SIZES = ["tp1", pytest.param("tp2", marks=pytest.mark.distributed)]


# ---- helpers ------------------------------------------------------------------------------------------------------
def _load_convert():
    spec = importlib.util.spec_from_file_location("convert_checkpoint", REPO / "tools" / "checkpoint" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _load_convert()


def to_hf(load: Path, save: Path, model_type: str, *extra: str) -> Path:
    convert.main(["--model-type", model_type, "--loader", "megatron", "--saver", "hf", "--load-dir", str(load),
                  "--save-dir", str(save), *extra])
    return save


def to_ours(load: Path, save: Path, model_type: str, tp: int, *extra: str) -> Path:
    convert.main(["--model-type", model_type, "--loader", "hf", "--saver", "megatron", "--load-dir", str(load),
                  "--save-dir", str(save), "--target-tensor-parallel-size", str(tp), *extra])
    return save


def read_shards(root: Path) -> list[dict[str, torch.Tensor]]:
    """Every TP rank's model state dict of the latest checkpoint under ``root``."""
    tag = read_tracker(root)
    first = _read_payload(checkpoint_path(root, tag, 0))
    return [_read_payload(checkpoint_path(root, tag, r))["model"] for r in range(first["tensor_model_parallel_size"])]


def assert_same_shards(a: Path, b: Path) -> None:
    shards_a, shards_b = read_shards(a), read_shards(b)
    assert len(shards_a) == len(shards_b)
    for sa, sb in zip(shards_a, shards_b):
        assert sa.keys() == sb.keys()
        for name in sa:
            assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


def _gpt_tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))


# ---- logits ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tp", TP_SIZES)
@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("gpt")])
def test_gpt_logits_match_hf(request, checkpoints, tmp_path, case, tp, transformers):
    """A GPT checkpoint saved at TP=1 or TP=2 converts to the expected HF class, which gives our (unsharded)
    model's logits over the whole padded vocabulary."""
    tok = checkpoints["tok"]["GPT"]
    hf_dir = to_hf(_source(request, checkpoints, tp) / case, tmp_path / "hf", "GPT")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    assert type(hf).__name__ == HF_CLASS[case]
    assert hf.config.tie_word_embeddings == ("untied" not in case)
    ours = build_ours(case, tok, ParallelState.single())
    tokens = _gpt_tokens(ours.vocab_size)
    with torch.no_grad():
        expected, got = ours(tokens), hf(tokens).logits
    assert got.shape == expected.shape == (2, 24, ours.vocab_size)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("tp", TP_SIZES)
@pytest.mark.parametrize("case", ["bert_binary_head", "bert_no_binary_head"])
def test_bert_logits_match_hf(request, checkpoints, tmp_path, case, tp, transformers):
    """A BERT checkpoint converts to MegatronBertForPreTraining (binary head) or ...ForMaskedLM (none) whose
    masked-LM logits at real positions and binary-head logits equal ours, with padding and two segments."""
    tok = checkpoints["tok"]["BERT"]
    hf_dir = to_hf(_source(request, checkpoints, tp) / case, tmp_path / "hf", "BERT")
    hf_cls = getattr(transformers, HF_CLASS[case])
    hf = hf_cls.from_pretrained(str(hf_dir)).eval()
    assert (hf.bert.pooler is not None) == (case == "bert_binary_head")
    ours = build_ours(case, tok, ParallelState.single())
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(5, 62, (3, 20), generator=gen)
    padding = torch.ones(3, 20, dtype=torch.long)
    padding[1, 14:] = 0
    padding[2, 9:] = 0
    tokens[padding == 0] = 0  # [PAD]
    types = torch.zeros_like(tokens)
    types[:, 6:] = 1
    with torch.no_grad():
        logits, binary = ours(tokens, padding, types)
        out = hf(input_ids=tokens, attention_mask=padding, token_type_ids=types)
    hf_logits = out.prediction_logits if case == "bert_binary_head" else out.logits
    real = padding.bool()
    torch.testing.assert_close(hf_logits[real], logits[real], atol=ATOL, rtol=RTOL)
    if case == "bert_binary_head":
        torch.testing.assert_close(out.seq_relationship_logits, binary, atol=ATOL, rtol=RTOL)


def test_hf_tokenizers_give_our_ids(checkpoints, tmp_path, transformers):
    """AutoTokenizer on an exported directory encodes text to our ids, including a 150-character word that
    Google's WordPiece (ours) splits but HF's default 100-character limit would turn into [UNK]."""
    texts = ["Hello world, the quick brown fox!", "new line\tand tab: 1234 times", "x" * 150 + " word"]
    for model_type, case in (("GPT", "gpt_learned"), ("BERT", "bert_binary_head")):
        hf_dir = to_hf(checkpoints["tp1"] / case, tmp_path / model_type, model_type)
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
        ours = build_tokenizer(checkpoints["tok"][model_type])
        assert len(hf_tok) == ours.vocab_size
        for text in texts:
            assert hf_tok(text, add_special_tokens=False)["input_ids"] == ours.tokenize(text), (model_type, text)


def test_tokenizer_json_run_round_trip(checkpoints, tmp_path, transformers):
    """A run with --tokenizer-type HuggingFaceTokenizer exports its tokenizer.json (same ids through AutoTokenizer)
    and imports back as the same tokenizer type with bit-exact weights."""
    tok = checkpoints["tok"]["GPT"]
    tok_dir = tmp_path / "tokjson"
    shutil.copytree(Path(tok.vocab_file).parent, tok_dir, ignore=shutil.ignore_patterns("vocab.txt"))
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    transformers.AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(str(tok_dir))
    for name in ("vocab.json", "merges.txt"):
        (tok_dir / name).unlink()
    run = tmp_path / "run"
    shutil.copytree(checkpoints["tp1"] / "gpt_learned", run)
    cfg_path = run / "iter_0000007" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer"].update(tokenizer_type="HuggingFaceTokenizer", vocab_file=None, merge_file=None,
                            tokenizer_model=str(tok_dir))
    cfg_path.write_text(json.dumps(cfg))
    ours = build_tokenizer(TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(tok_dir)))

    hf_dir = to_hf(run, tmp_path / "hf", "GPT")
    text = "Hello world, the quick brown fox!"
    assert transformers.AutoTokenizer.from_pretrained(str(hf_dir))(text)["input_ids"] == ours.tokenize(text)
    back = to_ours(hf_dir, tmp_path / "back", "GPT", 1)
    assert json.loads((back / "release" / "config.json").read_text())["tokenizer"]["tokenizer_type"] == (
        "HuggingFaceTokenizer")
    assert_same_shards(run, back)


# ---- round trips ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_tp1_is_bit_exact(checkpoints, tmp_path, case):
    """ours (TP=1) -> HF -> ours (TP=1): every tensor equal, same dtype, same names; the tracker says release."""
    model_type = CASES[case][0]
    hf_dir = to_hf(checkpoints["tp1"] / case, tmp_path / "hf", model_type)
    back = to_ours(hf_dir, tmp_path / "back", model_type, 1)
    assert read_tracker(back) == "release"
    assert_same_shards(checkpoints["tp1"] / case, back)


@pytest.mark.distributed
@pytest.mark.parametrize("case", ["gpt_learned", "gpt_rope_untied_nobias", "gpt_llama_gqa_untied", "bert_binary_head"])
def test_round_trip_across_tp_sizes(checkpoints, tp2_checkpoints, tmp_path, case):
    """ours TP=1 -> HF -> ours TP=2 equals, tensor for tensor, what our sharded TP=2 model itself saved; and
    TP=2 -> HF -> TP=1 equals the TP=1 original."""
    model_type = CASES[case][0]
    to_tp2 = to_ours(to_hf(checkpoints["tp1"] / case, tmp_path / "hf1", model_type), tmp_path / "tp2", model_type, 2)
    assert_same_shards(tp2_checkpoints / case, to_tp2)
    to_tp1 = to_ours(to_hf(to_tp2, tmp_path / "hf2", model_type), tmp_path / "tp1", model_type, 1)
    assert_same_shards(checkpoints["tp1"] / case, to_tp1)


@pytest.mark.distributed
@pytest.mark.parametrize("case", ["gpt_rope_untied_nobias", "gpt_llama_tied_bias", "bert_binary_head"])
def test_megatron_to_megatron_resplit(checkpoints, tp2_checkpoints, tmp_path, case):
    """--loader megatron --saver megatron re-splits a TP=1 checkpoint into exactly what the sharded TP=2 model
    saved, and TP=2 back into the TP=1 original; config.json records the new TP size."""
    model_type = CASES[case][0]
    common = ["--model-type", model_type, "--loader", "megatron", "--saver", "megatron"]
    convert.main([*common, "--load-dir", str(checkpoints["tp1"] / case), "--save-dir", str(tmp_path / "tp2"),
                  "--target-tensor-parallel-size", "2"])
    assert_same_shards(tp2_checkpoints / case, tmp_path / "tp2")
    assert json.loads((tmp_path / "tp2" / "release" / "config.json").read_text())["parallel"][
        "tensor_model_parallel_size"] == 2
    convert.main([*common, "--load-dir", str(tp2_checkpoints / case), "--save-dir", str(tmp_path / "tp1"),
                  "--target-tensor-parallel-size", "1"])
    assert_same_shards(checkpoints["tp1"] / case, tmp_path / "tp1")


@pytest.mark.parametrize("case", ["gpt_learned_untied_nobias", "bert_no_binary_head"])
def test_vocab_repadding_round_trip(checkpoints, tmp_path, case):
    """Importing with a coarser padding rule appends zero rows to every vocabulary-indexed tensor (embedding,
    untied output layer, BERT output bias) and records the rule; importing that back with the original rule drops
    exactly those rows again."""
    model_type = CASES[case][0]
    hf1 = to_hf(checkpoints["tp1"] / case, tmp_path / "hf1", model_type)
    wide = to_ours(hf1, tmp_path / "wide", model_type, 2, "--make-vocab-size-divisible-by", "128")
    config = json.loads((wide / "release" / "config.json").read_text())
    assert config["tokenizer"]["make_vocab_size_divisible_by"] == 128
    original = read_shards(checkpoints["tp1"] / case)[0]
    rows = original["word_embeddings.weight"].shape[0]
    full = torch.cat([s["word_embeddings.weight"] for s in read_shards(wide)])
    ids = build_tokenizer(checkpoints["tok"][model_type]).vocab_size
    assert full.shape[0] == padded_vocab_size(ids, 128, 2) > rows and not full[rows:].any()
    torch.testing.assert_close(full[:rows], original["word_embeddings.weight"], rtol=0, atol=0)
    back = to_ours(to_hf(wide, tmp_path / "hf2", model_type), tmp_path / "back", model_type, 1,
                   "--make-vocab-size-divisible-by", str(DIVISIBLE_BY))
    assert_same_shards(checkpoints["tp1"] / case, back)


@pytest.mark.parametrize("case", ["gpt_rope", "gpt_llama_gqa_untied"])
def test_converted_checkpoint_trains_with_pretrain_gpt(checkpoints, tmp_path, case):
    """A converted release loads into pretrain_gpt.py (strict load) with the flags pretrain_flags derives from its
    config.json, and trains exactly as --finetune from the original checkpoint does (same losses, bit for bit);
    also through LlamaForCausalLM."""
    from megatron.interop import pretrain_flags
    from training.conftest import load_entry_script

    original = checkpoints["tp1"] / case
    out = to_ours(to_hf(original, tmp_path / "hf", "GPT"), tmp_path / "tp1", "GPT", 1)
    flags = pretrain_flags(json.loads((out / "release" / "config.json").read_text()))
    assert "--vocab-file" in flags and "--position-embedding-type" in flags
    common = ["--mock-data", "--seq-length", "16", "--micro-batch-size", "2", "--train-iters", "2", "--lr", "1e-3",
              "--eval-iters", "0", "--log-interval", "1", "--skip-test"]
    converted = load_entry_script().main(["--load", str(out), *common, *flags])
    original_flags = pretrain_flags(json.loads((original / "iter_0000007" / "config.json").read_text()))
    finetuned = load_entry_script().main(["--load", str(original), "--finetune", *common, *original_flags])
    assert sorted(converted.train_losses) == [1, 2] and converted.train_losses == finetuned.train_losses


def test_bf16_checkpoint_round_trip_keeps_dtype(checkpoints, tmp_path, transformers):
    """A bf16 run's checkpoint exports bf16 safetensors and imports back bit-exactly, recording params_dtype and
    --bf16 in the written config.json (and in pretrain_flags)."""
    from megatron.interop import pretrain_flags
    from megatron.training.config import TrainingConfig

    tok = checkpoints["tok"]["GPT"]
    _, cfg, _ = _architecture("gpt_rope")
    cfg.params_dtype = "bfloat16"
    model = build_ours("gpt_rope", tok, ParallelState.single()).to(torch.bfloat16)
    run = PretrainConfig(model=cfg, tokenizer=tok, training=TrainingConfig(bf16=True), world_size=1).to_dict()
    save_checkpoint(tmp_path / "ckpt", 3, model=model, optimizer=None, scheduler=None, pstate=ParallelState.single(),
                    train_state={}, config=run)
    hf_dir = to_hf(tmp_path / "ckpt", tmp_path / "hf", "GPT")
    assert transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype="auto").dtype == torch.bfloat16
    back = to_ours(hf_dir, tmp_path / "back", "GPT", 1)
    assert_same_shards(tmp_path / "ckpt", back)
    config = json.loads((back / "release" / "config.json").read_text())
    assert config["model"]["params_dtype"] == "bfloat16" and "--bf16" in pretrain_flags(config)


# ---- errors --------------------------------------------------------------------------------------------------------
def test_bad_megatron_inputs_name_the_path_or_flag(checkpoints, tmp_path):
    """No tracker, a missing config.json, the wrong --model-type, an existing --save-dir and moved tokenizer
    files are refused with messages naming what to change; --vocab-file/--merge-file repair the last one."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"--load-dir .*empty has no latest_checkpointed_iteration\.txt"):
        to_hf(empty, tmp_path / "out", "GPT")
    with pytest.raises(ValueError, match=r"--model-type BERT but checkpoint .* holds a GPT model.*--model-type GPT"):
        to_hf(checkpoints["tp1"] / "gpt_learned", tmp_path / "out", "BERT")
    with pytest.raises(ValueError, match=r"--save-dir .* already exists and is not empty"):
        to_hf(checkpoints["tp1"] / "gpt_learned", checkpoints["tp1"], "GPT")
    no_config = tmp_path / "no_config"
    shutil.copytree(checkpoints["tp1"] / "gpt_learned", no_config)
    (no_config / "iter_0000007" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"iter_0000007/config\.json does not exist"):
        to_hf(no_config, tmp_path / "out", "GPT")

    moved = tmp_path / "moved"
    shutil.copytree(checkpoints["tp1"] / "gpt_learned", moved)
    cfg_path = moved / "iter_0000007" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer"]["vocab_file"] = str(tmp_path / "gone" / "vocab.json")
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"vocab_file \(--vocab-file\) .*gone/vocab\.json.* does not exist"):
        to_hf(moved, tmp_path / "out", "GPT")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))  # nothing half-written
    tok = checkpoints["tok"]["GPT"]
    to_hf(moved, tmp_path / "out", "GPT", "--vocab-file", tok.vocab_file, "--merge-file", tok.merge_file)
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "merges.txt").is_file()


def test_bad_hf_inputs_name_the_path_or_flag(checkpoints, tmp_path, transformers):
    """An HF directory without config.json, of an unsupported architecture (post-LN BertForPreTraining), with
    GPT-2's tanh GELU, of the other model family, or a TP size that does not divide the heads is refused."""
    with pytest.raises(ValueError, match=r"has no config\.json"):
        to_ours(tmp_path, tmp_path / "out", "GPT", 1)
    bert_dir = tmp_path / "bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                            architectures=["BertForPreTraining"]).save_pretrained(str(bert_dir))
    with pytest.raises(ValueError, match=r"architecture 'BertForPreTraining' is not supported"):
        to_ours(bert_dir, tmp_path / "out", "BERT", 1)

    hf_dir = to_hf(checkpoints["tp1"] / "gpt_learned", tmp_path / "hf", "GPT")
    with pytest.raises(ValueError, match=r"--model-type BERT but .* holds a GPT2LMHeadModel.*--model-type GPT"):
        to_ours(hf_dir, tmp_path / "out", "BERT", 1)
    with pytest.raises(ValueError, match=r"num_attention_heads \(4\).*--target-tensor-parallel-size"):
        to_ours(hf_dir, tmp_path / "out", "GPT", 3)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "activation_function": "gelu_new"}))
    with pytest.raises(ValueError, match=r"activation_function='gelu_new' is not supported.*tanh approximation"):
        to_ours(hf_dir, tmp_path / "out", "GPT", 1)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"--target-tensor-parallel-size applies to --saver megatron only"):
        to_hf(checkpoints["tp1"] / "gpt_learned", tmp_path / "out", "GPT", "--target-tensor-parallel-size", "2")


NOT_EXPORTABLE = [
    (dict(position_embedding_type="rope", swiglu=True), r"also needs normalization=RMSNorm .*no Hugging Face class"),
    (dict(position_embedding_type="rope", normalization="RMSNorm"), r"also needs swiglu"),
    (dict(position_embedding_type="rope", group_query_attention=True, num_query_groups=2),
     r"also needs normalization=RMSNorm and swiglu"),
    (dict(normalization="RMSNorm", swiglu=True), r"normalization=RMSNorm, swiglu cannot be exported to GPT2LMHeadModel"),
    (dict(position_embedding_type="rope", normalization="RMSNorm", swiglu=True, rotary_percent=0.5),
     r"rotary_percent=0.5; LlamaForCausalLM rotates every channel"),
]


@pytest.mark.parametrize("extra,message", NOT_EXPORTABLE,
                         ids=["layernorm_swiglu", "rmsnorm_gelu", "gqa_layernorm", "learned_llama", "partial_rope"])
def test_architectures_no_hf_class_computes_are_refused(extra, message):
    """Combinations Llama, GPT-NeoX and GPT-2 cannot represent exactly (LayerNorm with SwiGLU, RMSNorm with GELU,
    grouped-query attention without RMSNorm/SwiGLU, learned positions with RMSNorm/SwiGLU, partial rotary Llama) are
    refused before anything is written, naming the settings."""
    from megatron.interop.checkpoint import ModelSpec
    from megatron.interop.hf_config import check_exportable

    spec = ModelSpec(model_type="GPT", config=TransformerConfig(**ARCH, **extra), vocab_size=64)
    with pytest.raises(ValueError, match=message):
        check_exportable(spec, "--load-dir x")


def test_llama_settings_we_cannot_compute_are_refused(checkpoints, tmp_path, transformers):
    """A Llama directory with biases on the attention but not the MLP, another activation or scaled RoPE is refused
    naming the setting; nothing is written."""
    hf_dir = to_hf(checkpoints["tp1"] / "gpt_llama_tied_bias", tmp_path / "hf", "GPT")
    config = json.loads((hf_dir / "config.json").read_text())
    for change, message in ((dict(mlp_bias=False), r"attention_bias=True with mlp_bias=False is not supported"),
                            (dict(hidden_act="gelu"), r"hidden_act='gelu' is not supported.*SiLU"),
                            (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
                             r"rope_type='linear' is not supported")):
        (hf_dir / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            to_ours(hf_dir, tmp_path / "out", "GPT", 1)
        assert not (tmp_path / "out").exists()
