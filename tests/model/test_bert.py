"""BertModel on one process: the same function as megatron-core 0.16's BertModel (local spec) with equal weights,
padding isolation, the -1 label convention, half precision, initialization and configuration errors."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

from mcore_utils import LAYER_RENAMES, rename, requires_mcore, run_mcore_script
from megatron.model.bert import BertModel, padding_attention_mask
from megatron.model.config import TransformerConfig
from megatron.parallel.state import ParallelState

VOCAB, BATCH, SEQ = 128, 3, 16
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tokens, two segments, padded tails of 0 / 3 / 7 tokens and labels at ~1/3 of the real positions."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    lengths = torch.tensor([SEQ, SEQ - 3, SEQ - 7])
    padding_mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()  # [b, s], 1 = real
    types = (torch.arange(SEQ)[None, :] >= (lengths[:, None] // 2)).long() * padding_mask
    predicted = (torch.rand(BATCH, SEQ, generator=gen) < 0.35) & padding_mask.bool()
    labels = torch.where(predicted, torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen), -1)
    return {"tokens": tokens, "padding_mask": padding_mask, "tokentype_ids": types, "lm_labels": labels}


def _model(add_binary_head: bool = True, num_tokentypes: int = 2, **overrides) -> BertModel:
    cfg = TransformerConfig.flavor("debug", **overrides)
    return BertModel(cfg, ParallelState.single(), VOCAB, add_binary_head=add_binary_head,
                     num_tokentypes=num_tokentypes, seed=3)


# ---------------------------------------------------------------------------------------------------------------
# Parity with megatron-core

RENAMES = [
    (r"^word_embeddings\.", "embedding.word_embeddings."),
    (r"^position_embeddings\.", "embedding.position_embeddings."),
    (r"^tokentype_embeddings\.", "embedding.tokentype_embeddings."),
    (r"^lm_head\.bias$", "output_layer.bias"),
    (r"^pooler\.", "pooler.dense."),
    *LAYER_RENAMES,
]

MCORE_BERT_SCRIPT = textwrap.dedent(
    """
    from megatron.core.models.bert.bert_model import BertModel
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec

    params = []
    for case in sys.argv[1:]:
        blob = torch.load(case + ".in.pt", weights_only=True)
        spec = blob["spec"]
        cfg = config_from_spec(spec)
        model = BertModel(
            cfg, num_tokentypes=spec["tokentypes"], transformer_layer_spec=bert_layer_local_spec,
            vocab_size=spec["vocab"], max_sequence_length=spec["max_pos"], position_embedding_type=spec["pe"],
            share_embeddings_and_output_weights=True, add_binary_head=spec["binary"],
        ).eval()
        missing, unexpected = model.load_state_dict(blob["weights"], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        assert not missing and not unexpected, (missing, unexpected)
        types = blob["tokentype_ids"] if spec["tokentypes"] else None
        with torch.no_grad():
            logits, binary = model(blob["tokens"], blob["padding_mask"], types)
            loss, _ = model(blob["tokens"], blob["padding_mask"], types, lm_labels=blob["lm_labels"])
        torch.save({"logits": logits, "loss": loss, "binary": binary}, case + ".out.pt")
        params.append(sum(p.numel() for p in model.parameters()))
    print(json.dumps({"params": params}))
    """
)

PARITY_CASES = {
    "learned-binary-head": dict(add_binary_head=True, num_tokentypes=2),
    "rope-no-binary-head-nobias": dict(add_binary_head=False, num_tokentypes=0, position_embedding_type="rope",
                                       add_bias_linear=False),
}


def _write_parity_case(prefix: Path, overrides: dict) -> tuple[BertModel, dict]:
    model = _model(**NO_DROPOUT, **overrides).eval()
    with torch.no_grad():  # non-trivial values where megatron-core starts from zero (biases, LayerNorm)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    cfg, batch = model.config, _batch()
    spec = dict(num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, heads=cfg.num_attention_heads,
                ffn=cfg.ffn_hidden_size, kv=cfg.kv_channels, eps=cfg.layernorm_epsilon, bias=cfg.add_bias_linear,
                vocab=VOCAB, max_pos=cfg.max_position_embeddings, pe=cfg.position_embedding_type,
                tokentypes=model.num_tokentypes, binary=model.binary_head is not None)
    weights = {rename(k, RENAMES): v for k, v in model.state_dict().items()}
    torch.save({"weights": weights, "spec": spec, **batch}, str(prefix) + ".in.pt")
    return model, batch


@requires_mcore
@pytest.mark.slow
def test_bert_matches_megatron_core(tmp_path):
    """With our weights loaded into megatron-core's BertModel (local spec, tied output weights), both give the same
    parameter count, vocab logits and per-token loss at every real position and the same binary logits, with and
    without the binary head (learned positions + token types; rope, no types, no linear biases): embeddings sum,
    padding mask, pre-LN stack, LM head (dense, GELU, LayerNorm, output bias), pooler and loss all agree."""
    prefixes = [tmp_path / name for name in PARITY_CASES]
    ours = [_write_parity_case(prefix, overrides) for prefix, overrides in zip(prefixes, PARITY_CASES.values())]
    stdout = run_mcore_script(MCORE_BERT_SCRIPT, list(map(str, prefixes)), tmp_path)
    their_params = json.loads(stdout.strip().splitlines()[-1])["params"]
    for prefix, (model, batch), n_params in zip(prefixes, ours, their_params):
        theirs = torch.load(str(prefix) + ".out.pt", weights_only=True)
        types = batch["tokentype_ids"] if model.num_tokentypes else None
        with torch.no_grad():
            logits, binary = model(batch["tokens"], batch["padding_mask"], types)
            loss, _ = model(batch["tokens"], batch["padding_mask"], types, lm_labels=batch["lm_labels"])
        assert n_params == sum(p.numel() for p in model.parameters()), prefix.name
        # megatron-core also masks all keys of padded query rows (they attend uniformly to every key), we only mask
        # padded keys; the two agree wherever a real token is the query, which is every position a loss reads.
        real, predicted = batch["padding_mask"].bool(), batch["lm_labels"] >= 0
        # fp32; SDPA versus megatron-core's baddbmm + softmax differ only in rounding (measured max |diff| ~2e-7
        # on logits up to ~0.8, ~5e-7 on losses ~5, ~4e-9 on binary logits); a real difference (LN placement, GELU
        # variant, a dropped bias, a leaked padded key) is >1e-3.
        tol = dict(atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits[real], theirs["logits"][real], **tol, msg=prefix.name)
        torch.testing.assert_close(loss[predicted], theirs["loss"][predicted], **tol, msg=prefix.name)
        if model.binary_head is None:
            assert binary is None and theirs["binary"] is None
        else:
            torch.testing.assert_close(binary, theirs["binary"], **tol, msg=prefix.name)


# ---------------------------------------------------------------------------------------------------------------
# Single-process properties

def test_padded_positions_do_not_leak_into_real_ones():
    """Changing tokens and token types at padded positions leaves logits at every real position and the binary
    logits bit-for-bit unchanged (no real query attends to a padded key); changing a real token does change them."""
    model = _model(**NO_DROPOUT).eval()
    batch = _batch()
    real = batch["padding_mask"].bool()
    with torch.no_grad():
        logits, binary = model(batch["tokens"], batch["padding_mask"], batch["tokentype_ids"])
        tokens = torch.where(real, batch["tokens"], (batch["tokens"] + 17) % VOCAB)
        types = torch.where(real, batch["tokentype_ids"], 1)
        logits2, binary2 = model(tokens, batch["padding_mask"], types)
        assert torch.equal(logits2[real], logits[real]) and torch.equal(binary2, binary)
        assert not torch.equal(logits2[~real], logits[~real])  # control: padded positions did change
        tokens[2, 0] = (tokens[2, 0] + 1) % VOCAB
        logits3, binary3 = model(tokens, batch["padding_mask"], types)
        assert not torch.equal(logits3[2, 1], logits[2, 1]) and not torch.equal(binary3[2], binary[2])


def test_padding_attention_mask_masks_padded_keys_only():
    """The mask is True exactly where the key is padding, for every query row, and accepts int/float/bool masks."""
    padding = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = torch.tensor([[False, False, True], [False, True, True]])[:, None, None, :].expand(2, 1, 3, 3)
    for mask in (padding, padding.float(), padding.bool()):
        out = padding_attention_mask(mask)
        assert out.dtype == torch.bool and out.shape == (2, 1, 3, 3) and torch.equal(out, expected)


def test_unpredicted_labels_give_finite_losses_equal_to_label_zero():
    """Labels of -1 yield finite losses (the loss of token 0, which the caller masks out); at predicted positions
    the loss is the cross entropy of the full-vocabulary logits; gradients through the masked mean are finite."""
    model = _model(**NO_DROPOUT)
    batch = _batch()
    loss, binary = model(**batch)
    assert loss.shape == (BATCH, SEQ) and loss.dtype == torch.float32 and binary.shape == (BATCH, 2)
    logits, _ = model(batch["tokens"], batch["padding_mask"], batch["tokentype_ids"])
    reference = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["lm_labels"].clamp(min=0).flatten(),
                                                  reduction="none").view(BATCH, SEQ)
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)  # fp32, two formulations of log-softmax
    mask = (batch["lm_labels"] >= 0).float()
    ((loss * mask).sum() / mask.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_cast(dtype):
    """After .to(dtype) the model runs forward and backward, returns fp32 losses and binary logits close to the fp32
    model's, keeps parameters and grads in that dtype, and the TP tags survive the cast."""
    batch = _batch()
    model = _model(**NO_DROPOUT)
    with torch.no_grad():
        ref_loss, ref_binary = model(**batch)
    half = model.to(dtype)
    loss, binary = half(**batch)
    (loss.mean() + binary.sum()).backward()
    assert loss.dtype == torch.float32 and binary.dtype == torch.float32
    # 8 (bf16) / 11 (fp16) mantissa bits over 4 layers and the LM head.
    torch.testing.assert_close(loss, ref_loss, atol=0.05, rtol=0.02)
    torch.testing.assert_close(binary, ref_binary, atol=0.05, rtol=0.05)
    assert all(p.dtype == dtype and p.grad.dtype == dtype for p in half.parameters())
    assert half.lm_head.bias.tensor_model_parallel and half.lm_head.bias.partition_dim == 0


def test_initialization():
    """Embeddings (word, position, token type), LM-head dense, pooler and binary head ~ N(0, std); biases zero,
    LayerNorms ones; the same seed gives the same model and a different seed a different one; building the model
    draws nothing from the global RNG (which drives dropout)."""
    rng_before = torch.get_rng_state()
    model = _model()
    assert torch.equal(torch.get_rng_state(), rng_before)
    std = model.config.init_method_std
    for weight in (model.word_embeddings.weight, model.position_embeddings.weight, model.lm_head.dense.weight,
                   model.pooler.weight):
        # >= 4096 samples: the sample std is within ~3% of the true one with overwhelming probability.
        assert weight.std().item() == pytest.approx(std, rel=0.1)
    for weight in (model.tokentype_embeddings.weight, model.binary_head.weight):  # 128 samples: within ~20%
        assert weight.std().item() == pytest.approx(std, rel=0.35)
    assert not model.lm_head.bias.any() and not model.lm_head.dense.bias.any() and not model.pooler.bias.any()
    assert bool((model.lm_head.layer_norm.weight == 1).all()) and not model.binary_head.bias.any()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), _model().state_dict().values()))
    other = BertModel(model.config, ParallelState.single(), VOCAB, seed=4)
    assert not torch.equal(other.pooler.weight, model.pooler.weight)
    assert model.layers is model.encoder.layers and len(model.layers) == model.config.num_layers
    assert model.rng_tracker is model.encoder.rng_tracker


def test_without_binary_head_and_token_types():
    """add_binary_head=False drops pooler and binary head (binary_logits None); num_tokentypes=0 drops the type
    table; tokentype_ids=None on a model with types means segment 0 everywhere."""
    batch = _batch()
    plain = _model(add_binary_head=False, num_tokentypes=0, **NO_DROPOUT)
    assert plain.pooler is None and plain.binary_head is None and plain.tokentype_embeddings is None
    logits, binary = plain(batch["tokens"], batch["padding_mask"])
    assert binary is None and logits.shape == (BATCH, SEQ, VOCAB)
    typed = _model(**NO_DROPOUT).eval()
    with torch.no_grad():
        implicit = typed(batch["tokens"], batch["padding_mask"])
        explicit = typed(batch["tokens"], batch["padding_mask"], torch.zeros_like(batch["tokens"]))
    assert all(torch.equal(a, b) for a, b in zip(implicit, explicit))


def test_configuration_errors():
    """Mismatched shapes, types on a model without a type table, too-long sequences, negative num_tokentypes and a
    TP-indivisible vocabulary raise ValueError naming the values."""
    batch = _batch()
    model = _model(add_binary_head=False, num_tokentypes=0)
    with pytest.raises(ValueError, match=r"padding_mask shape \(3, 15\) must equal tokens shape \(3, 16\)"):
        model(batch["tokens"], batch["padding_mask"][:, 1:])
    with pytest.raises(ValueError, match="num_tokentypes=0"):
        model(batch["tokens"], batch["padding_mask"], batch["tokentype_ids"])
    with pytest.raises(ValueError, match=r"sequence length 600 exceeds max_position_embeddings \(512\)"):
        model(torch.zeros(1, 600, dtype=torch.long), torch.ones(1, 600))
    with pytest.raises(ValueError, match="num_tokentypes must be >= 0, got -1"):
        _model(num_tokentypes=-1)
    tp2 = ParallelState(world_size=2, rank=0, tp_size=2, tp_rank=0, tp_group=None, dp_size=1, dp_rank=0, dp_group=None)
    with pytest.raises(ValueError, match=r"padded vocab_size \(129\) must be divisible by tensor_model_parallel_size"):
        BertModel(TransformerConfig.flavor("debug"), tp2, 129)


def test_is_bidirectional():
    """A real token's logits depend on later real tokens (no causal mask), unlike GPT's."""
    model = _model(**NO_DROPOUT).eval()
    batch = _batch()
    tokens = batch["tokens"].clone()
    tokens[0, -1] = (tokens[0, -1] + 1) % VOCAB
    with torch.no_grad():
        before, _ = model(batch["tokens"], batch["padding_mask"])
        after, _ = model(tokens, batch["padding_mask"])
    assert (after[0, 0] - before[0, 0]).abs().max() > 1e-4


def test_dropout_is_active_in_training_and_seeded():
    """With dropout on, training-mode losses are a function of the default RNG stream (hidden dropout) and the
    tracker's streams (attention dropout): restoring both reproduces the loss bit for bit, another default seed
    changes it, and eval mode is deterministic."""
    model = _model()
    batch = _batch()
    tracker_states = model.rng_tracker.get_states()
    losses = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        model.rng_tracker.set_states(tracker_states)
        losses.append(model(**batch)[0].detach())
    assert torch.equal(losses[0], losses[1]) and not torch.equal(losses[0], losses[2])
    assert math.isfinite(losses[0].sum().item())
    model.eval()
    assert torch.equal(model(**batch)[0], model(**batch)[0])
