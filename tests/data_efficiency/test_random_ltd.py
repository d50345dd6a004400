"""Random-LTD layer wrapper: exactness against the plain layer and a naive per-sample loop (values, gradients,
masks, rotary angles), index draws (TP ranks, layers, samples, recomputation, resume), accounting, input errors, and
compiled layers (no graph break, eager results)."""

from __future__ import annotations

import io
import logging
import re

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from dist_utils import all_gather_cat, run_distributed
from megatron.data_efficiency.config import RandomLTDConfig, RandomLTDScheduleConfig, RandomLTDScheduleSettings
from megatron.data_efficiency.routing import RandomLTDLayer, RandomLTDScheduler, wrap_layers
from megatron.kernels.random_ltd import sample_tokens
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.model.transformer import TransformerLayer, rotary_embedding
from megatron.parallel.random import TOKEN_ROUTING_RNG, RNGStatesTracker
from megatron.parallel.state import ParallelState

VOCAB, B, S, H = 128, 3, 16, 64
# fp32. The wrapped layer runs one batched [r, b, h] GEMM/SDPA where the naive loop runs b single-sample ones, and
# parameter gradients sum the samples in a different order: rounding-level differences (measured max ~5e-7 on
# outputs of magnitude ~4 and on gradients up to ~10). 1e-5 / 1e-5 is >10x that; a wrong index, mask or angle
# moves values by >= 1e-2.
ATOL, RTOL = 1e-5, 1e-5



def _scheduler(num_layers: int, ids: list[int], min_value: int, max_value: int | None = None,
               require_steps: int = 1, seq_per_step: int = 1) -> RandomLTDScheduler:
    return RandomLTDScheduler(RandomLTDConfig(
        enabled=True, total_layer_num=num_layers, random_ltd_layer_num=len(ids), random_ltd_layer_id=ids,
        model_mask_name="attention_mask", model_type="decoder", hidden_state_order="seq_batch_dim",
        random_ltd_schedule=RandomLTDScheduleConfig(
            min_value=min_value, max_value=min_value if max_value is None else max_value, schedule_type="fixed_linear",
            schedule_config=RandomLTDScheduleSettings(require_steps=require_steps, seq_per_step=seq_per_step),
        ),
    ))


def _gpt(state: ParallelState | None = None, **overrides) -> GPTModel:
    return GPTModel(TransformerConfig.flavor("debug", **overrides), state or ParallelState.single(), VOCAB, seed=7)


def _wrapped_gpt(kept: int, state: ParallelState | None = None, **overrides):
    model = _gpt(state, **overrides)
    controller = wrap_layers(model.layers, None, _scheduler(4, [1, 2], kept), model.rng_tracker)
    return model, controller


def _tokens(b: int = B, s: int = S, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, VOCAB, (b, s + 1), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def _loss_and_grads(model: GPTModel, **batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    tokens, labels = _tokens()
    torch.manual_seed(123)  # default stream (hidden dropout) starts alike for every variant
    loss = model(tokens, labels=labels, **batch)
    loss.mean().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _token_stream(tracker: RNGStatesTracker) -> torch.Tensor:
    return tracker.get_states()[TOKEN_ROUTING_RNG]["cpu"]


# --------------------------------------------------------------------------------------------------------------
# Exactness of the wrapper
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kept", [S, S + 16], ids=["r=S", "r>S(curriculum-truncated)"])
def test_keeping_every_token_is_the_plain_model_bitwise(kept):
    """With r >= S the wrapped model is the plain model bit for bit (loss and every gradient, dropout on), and no
    indices are drawn (the token-routing stream does not move)."""
    drop = dict(hidden_dropout=0.3, attention_dropout=0.3, position_embedding_type="rope")
    ref_loss, ref_grads = _loss_and_grads(_gpt(**drop))
    model, controller = _wrapped_gpt(kept, **drop)
    before = _token_stream(model.rng_tracker)
    loss, grads = _loss_and_grads(model)
    assert torch.equal(loss, ref_loss)
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name.replace("layers.1.", "layers.1.layer.").replace("layers.2.", "layers.2.layer.")],
                           grad), name
    assert torch.equal(_token_stream(model.rng_tracker), before) and controller.last_indices is None


def _layer_stack(cfg: TransformerConfig) -> nn.ModuleList:
    state, tracker = ParallelState.single(), RNGStatesTracker.build(1, ParallelState.single())
    return nn.ModuleList(TransformerLayer(cfg, state, i, rng_tracker=tracker, init_seed=i) for i in range(3))


def _naive(layer: nn.Module, hidden, idx, mask, rope, is_causal) -> torch.Tensor:
    """Per sample: gather kept rows by Python indexing, run the layer on them alone, write them back by row."""
    samples = []
    for j in range(hidden.shape[1]):
        pos = idx[j].tolist()
        x = hidden[pos, j:j + 1]  # [r, 1, h]
        m = None if mask is None else mask[j if mask.shape[0] > 1 else 0][:, pos][:, :, pos].unsqueeze(0)
        a = None if rope is None else rope[pos, (j if rope.shape[1] > 1 else 0):][:, :1]  # [r, 1, 1, d]
        out = layer(x, attention_mask=m, rotary_pos_emb=a, is_causal=is_causal)
        rows = list(hidden[:, j].unbind(0))
        for i, p in enumerate(pos):
            rows[p] = out[i, 0]
        samples.append(torch.stack(rows))
    return torch.stack(samples, dim=1)


# Llama-style layers: RMSNorm, SwiGLU, grouped-query attention (2 key/value heads for 4 heads), no linear biases.
LLAMA = dict(normalization="RMSNorm", swiglu=True, group_query_attention=True, num_query_groups=2,
             add_bias_linear=False)


def _case(name: str, gen: torch.Generator):
    """(config overrides, mask, rotary angles, is_causal, model_type) of a naive-loop case; ``llama_<case>`` is
    ``<case>`` with :data:`LLAMA` layers."""
    if name.startswith("llama_"):
        overrides, *rest = _case(name[len("llama_"):], gen)
        return {**LLAMA, **overrides}, *rest
    s = S
    if name == "causal_learned":
        return {}, None, None, True, "decoder"
    if name == "rope_shared_angles":
        return dict(position_embedding_type="rope"), None, rotary_embedding(torch.arange(s)[None], 16), True, "decoder"
    if name == "document_mask_rope_per_sample":  # reset-attention-mask batches: per-sample boundaries and positions
        mask = torch.ones(s, s, dtype=torch.bool).triu(1).repeat(B, 1, 1, 1)
        pos = torch.arange(s).repeat(B, 1)
        for j, cut in enumerate((5, 9, 12)):
            mask[j, :, cut:, :cut] = True
            pos[j, cut:] -= cut
        return dict(position_embedding_type="rope"), mask, rotary_embedding(pos, 16), True, "decoder"
    pad = torch.zeros(B, 1, s, s, dtype=torch.bool)  # encoder: sample j has its last 2j tokens padded
    for j in range(B):
        pad[j, :, :, s - 2 * j:] = True
    return {}, pad, None, False, "encoder"


@pytest.mark.parametrize("name", ["causal_learned", "rope_shared_angles", "document_mask_rope_per_sample",
                                  "encoder_padding_mask", "llama_rope_shared_angles",
                                  "llama_document_mask_rope_per_sample"])
def test_wrapped_layer_equals_naive_per_sample_loop(name):
    """With r < S the wrapped layer equals a naive loop (Python-indexed gather of each sample's kept tokens, mask
    rows/columns and angles; the layer run per sample; rows written back) in values and in the gradients of the
    input and of every parameter; the indices are one sample_tokens call on the token-routing stream; dropped
    tokens' outputs and input gradients are exactly the identity. Also for Llama-style layers (RMSNorm, SwiGLU,
    grouped-query attention) with and without a mask."""
    gen = torch.Generator().manual_seed(1)
    overrides, mask, rope, is_causal, model_type = _case(name, gen)
    layers = _layer_stack(TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0, **overrides))
    tracker, kept = RNGStatesTracker.build(11, ParallelState.single()), 6
    controller = wrap_layers(layers, [1], _scheduler(3, [1], kept), tracker, model_type=model_type)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(_token_stream(tracker))
    hidden = torch.randn(S, B, H, generator=gen, requires_grad=True)
    upstream = torch.randn(S, B, H, generator=gen)

    out = layers[1](hidden, attention_mask=mask, rotary_pos_emb=rope, is_causal=is_causal)
    idx = controller.last_indices[0]
    assert torch.equal(controller.last_indices, sample_tokens(1, B, S, kept, generator=replay))
    ref = _naive(layers[1].layer, hidden, idx, mask, rope, is_causal)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    params = [hidden, *layers[1].parameters()]
    grads = torch.autograd.grad(out, params, upstream)
    ref_grads = torch.autograd.grad(ref, params, upstream)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, atol=ATOL, rtol=RTOL)

    dropped = torch.ones(B, S, dtype=torch.bool)
    dropped[torch.arange(B)[:, None], idx] = False
    dropped = dropped.t()  # [s, b]
    assert torch.equal(out[dropped], hidden[dropped]) and torch.equal(grads[0][dropped], upstream[dropped])
    assert (out[~dropped] - hidden[~dropped]).abs().max() > 1e-2  # control: kept tokens did go through the layer


def test_rotary_angles_follow_the_kept_positions():
    """Kept tokens are rotated by their original positions' angles: the wrapper's kept rows equal the layer run on
    the gathered tokens with angles built from the kept position ids; angles of positions 0..r-1 (Megatron-DeepSpeed's
    ``freqs[:r]``) give a different result."""
    # Larger weights than the 0.02 default so attention (where positions act) visibly moves the residual stream.
    layers = _layer_stack(TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0,
                                                   position_embedding_type="rope", init_method_std=0.3))
    tracker, kept = RNGStatesTracker.build(3, ParallelState.single()), 5
    controller = wrap_layers(layers, [1], _scheduler(3, [1], kept), tracker)
    hidden = torch.randn(S, B, H, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = layers[1](hidden, rotary_pos_emb=rotary_embedding(torch.arange(S)[None], 16))
        idx = controller.last_indices[0]  # [b, r]
        gathered = torch.stack([hidden[idx[j], j] for j in range(B)], dim=1)  # [r, b, h]
        expected = layers[1].layer(gathered, rotary_pos_emb=rotary_embedding(idx, 16))
        renumbered = layers[1].layer(gathered, rotary_pos_emb=rotary_embedding(torch.arange(kept)[None], 16))
    kept_rows = torch.stack([out[idx[j], j] for j in range(B)], dim=1)
    torch.testing.assert_close(kept_rows, expected, atol=ATOL, rtol=RTOL)
    assert (kept_rows - renumbered).abs().max() > 1e-2


def test_eval_mode_runs_the_plain_layers():
    """In eval mode the wrapped model with r < S computes exactly the plain model's logits and draws nothing."""
    model, controller = _wrapped_gpt(4)
    plain = _gpt().eval()
    model.eval()
    before = _token_stream(model.rng_tracker)
    tokens, _ = _tokens()
    with torch.no_grad():
        assert torch.equal(model(tokens), plain(tokens))
    assert torch.equal(_token_stream(model.rng_tracker), before) and controller.last_indices is None
    model.train()
    model(tokens)  # control: training mode does drop
    assert controller.last_indices.shape == (2, B, 4)


def test_state_dict_keys_are_those_of_the_plain_model():
    """Wrapping changes no state_dict key (no ``layer.`` infix), and checkpoints load strictly in both directions."""
    model, _ = _wrapped_gpt(4)
    plain = _gpt(hidden_dropout=0.0)
    assert list(model.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(plain.state_dict(), strict=True)
    assert torch.equal(model.layers[1].layer.mlp.dense_h_to_4h.weight, plain.layers[1].mlp.dense_h_to_4h.weight)


# --------------------------------------------------------------------------------------------------------------
# Index draws: layers, samples, recomputation, resume
# --------------------------------------------------------------------------------------------------------------
def test_indices_are_sorted_distinct_and_differ_across_layers_and_samples():
    """One forward draws [n, b, r] indices: every row strictly increasing within [0, S), and no two (layer, sample)
    rows equal; the next forward draws new ones."""
    model, controller = _wrapped_gpt(6)
    tokens, _ = _tokens(b=4)
    model(tokens)
    first = controller.last_indices
    assert first.shape == (2, 4, 6) and first.dtype == torch.int64
    assert bool((first[..., 1:] > first[..., :-1]).all()) and 0 <= int(first.min()) and int(first.max()) < S
    rows = first.reshape(8, 6)
    assert len({tuple(r.tolist()) for r in rows}) == 8
    model(tokens)
    assert not torch.equal(controller.last_indices, first)


RECOMPUTE = {
    "full-uniform-1": dict(recompute_granularity="full"),
    "full-uniform-3": dict(recompute_granularity="full", recompute_num_layers=3),
    "full-block-2": dict(recompute_granularity="full", recompute_method="block", recompute_num_layers=2),
    "selective": dict(recompute_granularity="selective"),
}


def _accumulate(model: GPTModel, controller) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], list]:
    """Two micro-batches forward before one backward, then a third forward+backward; per-micro-batch r varies."""
    torch.manual_seed(123)
    controller.set_step(0)
    losses, draws = [], []
    for seed in (0, 1):
        tokens, labels = _tokens(seed=seed)
        losses.append(model(tokens, labels=labels))
        draws.append(controller.last_indices)
    (losses[0].mean() + losses[1].mean()).backward()
    controller.set_step(1)
    tokens, labels = _tokens(s=12, seed=2)  # a shorter (curriculum-truncated) batch
    losses.append(model(tokens, labels=labels))
    draws.append(controller.last_indices)
    losses[-1].mean().backward()
    return [l.detach() for l in losses], {n: p.grad for n, p in model.named_parameters()}, draws


@pytest.mark.parametrize("recompute", list(RECOMPUTE))
@pytest.mark.parametrize("pe", ["learned_absolute", "rope"])
def test_recomputation_is_bitwise_identical_with_random_ltd(recompute, pe):
    """With random-LTD dropping tokens and hidden/attention dropout at 0.3, every recomputation mode reproduces the
    losses, indices and all gradients of the run without recomputation bit for bit, also when two micro-batches run
    forward before their backward (the recomputed layers must not redraw the indices, nor read the later draw)."""
    def build(**extra):
        model = _gpt(hidden_dropout=0.3, attention_dropout=0.3, position_embedding_type=pe, **extra)
        sched = _scheduler(4, [1, 2], 8, 10, require_steps=1, seq_per_step=2)  # r = 8, then 10
        return model, wrap_layers(model.layers, [1, 2], sched, model.rng_tracker)

    ref_losses, ref_grads, ref_draws = _accumulate(*build())
    losses, grads, draws = _accumulate(*build(**RECOMPUTE[recompute]))
    assert [d.shape for d in draws] == [(2, B, 8), (2, B, 8), (2, B, 10)]
    assert not torch.equal(draws[0], draws[1])
    assert all(torch.equal(a, b) for a, b in zip(draws, ref_draws))
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses))
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name], grad), name


def _build_ltd(pe: str, compile_backend: str | None = None, **extra):
    model = _gpt(hidden_dropout=0.3, attention_dropout=0.3, position_embedding_type=pe, **extra)
    if compile_backend is not None:
        for layer in model.layers:
            layer.compile(backend=compile_backend)
    sched = _scheduler(4, [1, 2], 8, 10, require_steps=1, seq_per_step=2)  # r = 8, then 10
    return model, wrap_layers(model.layers, [1, 2], sched, model.rng_tracker)


@pytest.mark.slow
@pytest.mark.parametrize("recompute", ["none", "full-uniform-1", "selective"])
def test_compiled_layers_with_random_ltd_have_no_graph_break_and_equal_eager(recompute):
    """Layers compiled with the aot_eager backend (Dynamo and AOTAutograd trace, aten ops run as in eager) under
    random-LTD wrappers, with dropout at 0.3: no graph break while compiling, and the eager losses, index draws and
    gradients bit for bit through two micro-batches, a change of r and of the sequence length (recompiles with
    dynamic shapes), with and without recomputation."""
    extra = RECOMPUTE.get(recompute, {})
    ref_losses, ref_grads, ref_draws = _accumulate(*_build_ltd("rope", **extra))
    torch._dynamo.reset()
    counters.clear()
    losses, grads, draws = _accumulate(*_build_ltd("rope", "aot_eager", **extra))
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert all(torch.equal(a, b) for a, b in zip(draws, ref_draws))
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses))
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name], grad), name


@pytest.mark.slow
def test_inductor_compiled_layers_with_random_ltd_and_dropout_match_eager():
    """torch_compile=True (Inductor's C++ kernels, layers and loss) with random-LTD on layers 1..2 and dropout 0.3
    compiles without a graph break and matches the eager losses and gradients. fallback_random makes Inductor draw
    the attention-dropout masks with the aten ops from the same generators as eager (by default it uses its own
    Philox stream, seeded from the model-parallel stream), so the masks agree and the only differences are
    Inductor's reordered fp32 reductions: measured ~2e-7; the bounds are those of the dropout-free compile test."""
    def run(model: GPTModel, controller) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(5)
        controller.set_step(0)
        tokens, labels = _tokens()
        loss = model(tokens, labels=labels)
        loss.mean().backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    ref_loss, ref_grads = run(*_build_ltd("learned_absolute"))
    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):
        loss, grads = run(*_build_ltd("learned_absolute", torch_compile=True))
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_resume_mid_schedule_gives_same_kept_tokens_and_next_indices():
    """Controller and tracker state saved mid-schedule and loaded (weights_only) into a fresh model reproduce the
    kept count, the consumed layer tokens and the next forward's indices exactly."""
    def build():
        model = _gpt()
        sched = _scheduler(4, [1, 2], 4, 16, require_steps=4, seq_per_step=4)
        return model, wrap_layers(model.layers, None, sched, model.rng_tracker)

    model, controller = build()
    tokens, _ = _tokens()
    for step in range(2):
        controller.set_step(step)
        model(tokens)
        controller.consume(S, B)
    buf = io.BytesIO()
    torch.save({"ltd": controller.state_dict(), "rng": model.rng_tracker.get_states()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    resumed_model, resumed = build()
    resumed.load_state_dict(saved["ltd"])
    resumed_model.rng_tracker.set_states(saved["rng"])
    assert (resumed.kept_tokens, resumed.consumed_layer_tokens) == (controller.kept_tokens, controller.consumed_layer_tokens)
    assert resumed.set_step(2) == controller.set_step(2) == 8  # 4 + 12 * 2 // 4 = 10, down to a multiple of 4
    model(tokens)
    resumed_model(tokens)
    assert torch.equal(resumed.last_indices, controller.last_indices)


def test_layer_token_accounting_and_metrics():
    """consume adds B * (S * (L - n) + min(r, S) * n) layer tokens, effective tokens are that // L per sample,
    metrics report the kept count (capped at a truncated length) and the running total."""
    model = _gpt()
    sched = _scheduler(4, [1, 2], 4, 16, require_steps=2, seq_per_step=4)
    controller = wrap_layers(model.layers, None, sched, model.rng_tracker)
    assert controller.set_step(1, seq_length=16) == 10 - 10 % 4 == 8
    assert controller.consume(16, 8) == 8 * (16 * 2 + 8 * 2)
    assert controller.effective_tokens(16, 8) == 8 * ((16 * 2 + 8 * 2) // 4)
    assert controller.consume(6, 8) == 8 * (6 * 2 + 6 * 2)  # truncated batch shorter than r: nothing dropped
    assert controller.metrics(seq_length=6) == {"data_efficiency/ltd_kept_tokens": 6.0,
                                                "data_efficiency/consumed_layer_tokens": float(8 * 48 + 8 * 24)}


# --------------------------------------------------------------------------------------------------------------
# Tensor parallelism
# --------------------------------------------------------------------------------------------------------------
def _tp_body(rank: int, world_size: int) -> None:
    state = ParallelState.build(world_size)
    # Dropout off: attention dropout draws per-rank masks, so only the deterministic model is comparable to TP=1.
    plain = dict(hidden_dropout=0.0, attention_dropout=0.0, position_embedding_type="rope")
    for overrides in (plain, {**plain, **LLAMA}):
        _tp_compare(state, overrides)


def _tp_compare(state: ParallelState, overrides: dict) -> None:
    shard, ctl = _wrapped_gpt(6, state, **overrides)
    full, full_ctl = _wrapped_gpt(6, None, **overrides)
    tokens, labels = _tokens()
    loss_shard, loss_full = shard(tokens, labels=labels), full(tokens, labels=labels)
    # fp32, same tolerance argument as tests/model/test_gpt_tensor_parallel.py: the shards differ from the unsharded
    # model only by GEMM summation order (~1e-6 relative); a wrong token choice moves the loss by > 1e-3.
    torch.testing.assert_close(loss_shard, loss_full, atol=5e-5, rtol=1e-4)
    assert torch.equal(ctl.last_indices, full_ctl.last_indices)
    gathered = all_gather_cat(ctl.last_indices[None], 0, state.tp_group)
    assert torch.equal(gathered[0], gathered[1]), "TP ranks kept different tokens"
    loss_shard.mean().backward()
    loss_full.mean().backward()
    full_params = dict(full.named_parameters())
    for name, p in shard.named_parameters():
        grad = all_gather_cat(p.grad, p.partition_dim, state.tp_group) if getattr(p, "tensor_model_parallel", False) \
            else p.grad
        torch.testing.assert_close(grad, full_params[name].grad, atol=5e-5, rtol=1e-4, msg=f"grad {name}")


@pytest.mark.distributed
def test_tensor_parallel_random_ltd_matches_single_process():
    """At TP=2 (gloo) with random-LTD dropping tokens, both ranks keep identical tokens, equal to the unsharded model
    from the same seed, and the loss and every re-assembled gradient match TP=1 (GPT and Llama-style layers)."""
    run_distributed(_tp_body, 2)


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids", [[0, 4], [-1, 2], [1, 1], [], [1, 3]])
def test_layer_ids_other_than_the_configs_raise_value_error(ids):
    """Layer ids that are not the scheduler config's (out of range, repeated, empty, other layers) are a ValueError
    naming both lists; the config itself is where the id rules are checked (test_random_ltd_scheduler.py)."""
    model = _gpt()
    with pytest.raises(ValueError, match=rf"wraps layers {re.escape(str(sorted(ids)))} of 4, .*"
                                         r"random_ltd_layer_id=\[1, 2\] of total_layer_num=4; make them agree"):
        wrap_layers(model.layers, ids, _scheduler(4, [1, 2], 4), model.rng_tracker)


def test_other_wrapping_errors(caplog):
    """Wrapping twice, an unknown model_type, a mismatched attention mode, and a later layer without its forward's
    draw raise clear errors; wrapping the first or last layer logs a warning."""
    model, _ = _wrapped_gpt(4)
    with pytest.raises(ValueError, match=r"layers \[1, 2\] are already wrapped"):
        wrap_layers(model.layers, None, _scheduler(4, [1, 2], 4), model.rng_tracker)
    fresh = _gpt()
    with pytest.raises(ValueError, match="model_type must be one of"):
        wrap_layers(fresh.layers, None, _scheduler(4, [1, 2], 4), fresh.rng_tracker, model_type="causal")
    hidden = torch.randn(S, B, H)
    with pytest.raises(ValueError, match="model_type='decoder' but called with no attention_mask and is_causal=False"):
        model.layers[1](hidden, is_causal=False)
    with pytest.raises(RuntimeError, match=r"layer 2 \(ordinal 1\) found no index draw"):
        model.layers[2](hidden)
    with caplog.at_level(logging.WARNING):
        wrap_layers(fresh.layers, [0, 3], _scheduler(4, [0, 3], 4), fresh.rng_tracker)
    assert "[0, 3]" in caplog.text and isinstance(fresh.layers[0], RandomLTDLayer)


@pytest.mark.gpu
def test_cuda_wrapper_matches_naive_loop_and_recomputes_exactly():
    """On CUDA (compiled gather/scatter/sample kernels when built): the wrapped layer matches the naive loop, and
    full recomputation reproduces the indices and the loss bitwise with dropout on."""
    device = torch.device("cuda")
    layers = _layer_stack(TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0)).to(device)
    controller = wrap_layers(layers, [1], _scheduler(3, [1], 6), RNGStatesTracker.build(5, ParallelState.single()))
    hidden = torch.randn(S, B, H, device=device, requires_grad=True)
    out = layers[1](hidden)
    ref = _naive(layers[1].layer, hidden, controller.last_indices[0], None, None, True)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)  # TF32-free fp32 GEMMs; batched vs per-sample order

    results = []
    for extra in ({}, RECOMPUTE["full-uniform-1"]):
        model = _gpt(hidden_dropout=0.3, attention_dropout=0.3, **extra).to(device)
        ctl = wrap_layers(model.layers, None, _scheduler(4, [1, 2], 8), model.rng_tracker)
        tokens, labels = (t.to(device) for t in _tokens())
        torch.manual_seed(123)
        loss = model(tokens, labels=labels)
        loss.mean().backward()
        results.append((loss.detach(), ctl.last_indices, model.layers[1].layer.mlp.dense_h_to_4h.weight.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][2], results[1][2], atol=1e-6, rtol=1e-5)
