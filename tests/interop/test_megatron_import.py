"""Importing Megatron-LM and Megatron-DeepSpeed checkpoints (``interop.megatron_import``,
``tools/checkpoint/import_megatron.py``).

megatron-core 0.16 (its side install, in a subprocess) builds GPTModels with its own random weights, computes their
logits and writes a Megatron-LM legacy checkpoint exactly as Megatron-LM's ``--ckpt-format torch`` does
(``iter_XXXXXXX/mp_rank_00/model_optim_rng.pt`` with ``args`` - an ``argparse.Namespace`` holding one of its enums -,
``checkpoint_version``, ``iteration`` and ``model = state_dict_for_save_checkpoint()``). From the same weights the test
builds the other layouts itself: the legacy ``language_model`` nesting split over TP=2 by Megatron's partition rules,
and Megatron-DeepSpeed's DeepSpeed-engine files (``latest``, ``global_stepN/mp_rank_XX_model_states.pt`` with
``module``, numpy RNG state, random-LTD wrapper names, and the ``[Q|K|V]`` QKV rows of its 2024 code).

Pins: every layout (GPT-2/3-style and Llama-style: RMSNorm, SwiGLU, grouped-query attention) imports into a
``release`` checkpoint whose weights give megatron-core's logits; the restricted unpickler reads files
``weights_only`` refuses without importing their classes; pipeline checkpoints and MLPs not built here are refused
clearly.
"""

from __future__ import annotations

import argparse
import json
import pickle
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
        norm, groups = spec.get("normalization", "LayerNorm"), spec.get("groups")
        model = GPTModel(cfg, get_gpt_layer_local_spec(normalization=norm), vocab_size=spec["vocab"],
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
                         position_embedding_type=spec["pe"], norm_epsilon=spec["eps"], normalization=norm,
                         untie_embeddings_and_output_weights=spec["untie"], add_bias_linear=spec["bias"],
                         tensor_model_parallel_size=1, padded_vocab_size=spec["vocab"], tokenizer_type="NullTokenizer",
                         vocab_size=spec["vocab"] - 1, make_vocab_size_divisible_by=1,
                         group_query_attention=groups is not None, num_query_groups=groups or 1,
                         swiglu=spec.get("swiglu", False), model_type=ModelType.encoder_or_decoder,
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
    # Llama-style: RMSNorm, SwiGLU, 2 key/value groups for 4 heads (one per rank at TP=2), with biases.
    "llama-gqa-bias": dict(pe="rope", untie=True, bias=True, normalization="RMSNorm", swiglu=True, groups=2),
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
ROWS = ("word_embeddings.weight", "query_key_value.", "dense_h_to_4h.", "output_layer.weight", "lm_head.bias")
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


def _tp_split(state: dict[str, torch.Tensor], tp: int, swiglu: bool = False) -> list[dict[str, torch.Tensor]]:
    def part(name: str, t: torch.Tensor, r: int) -> torch.Tensor:
        if any(k in name for k in COLS):
            return t.chunk(tp, dim=1)[r].clone()
        if swiglu and "dense_h_to_4h." in name:  # each rank holds [gate shard; up shard]
            return t.view(2, -1, *t.shape[1:]).chunk(tp, dim=1)[r].reshape(-1, *t.shape[1:]).clone()
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


def _contiguous_qkv(shard: dict[str, torch.Tensor], heads: int, groups: int) -> dict[str, torch.Tensor]:
    """Megatron-DeepSpeed's 2024 layout: per shard [Q | K | V] instead of per group [q heads; k; v]."""
    out = dict(shard)
    for name, t in shard.items():
        if "query_key_value" in name:
            per_group = t.reshape(groups, heads // groups + 2, -1, *t.shape[1:])
            q, k, v = per_group.split([heads // groups, 1, 1], dim=1)
            out[name] = torch.cat([x.reshape(-1, *t.shape[1:]) for x in (q, k, v)]).contiguous()
    return out


def _args(ref: dict, tp: int, deepspeed: bool = False) -> argparse.Namespace:
    """The checkpoint's args at ``tp``; ``deepspeed``: in Megatron-DeepSpeed's spellings (lowercase norm name,
    --num-key-value-heads instead of --group-query-attention --num-query-groups)."""
    args = {**ref["args"], "tensor_model_parallel_size": tp}
    if deepspeed:
        gqa = args.pop("group_query_attention")
        groups = args.pop("num_query_groups")
        args.update(normalization=args["normalization"].lower(),
                    num_key_value_heads=groups if gqa else args["num_attention_heads"])
    return argparse.Namespace(**args)


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
    Megatron-DeepSpeed's engine files (interleaved and contiguous QKV, its argument spellings) all import to our
    model with megatron-core's logits (fp32; the same 2e-7-level rounding as the parity test, so 1e-4 separates
    layout errors), Llama-style checkpoints (RMSNorm, per-rank [gate; up] SwiGLU rows, grouped QKV) included."""
    ref = torch.load(mcore_checkpoints / f"{case}.out.pt", weights_only=True)
    legacy = _legacy(ref["state"])
    # Megatron-LM legacy nesting, TP=2
    tp2 = tmp_path / "mlm_tp2"
    swiglu, heads = ref["args"]["swiglu"], SHAPE["heads"]
    groups = ref["args"]["num_query_groups"] if ref["args"]["group_query_attention"] else heads
    for r, shard in enumerate(_tp_split(legacy, 2, swiglu)):
        (tp2 / "iter_0000007" / f"mp_rank_{r:02d}").mkdir(parents=True)
        torch.save({"args": _args(ref, 2), "checkpoint_version": 3.0, "iteration": 7, "model": _nest(shard)},
                   tp2 / "iter_0000007" / f"mp_rank_{r:02d}" / "model_optim_rng.pt")
    (tp2 / "latest_checkpointed_iteration.txt").write_text("7")
    # Megatron-DeepSpeed DeepSpeed-engine layout, TP=2, with numpy RNG state and random-LTD wrapper names
    for layout in ("interleaved", "contiguous"):
        ds = tmp_path / f"ds_{layout}"
        (ds / "global_step7").mkdir(parents=True)
        for r, shard in enumerate(_tp_split(legacy, 2, swiglu)):
            if layout == "contiguous":
                shard = _contiguous_qkv(shard, heads // 2, groups // 2)
            module = {n.replace("layers.1.", "layers.1.random_ltd_layer."): t for n, t in shard.items()}
            torch.save({"module": module, "args": _args(ref, 2, deepspeed=True),
                        "np_rng_state": np.random.RandomState(0).get_state(),
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


MCORE_BERT_SCRIPT = textwrap.dedent(
    """
    from argparse import Namespace
    from megatron.core.models.bert.bert_model import BertModel
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec

    spec = json.loads(sys.argv[1])
    cfg = config_from_spec(spec)
    model = BertModel(cfg, num_tokentypes=2, transformer_layer_spec=bert_layer_local_spec, vocab_size=spec["vocab"],
                      max_sequence_length=spec["max_pos"], share_embeddings_and_output_weights=True,
                      add_binary_head=True).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + (1.0 if "norm" in name and name.endswith("weight")
                                                                    else 0.0))
    tokens = torch.randint(0, spec["vocab"], (2, spec["seq"]), generator=gen)
    mask = torch.ones(2, spec["seq"], dtype=torch.long)
    mask[1, spec["seq"] // 2:] = 0  # the second sample is half padding
    types = (torch.arange(spec["seq"]) >= spec["seq"] // 3).long().repeat(2, 1)
    with torch.no_grad():
        logits, binary = model(tokens, mask, types)
    args = Namespace(num_layers=spec["num_layers"], hidden_size=spec["hidden_size"], num_attention_heads=spec["heads"],
                     ffn_hidden_size=spec["ffn"], kv_channels=spec["kv"], max_position_embeddings=spec["max_pos"],
                     seq_length=spec["seq"], position_embedding_type="learned_absolute", norm_epsilon=spec["eps"],
                     normalization="LayerNorm", untie_embeddings_and_output_weights=False, add_bias_linear=True,
                     bert_binary_head=True, tensor_model_parallel_size=1, padded_vocab_size=spec["vocab"],
                     tokenizer_type="NullTokenizer", vocab_size=spec["vocab"] - 1, make_vocab_size_divisible_by=1)
    os.makedirs(os.path.join("bert", "iter_0000003", "mp_rank_00"))
    torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 3,
                "model": model.state_dict_for_save_checkpoint()},
               os.path.join("bert", "iter_0000003", "mp_rank_00", "model_optim_rng.pt"))
    with open(os.path.join("bert", "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("3")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    torch.save({"state": state, "tokens": tokens, "mask": mask, "types": types, "logits": logits, "binary": binary,
                "args": vars(args)}, "bert.out.pt")
    """
)

# megatron-core's BERT names -> Megatron-LM's legacy BERT (language_model nesting, lm_head, binary_head).
LEGACY_BERT = [("embedding.", "language_model.embedding."), ("encoder.", "language_model.encoder."),
               ("pooler.dense.", "language_model.pooler.dense."), ("lm_head.layer_norm.", "lm_head.layernorm."),
               ("output_layer.bias", "lm_head.bias"), *LEGACY[4:]]


def _nest_bert(flat: dict[str, torch.Tensor]) -> dict:
    """Legacy BertModel.state_dict_for_save_checkpoint: language_model (embedding/encoder/pooler), lm_head and
    binary_head, each its module's own names."""
    nested: dict = {}
    for name, t in flat.items():
        if name.startswith("language_model."):
            nested.update(_merge(nested, _nest({name: t})))
        else:
            head, rest = name.split(".", 1)
            nested.setdefault(head, {})[rest] = t
    return nested


def _merge(a: dict, b: dict) -> dict:
    for key, value in b.items():
        a[key] = _merge(a.get(key, {}), value) if isinstance(value, dict) else value
    return a


def _bert_outputs(release: Path, ref: dict) -> tuple[torch.Tensor, torch.Tensor]:
    ckpt = read_megatron_checkpoint(release, "BERT")
    assert ckpt.spec.add_binary_head and ckpt.spec.num_tokentypes == 2
    model = build_meta_model(ckpt.spec).to_empty(device="cpu")
    model.load_state_dict(ckpt.state)
    model.eval()
    with torch.no_grad():
        return model(ref["tokens"], ref["mask"], ref["types"])


@requires_mcore
def test_imported_bert_gives_megatron_cores_mlm_and_binary_logits(tmp_path):
    """megatron-core's BertModel (local spec, tied output weights, binary head, two token types) saved as
    Megatron-LM's --ckpt-format torch does, the legacy BERT nesting (lm_head.layernorm, language_model.pooler,
    lm_head.bias) at TP=2 and Megatron-DeepSpeed's engine files all import to our BERT with megatron-core's
    masked-LM logits at every real position and its binary logits (fp32; 1e-4 as in the BERT parity test)."""
    shape = {**SHAPE, "bias": True}
    run_mcore_script(MCORE_BERT_SCRIPT, [json.dumps(shape)], tmp_path)
    ref = torch.load(tmp_path / "bert.out.pt", weights_only=True)
    legacy = {}
    for name, t in ref["state"].items():
        for a, b in LEGACY_BERT:
            name = name.replace(a, b)
        legacy[name] = t
    args = argparse.Namespace(**{**ref["args"], "tensor_model_parallel_size": 2})
    tp2, ds = tmp_path / "mlm_legacy_tp2", tmp_path / "ds_tp2"
    (ds / "global_step3").mkdir(parents=True)
    for r, shard in enumerate(_tp_split(legacy, 2)):
        (tp2 / "iter_0000003" / f"mp_rank_{r:02d}").mkdir(parents=True)
        torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 3, "model": _nest_bert(shard)},
                   tp2 / "iter_0000003" / f"mp_rank_{r:02d}" / "model_optim_rng.pt")
        torch.save({"module": shard, "args": args, "global_steps": 3},
                   ds / "global_step3" / f"mp_rank_{r:02d}_model_states.pt")
    (tp2 / "latest_checkpointed_iteration.txt").write_text("3")
    (ds / "latest").write_text("global_step3")
    imports = [
        _import("--loader", "megatron_lm", "--model-type", "BERT", "--load-dir", str(tmp_path / "bert"),
                "--save-dir", str(tmp_path / "out_mcore")),
        _import("--loader", "megatron_lm", "--model-type", "BERT", "--load-dir", str(tp2),
                "--save-dir", str(tmp_path / "out_tp2")),
        _import("--loader", "deepspeed", "--model-type", "BERT", "--load-dir", str(ds),
                "--save-dir", str(tmp_path / "out_ds")),
    ]
    real = ref["mask"].bool()
    for out in imports:
        logits, binary = _bert_outputs(out, ref)
        # megatron-core also masks every key of a padded query row; real query rows are the ones that count
        torch.testing.assert_close(logits[real], ref["logits"][real], atol=1e-4, rtol=1e-4, msg=str(out))
        torch.testing.assert_close(binary, ref["binary"], atol=1e-4, rtol=1e-4, msg=str(out))


TORCH_DIST_SCRIPT = textwrap.dedent(
    """
    import queue
    from argparse import Namespace
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    # CPU-only torch: megatron-core's writer syncs CUDA after staging and collects its write results through a
    # spawned Manager queue (which hangs here); the files it writes are the same with neither.
    torch.cuda.synchronize = lambda *a, **k: None
    filesystem_async._results_queue = queue.Queue()
    source, cases = sys.argv[1], json.loads(sys.argv[2])
    for case, spec in cases.items():
        ref = torch.load(os.path.join(source, case + ".out.pt"), weights_only=True)
        norm = spec.get("normalization", "LayerNorm")
        model = GPTModel(config_from_spec(spec), get_gpt_layer_local_spec(normalization=norm), vocab_size=spec["vocab"],
                         max_sequence_length=spec["max_pos"], position_embedding_type=spec["pe"],
                         share_embeddings_and_output_weights=not spec["untie"])
        missing, unexpected = model.load_state_dict(ref["state"], strict=False)
        assert not unexpected and all(k.endswith("_extra_state") for k in missing), (missing, unexpected)
        # Megatron-LM's save_checkpoint with --ckpt-format torch_dist: this dict, dist_checkpointing.save into the
        # iteration directory, then the tracker file.
        args = Namespace(**{**ref["args"], "ckpt_format": "torch_dist", "tensor_model_parallel_size": 2})
        it_dir = os.path.join(case, "iter_0000007")
        os.makedirs(it_dir)
        dist_checkpointing.save({"args": args, "checkpoint_version": 3.0, "iteration": 7,
                                 "model": model.sharded_state_dict()}, it_dir)
        with open(os.path.join(case, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("7")
    """
)


@requires_mcore
def test_torch_dist_checkpoints_import_with_megatron_cores_logits(mcore_checkpoints, tmp_path):
    """Each case's weights saved by megatron-core's own dist_checkpointing.save as Megatron-LM's --ckpt-format
    torch_dist does (stacked layers, whole tensors, common.pt with args saying TP=2) import through
    tools/checkpoint/import_megatron.py to our model with megatron-core's logits."""
    cases = {name: {**SHAPE, **c} for name, c in CASES.items()}
    run_mcore_script(TORCH_DIST_SCRIPT, [str(mcore_checkpoints), json.dumps(cases)], tmp_path)
    for case in cases:
        assert (tmp_path / case / "iter_0000007" / ".metadata").is_file()
        ref = torch.load(mcore_checkpoints / f"{case}.out.pt", weights_only=True)
        out = _import("--loader", "megatron_lm", "--model-type", "GPT", "--load-dir", str(tmp_path / case),
                      "--save-dir", str(tmp_path / f"out_{case}"))
        torch.testing.assert_close(_logits(out, ref), ref["logits"], atol=1e-4, rtol=1e-4, msg=case)


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_torch_dist_index_naming_other_classes_is_refused(tmp_path):
    """A torch_dist index (.metadata) that names anything but torch.distributed.checkpoint's index records is
    refused before it is built (torch itself would unpickle it with plain pickle)."""
    from megatron.interop.megatron_import import read_foreign_checkpoint

    it_dir = tmp_path / "iter_0000001"
    it_dir.mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    torch.save({"args": argparse.Namespace(num_layers=1), "checkpoint_version": 3.0}, it_dir / "common.pt")
    (it_dir / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ValueError, match="builtins.print, which is not one of torch.distributed.checkpoint's"):
        read_foreign_checkpoint(tmp_path, "megatron_lm", "GPT")


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
    """Pipeline-parallel shards and an MLP not built here (squared ReLU) are refused naming what to do; a directory
    without a tracker names the file it needs."""
    from megatron.interop.megatron_import import read_foreign_checkpoint

    (tmp_path / "pp" / "iter_0000001" / "mp_rank_00_001").mkdir(parents=True)
    (tmp_path / "pp" / "latest_checkpointed_iteration.txt").write_text("1")
    with pytest.raises(NotImplementedError, match="pipeline-parallel shards"):
        read_foreign_checkpoint(tmp_path / "pp", "megatron_lm", "GPT")
    with pytest.raises(ValueError, match="has no 'latest' file"):
        read_foreign_checkpoint(tmp_path, "deepspeed", "GPT")
    relu2 = tmp_path / "relu2" / "iter_0000001" / "mp_rank_00"
    relu2.mkdir(parents=True)
    (tmp_path / "relu2" / "latest_checkpointed_iteration.txt").write_text("1")
    args = argparse.Namespace(num_layers=1, hidden_size=8, num_attention_heads=4, squared_relu=True, seq_length=8,
                              max_position_embeddings=8)
    torch.save({"args": args, "model": {"embedding.word_embeddings.weight": torch.zeros(8, 8)}},
               relu2 / "model_optim_rng.pt")
    with pytest.raises(NotImplementedError, match="trained with --squared-relu, which is not implemented"):
        read_foreign_checkpoint(tmp_path / "relu2", "megatron_lm", "GPT")
