"""Importing Megatron-LM and Megatron-DeepSpeed checkpoints (``interop.megatron_import``,
``tools/checkpoint/import_megatron.py``).

megatron-core 0.16 (its side install, in a subprocess) builds GPTModels with its own random weights, computes their
logits and writes a Megatron-LM legacy checkpoint exactly as Megatron-LM's ``--ckpt-format torch`` does
(``iter_XXXXXXX/mp_rank_00/model_optim_rng.pt`` with ``args`` - an ``argparse.Namespace`` holding one of its enums -,
``checkpoint_version``, ``iteration`` and ``model = state_dict_for_save_checkpoint()``). From the same weights the test
builds the other layouts itself: the legacy ``language_model`` nesting split over TP=2 by Megatron's partition rules,
and Megatron-DeepSpeed's DeepSpeed-engine files (``latest``, ``global_stepN/mp_rank_XX_model_states.pt`` with
``module``, numpy RNG state, random-LTD wrapper names, and the ``[Q|K|V]`` QKV rows of its 2024 code).

Pins: every layout imports into a ``release`` checkpoint whose weights give megatron-core's logits; the restricted
unpickler reads files ``weights_only`` refuses without importing their classes; pipeline and GQA checkpoints are
refused clearly.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mcore_utils import requires_mcore, run_mcore_script
from training.conftest import load_entry_script
from megatron.interop.checkpoint import build_meta_model, read_megatron_checkpoint
from megatron.interop.megatron_import import safe_load

VOCAB, SEQ = 256, 16

MCORE_SCRIPT = textwrap.dedent(
    """
    from argparse import Namespace
    from megatron.core.enums import ModelType
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    for case, spec in json.loads(sys.argv[1]).items():
        cfg = config_from_spec(spec)
        model = GPTModel(cfg, get_gpt_layer_local_spec(), vocab_size=spec["vocab"],
                         max_sequence_length=spec["max_pos"], position_embedding_type=spec["pe"],
                         share_embeddings_and_output_weights=not spec["untie"]).eval()
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + (1.0 if "norm" in name and name.endswith("weight")
                                                                        else 0.0))
        tokens = torch.randint(0, spec["vocab"], (2, spec["seq"]), generator=gen)
        positions = torch.arange(spec["seq"]).repeat(2, 1)
        causal = torch.ones(spec["seq"], spec["seq"], dtype=torch.bool).triu(1)[None, None]
        with torch.no_grad():
            logits = model(tokens, positions, causal)
        args = Namespace(num_layers=spec["num_layers"], hidden_size=spec["hidden_size"],
                         num_attention_heads=spec["heads"], ffn_hidden_size=spec["ffn"], kv_channels=spec["kv"],
                         max_position_embeddings=spec["max_pos"], seq_length=spec["seq"],
                         position_embedding_type=spec["pe"], norm_epsilon=spec["eps"], normalization="LayerNorm",
                         untie_embeddings_and_output_weights=spec["untie"], add_bias_linear=spec["bias"],
                         tensor_model_parallel_size=1, padded_vocab_size=spec["vocab"], tokenizer_type="NullTokenizer",
                         vocab_size=spec["vocab"] - 1, make_vocab_size_divisible_by=1, group_query_attention=False,
                         num_query_groups=1, swiglu=False, model_type=ModelType.encoder_or_decoder,
                         params_dtype=torch.float32)
        it_dir = os.path.join(case, "iter_0000007", "mp_rank_00")
        os.makedirs(it_dir)
        torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 7,
                    "model": model.state_dict_for_save_checkpoint()}, os.path.join(it_dir, "model_optim_rng.pt"))
        with open(os.path.join(case, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("7")
        state = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
        torch.save({"state": state, "tokens": tokens, "positions": positions, "logits": logits,
                    "args": vars(args) | {"model_type": None, "params_dtype": None}}, case + ".out.pt")
    """
)

CASES = {
    "learned-tied-bias": dict(pe="learned_absolute", untie=False, bias=True),
    "rope-untied-nobias": dict(pe="rope", untie=True, bias=False),
}
SHAPE = dict(num_layers=2, hidden_size=32, heads=4, ffn=128, kv=8, eps=1e-5, vocab=VOCAB, max_pos=SEQ, seq=SEQ)

# megatron-core (flat) -> the legacy nesting under ``language_model`` (Megatron-LM before mcore, Megatron-DeepSpeed).
LEGACY = [("embedding.", "language_model.embedding."), ("decoder.layers.", "language_model.encoder.layers."),
          ("decoder.final_layernorm.", "language_model.encoder.final_layernorm."),
          ("output_layer.", "language_model.output_layer."), (".linear_qkv.", ".query_key_value."),
          (".linear_proj.", ".dense."), (".pre_mlp_layernorm.", ".post_attention_layernorm."),
          (".linear_fc1.", ".dense_h_to_4h."), (".linear_fc2.", ".dense_4h_to_h.")]
# Megatron's tensor-parallel split of each legacy tensor: rows (column-parallel, vocabulary), columns
# (row-parallel), or replicated.
ROWS = ("word_embeddings.weight", "query_key_value.", "dense_h_to_4h.", "output_layer.weight")
COLS = ("self_attention.dense.weight", "dense_4h_to_h.weight")


@pytest.fixture(scope="module")
def mcore_checkpoints(tmp_path_factory) -> Path:
    """megatron-core's checkpoints and reference logits for each case (one subprocess)."""
    root = tmp_path_factory.mktemp("mcore_ckpt")
    run_mcore_script(MCORE_SCRIPT, [json.dumps({name: {**SHAPE, **c} for name, c in CASES.items()})], root)
    return root


def _legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        for a, b in LEGACY:
            name = name.replace(a, b)
        out[name] = t
    return out


def _tp_split(state: dict[str, torch.Tensor], tp: int) -> list[dict[str, torch.Tensor]]:
    def part(name: str, t: torch.Tensor, r: int) -> torch.Tensor:
        if any(k in name for k in COLS):
            return t.chunk(tp, dim=1)[r].clone()
        if any(k in name for k in ROWS) and not name.endswith("dense.bias"):
            return t.chunk(tp, dim=0)[r].clone()
        return t.clone()
    return [{n: part(n, t, r) for n, t in state.items()} for r in range(tp)]


def _nest(flat: dict[str, torch.Tensor]) -> dict:
    """Megatron-LM's state_dict_for_save_checkpoint nesting: language_model -> embedding/encoder/output_layer."""
    lm: dict = {}
    for name, t in flat.items():
        _, section, rest = name.split(".", 2)
        if section == "embedding":
            emb, param = rest.split(".", 1)
            lm.setdefault("embedding", {}).setdefault(emb, {})[param] = t
        elif section == "encoder":
            lm.setdefault("encoder", {})[rest] = t
        else:
            lm.setdefault(section, {})[rest] = t
    return {"language_model": lm}


def _contiguous_qkv(shard: dict[str, torch.Tensor], heads: int) -> dict[str, torch.Tensor]:
    """Megatron-DeepSpeed's 2024 layout: per shard [Q | K | V] instead of per head [q; k; v]."""
    out = dict(shard)
    for name, t in shard.items():
        if "query_key_value" in name:
            out[name] = t.reshape(heads, 3, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape).contiguous()
    return out


def _args(ref: dict, tp: int) -> argparse.Namespace:
    return argparse.Namespace(**{**ref["args"], "tensor_model_parallel_size": tp})


def _logits(release: Path, ref: dict) -> torch.Tensor:
    ckpt = read_megatron_checkpoint(release, "GPT")
    model = build_meta_model(ckpt.spec).to_empty(device="cpu")
    model.load_state_dict(ckpt.state)
    model.eval()
    with torch.no_grad():
        return model(ref["tokens"], ref["positions"])


def _import(*argv: str) -> Path:
    return Path(load_entry_script("tools/checkpoint/import_megatron.py").main(list(argv)))


@requires_mcore
@pytest.mark.parametrize("case", list(CASES))
def test_imported_weights_give_megatron_cores_logits(case, mcore_checkpoints, tmp_path):
    """megatron-core's own legacy checkpoint (args with an mcore enum), the legacy nesting at TP=2, and
    Megatron-DeepSpeed's engine files (interleaved and contiguous QKV) all import to our model with megatron-core's
    logits (fp32; the same 2e-7-level rounding as the parity test, so 1e-4 separates layout errors)."""
    ref = torch.load(mcore_checkpoints / f"{case}.out.pt", weights_only=True)
    legacy = _legacy(ref["state"])
    # Megatron-LM legacy nesting, TP=2
    tp2 = tmp_path / "mlm_tp2"
    for r, shard in enumerate(_tp_split(legacy, 2)):
        (tp2 / "iter_0000007" / f"mp_rank_{r:02d}").mkdir(parents=True)
        torch.save({"args": _args(ref, 2), "checkpoint_version": 3.0, "iteration": 7, "model": _nest(shard)},
                   tp2 / "iter_0000007" / f"mp_rank_{r:02d}" / "model_optim_rng.pt")
    (tp2 / "latest_checkpointed_iteration.txt").write_text("7")
    # Megatron-DeepSpeed DeepSpeed-engine layout, TP=2, with numpy RNG state and random-LTD wrapper names
    for layout in ("interleaved", "contiguous"):
        ds = tmp_path / f"ds_{layout}"
        (ds / "global_step7").mkdir(parents=True)
        for r, shard in enumerate(_tp_split(legacy, 2)):
            if layout == "contiguous":
                shard = _contiguous_qkv(shard, SHAPE["heads"] // 2)
            module = {n.replace("layers.1.", "layers.1.random_ltd_layer."): t for n, t in shard.items()}
            torch.save({"module": module, "args": _args(ref, 2), "np_rng_state": np.random.RandomState(0).get_state(),
                        "global_steps": 7, "ds_version": "0.8.0"},
                       ds / "global_step7" / f"mp_rank_{r:02d}_model_states.pt")
        (ds / "latest").write_text("global_step7")
    imports = [
        _import("--loader", "megatron_lm", "--model-type", "GPT", "--load-dir", str(mcore_checkpoints / case),
                "--save-dir", str(tmp_path / "out_mcore")),
        _import("--loader", "megatron_lm", "--model-type", "GPT", "--load-dir", str(tp2),
                "--save-dir", str(tmp_path / "out_tp2")),
        _import("--loader", "deepspeed", "--model-type", "GPT", "--load-dir", str(tmp_path / "ds_interleaved"),
                "--save-dir", str(tmp_path / "out_ds")),
        _import("--loader", "deepspeed", "--model-type", "GPT", "--load-dir", str(tmp_path / "ds_contiguous"),
                "--qkv-layout", "contiguous", "--save-dir", str(tmp_path / "out_ds_qkv")),
    ]
    for out in imports:
        torch.testing.assert_close(_logits(out, ref), ref["logits"], atol=1e-4, rtol=1e-4, msg=str(out))


def test_restricted_unpickler_never_imports_foreign_classes(tmp_path):
    """A file with a numpy array and an object of a class that does not exist here loads: tensors and the
    Namespace intact, the rest inert placeholders (weights_only alone refuses it)."""
    path = tmp_path / "x.pt"
    torch.save({"module": {"w": torch.ones(2)}, "args": argparse.Namespace(num_layers=2),
                "rng": np.arange(3)}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    loaded = safe_load(path)
    assert torch.equal(loaded["module"]["w"], torch.ones(2)) and loaded["args"].num_layers == 2
    assert "opaque" in repr(loaded["rng"])


def test_unsupported_layouts_are_refused(tmp_path):
    """Pipeline-parallel shards and grouped-query attention are refused naming what to do; a directory without a
    tracker names the file it needs."""
    from megatron.interop.megatron_import import read_foreign_checkpoint

    (tmp_path / "pp" / "iter_0000001" / "mp_rank_00_001").mkdir(parents=True)
    (tmp_path / "pp" / "latest_checkpointed_iteration.txt").write_text("1")
    with pytest.raises(NotImplementedError, match="pipeline-parallel shards"):
        read_foreign_checkpoint(tmp_path / "pp", "megatron_lm", "GPT")
    with pytest.raises(ValueError, match="has no 'latest' file"):
        read_foreign_checkpoint(tmp_path, "deepspeed", "GPT")
    gqa = tmp_path / "gqa" / "iter_0000001" / "mp_rank_00"
    gqa.mkdir(parents=True)
    (tmp_path / "gqa" / "latest_checkpointed_iteration.txt").write_text("1")
    args = argparse.Namespace(num_layers=1, hidden_size=8, num_attention_heads=4, group_query_attention=True,
                              num_query_groups=2, seq_length=8, max_position_embeddings=8)
    torch.save({"args": args, "model": {"embedding.word_embeddings.weight": torch.zeros(8, 8)}},
               gqa / "model_optim_rng.pt")
    with pytest.raises(NotImplementedError, match="grouped-query attention"):
        read_foreign_checkpoint(tmp_path / "gqa", "megatron_lm", "GPT")
