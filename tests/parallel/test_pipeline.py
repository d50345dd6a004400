"""Pipeline parallelism: the tp-dp-pp process groups, the even layer split, stage parameters equal to the full
model's, and one step's losses and gradients under GPipe, 1F1B and interleaved 1F1B (also with TP, random-LTD,
curriculum-shortened batches and attention masks) equal to the unpipelined GPT's."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from dist_utils import all_gather_cat, run_distributed
from megatron.data_efficiency.config import RandomLTDConfig, RandomLTDScheduleConfig, RandomLTDScheduleSettings
from megatron.data_efficiency.routing import RandomLTDScheduler, wrap_layers
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.pipeline_state import PipelineParallelState, num_virtual_stages, pipeline_layer_ranges
from megatron.parallel.state import ParallelState
from megatron.training.pipeline import GPTStage, allreduce_tied_embedding_grads, build_gpt_stages, wrap_stage_layers
from megatron.model.language_model import masked_token_mean
from megatron.training.pipeline_schedule import PipelineEngine

VOCAB, SEED, MBS, SEQ, M = 128, 7, 2, 16, 4
# fp32 on CPU. Losses: a stage runs exactly the unpipelined model's operations on the same values (measured:
# bitwise equal; 1e-6 leaves room for other BLAS thread counts). Gradients: the same per-micro-batch arithmetic
# except where accumulation order changes (the tied embedding's two copies are summed once at the end instead of
# per micro-batch; TP splits GEMMs): measured max |diff| 7e-8 on gradients up to 0.25. 1e-5 is >100x that, while
# a wrong layer, a missing micro-batch, an unsynced copy or another kept-token draw moves them by >= 1e-3.
ATOL = RTOL = 1e-5


def _config(**overrides) -> TransformerConfig:
    base = dict(num_layers=4, hidden_size=32, num_attention_heads=4, max_position_embeddings=64,
                hidden_dropout=0.0, attention_dropout=0.0)
    return TransformerConfig(**{**base, **overrides})


def _microbatches(m: int = M, b: int = MBS, s: int = SEQ, seed: int = 0, mask: bool = False) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(m):
        text = torch.randint(0, VOCAB, (b, s + 1), generator=gen)
        loss_mask = (torch.rand(b, s, generator=gen) > 0.2).float()
        mb = {"tokens": text[:, :-1], "labels": text[:, 1:], "loss_mask": loss_mask,
              "position_ids": torch.arange(s).expand(b, s).clone()}
        if mask:  # a document boundary in the middle: Megatron's reset attention mask
            future = torch.arange(s)[None, :] > torch.arange(s)[:, None]
            half = torch.arange(s) >= s // 2
            earlier = half[:, None] & ~half[None, :]
            mb["attention_mask"] = (future | earlier).expand(b, 1, s, s).clone()
        out.append(mb)
    return out


def _reference(cfg: TransformerConfig, batches: list[list[dict]], ltd: tuple[list[int], int] | None = None
               ) -> tuple[list[list[float]], dict[str, torch.Tensor]]:
    """The unpipelined loop: per micro-batch masked mean, backward(loss / M); returns losses per step and the grads
    of the last step."""
    model = GPTModel(cfg, ParallelState.single(), VOCAB, seed=SEED)
    controller = None
    if ltd is not None:
        controller = wrap_layers(model.layers, ltd[0], _ltd_scheduler(cfg.num_layers, *ltd), model.rng_tracker)
    losses = []
    for step, microbatches in enumerate(batches):
        model.zero_grad()
        if controller is not None:
            controller.set_step(step)
        step_losses = []
        for mb in microbatches:
            per_token = model(mb["tokens"], mb["position_ids"], mb.get("attention_mask"), labels=mb["labels"])
            loss = masked_token_mean(per_token, mb["loss_mask"])
            (loss / len(microbatches)).backward()
            step_losses.append(loss.item())
        losses.append(step_losses)
    # A random-LTD wrapper adds a ``layer.`` infix to parameter names (not to state_dict keys).
    return losses, {n.replace(".layer.", "."): p.grad.clone() for n, p in model.named_parameters()}


def _ltd_scheduler(num_layers: int, ids: list[int], kept: int) -> RandomLTDScheduler:
    return RandomLTDScheduler(RandomLTDConfig(
        enabled=True, total_layer_num=num_layers, random_ltd_layer_num=len(ids), random_ltd_layer_id=ids,
        model_mask_name="attention_mask", model_type="decoder", hidden_state_order="seq_batch_dim",
        random_ltd_schedule=RandomLTDScheduleConfig(
            min_value=kept, max_value=kept, schedule_type="fixed_linear",
            schedule_config=RandomLTDScheduleSettings(require_steps=1, seq_per_step=16)),
    ))


def _full_grads(stages: list[GPTStage], pstate: PipelineParallelState) -> dict[str, torch.Tensor]:
    """This rank's parameter gradients under global names, TP shards gathered into full tensors."""
    out = {}
    for stage in stages:
        for name, p in stage.named_parameters():
            grad = p.grad
            if getattr(p, "tensor_model_parallel", False):
                grad = all_gather_cat(grad, p.partition_dim, pstate.tp_group)
            out[stage.global_name(name.replace(".layer.", "."))] = grad.clone()
    return out


def _pipeline_body(rank: int, world_size: int, tp: int, pp: int, schedule: str, cfg: TransformerConfig,
                   batches: list[list[dict]] | dict[int, list[list[dict]]], vpp_layers: int | None = None,
                   ltd: tuple[list[int], int] | None = None) -> dict:
    """Train ``batches`` (a dict: per DP rank) through this rank's stages; gradients DP-averaged and TP-gathered."""
    pstate = PipelineParallelState.build(tp, pp)
    if isinstance(batches, dict):
        batches = batches[pstate.dp_rank]
    stages = build_gpt_stages(cfg, pstate, VOCAB, seed=SEED, num_layers_per_virtual_stage=vpp_layers)
    controllers = []
    if ltd is not None:
        controllers = wrap_stage_layers(stages, ltd[0], _ltd_scheduler(cfg.num_layers, *ltd))
    engine = PipelineEngine(stages, pstate, schedule)
    losses = []
    for step, microbatches in enumerate(batches):
        for stage in stages:
            stage.zero_grad()
        for controller in controllers:
            controller.set_step(step)
        losses.append(engine.train_step(microbatches).tolist())
    eval_losses = engine.eval_step(batches[-1]).tolist()  # forward only: must leave the gradients alone
    allreduce_tied_embedding_grads(stages, pstate)
    if pstate.dp_group is not None:  # what the optimizer does: average over the data-parallel replicas
        for stage in stages:
            for p in stage.parameters():
                dist.all_reduce(p.grad, group=pstate.dp_group)
                p.grad /= pstate.dp_size
    return {"losses": losses, "eval_losses": eval_losses, "grads": _full_grads(stages, pstate),
            "pp_rank": pstate.pp_rank, "tp_rank": pstate.tp_rank, "dp_rank": pstate.dp_rank}


def _check_against_reference(outs: list[dict], cfg: TransformerConfig, batches: list[list[dict]],
                             ltd: tuple[list[int], int] | None = None) -> None:
    ref_losses, ref_grads = _reference(cfg, batches, ltd)
    for out in outs:
        torch.testing.assert_close(torch.tensor(out["losses"]), torch.tensor(ref_losses), rtol=0, atol=1e-6,
                                   msg=lambda m: f"pp_rank {out['pp_rank']} tp_rank {out['tp_rank']}: {m}")
        if ltd is None:  # without token dropping, evaluation computes the training forward
            assert out["eval_losses"] == out["losses"][-1]
    seen = {}
    for out in outs:
        for name, grad in out["grads"].items():
            torch.testing.assert_close(grad, ref_grads[name], atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
            seen[name] = True
    assert sorted(seen) == sorted(ref_grads), "the stages together must hold every parameter of the full model"


# --------------------------------------------------------------------------------------------------------------
# Layer split and stage construction (one process)
# --------------------------------------------------------------------------------------------------------------
def test_layer_ranges_follow_megatron():
    """Layers split evenly in stage order; with virtual stages, stage k = chunk k // pp of rank k % pp."""
    assert pipeline_layer_ranges(8, 2) == [(0, 4), (4, 8)]
    assert pipeline_layer_ranges(8, 2, 2) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert pipeline_layer_ranges(8, 2, 1) == [(i, i + 1) for i in range(8)]
    assert num_virtual_stages(8, 2, None) == 1 and num_virtual_stages(12, 2, 2) == 3


@pytest.mark.parametrize(("layers", "pp", "vpp", "message"), [
    (5, 2, None, r"num_layers \(5\) must be divisible by pipeline_model_parallel_size \(2\)"),
    (8, 2, 3, r"num_layers_per_virtual_pipeline_stage \(3\) must divide the layers per pipeline stage"),
    (8, 1, 2, r"num_layers_per_virtual_pipeline_stage needs pipeline_model_parallel_size > 1"),
    (8, 0, None, r"pipeline_model_parallel_size must be >= 1"),
])
def test_bad_split_is_a_clear_error(layers, pp, vpp, message):
    """Uneven splits are refused with the field names and values (before any stage is built)."""
    with pytest.raises(ValueError, match=message):
        pipeline_layer_ranges(layers, pp, vpp)


@pytest.mark.parametrize("overrides", [
    {},
    {"untie_embeddings_and_output_weights": True},
    {"normalization": "RMSNorm", "swiglu": True, "position_embedding_type": "rope", "add_bias_linear": False,
     "group_query_attention": True, "num_query_groups": 2},
], ids=["gpt", "untied", "llama"])
def test_stages_hold_the_full_models_parameters(overrides):
    """Four virtual stages built independently hold exactly the full model's parameters (names and values, same
    seeds), each once, plus the last stage's copy of the tied word embedding; the forward of the chained stages
    equals the full model's per-token loss."""
    cfg = _config(**overrides)
    full = GPTModel(cfg, ParallelState.single(), VOCAB, seed=SEED)
    ranges = pipeline_layer_ranges(cfg.num_layers, 2, 1)
    stages = [GPTStage(cfg, ParallelState.single(), VOCAB, stage_index=k, num_stages=4, layer_range=r, seed=SEED)
              for k, r in enumerate(ranges)]
    expected = dict(full.named_parameters())
    found: dict[str, int] = {}
    for stage in stages:
        for name, p in stage.named_parameters():
            gname = stage.global_name(name)
            torch.testing.assert_close(p, expected[gname], rtol=0, atol=0)
            if getattr(p, "shared_embedding", False):
                assert stage.is_last and gname == "word_embeddings.weight"
                continue
            found[gname] = found.get(gname, 0) + 1
    assert found == dict.fromkeys(expected, 1)
    assert stages[-1].word_embeddings is not None or cfg.untie_embeddings_and_output_weights

    mb = _microbatches(1)[0]
    hidden = mb["tokens"]
    for stage in stages:
        hidden = stage(hidden, position_ids=mb["position_ids"], labels=mb["labels"])
    torch.testing.assert_close(hidden, full(mb["tokens"], mb["position_ids"], labels=mb["labels"]), rtol=0, atol=0)


def test_state_dicts_move_between_pipeline_splits():
    """The stages' state dicts under global keys merge into exactly GPTModel.state_dict(); that merged dict loads
    into another split (4 virtual stages from 2) and into a different-seed model, which then equals the source;
    a dict lacking a stage's keys is refused naming them."""
    cfg = _config()
    single = ParallelState.single()
    two = [GPTStage(cfg, single, VOCAB, stage_index=k, num_stages=2, layer_range=r, seed=SEED)
           for k, r in enumerate(pipeline_layer_ranges(4, 2))]
    merged = {}
    for stage in two:
        merged.update(stage.global_state_dict())
    full = GPTModel(cfg, single, VOCAB, seed=SEED).state_dict()
    assert sorted(merged) == sorted(full)
    for key, value in full.items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=0)
    four = [GPTStage(cfg, single, VOCAB, stage_index=k, num_stages=4, layer_range=r, seed=SEED + 1)
            for k, r in enumerate(pipeline_layer_ranges(4, 2, 1))]
    for stage in four:
        stage.load_global_state_dict(merged)
        for key, value in stage.global_state_dict().items():
            torch.testing.assert_close(value, full[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"pipeline stage 3 needs keys missing .*decoder\.layers\.3\."):
        four[3].load_global_state_dict({k: v for k, v in merged.items() if not k.startswith("decoder.layers.3.")})


def test_engine_refuses_mismatched_schedules():
    """An interleaved schedule without virtual stages (and 1F1B with them) is refused naming the flag field."""
    cfg = _config()
    single = PipelineParallelState.single()
    stage = GPTStage(cfg, single, VOCAB, stage_index=0, num_stages=1, layer_range=(0, 4))
    with pytest.raises(ValueError, match="interleaved_1f1b needs num_layers_per_virtual_pipeline_stage"):
        PipelineEngine([stage], single, "interleaved_1f1b")
    with pytest.raises(ValueError, match="must be gpipe, 1f1b or interleaved_1f1b"):
        PipelineEngine([stage], single, "zero_bubble")


def test_one_stage_engine_is_the_training_loop():
    """With PP = 1 the engine runs the loop's micro-batch loop: same losses and gradients as the full model, and a
    loss scale multiplies the gradients."""
    cfg = _config()
    batches = [_microbatches(3)]
    stages = build_gpt_stages(cfg, PipelineParallelState.single(), VOCAB, seed=SEED)
    losses = PipelineEngine(stages, PipelineParallelState.single(), "1f1b").train_step(batches[0])
    ref_losses, ref_grads = _reference(cfg, batches)
    assert losses.tolist() == pytest.approx(ref_losses[0], abs=1e-6)
    grads = {}
    for name, p in stages[0].named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], atol=ATOL, rtol=RTOL)
        grads[name], p.grad = p.grad, None
    PipelineEngine(stages, PipelineParallelState.single(), "1f1b").train_step(batches[0], loss_scale=8.0)
    for name, p in stages[0].named_parameters():  # the fp16 loss scale multiplies the backward pass
        torch.testing.assert_close(p.grad, 8.0 * grads[name], atol=8 * ATOL, rtol=RTOL)


# --------------------------------------------------------------------------------------------------------------
# Process groups
# --------------------------------------------------------------------------------------------------------------
def _groups_body(rank: int, world_size: int, tp: int, pp: int) -> dict:
    state = PipelineParallelState.build(tp, pp)
    out = {"tp_rank": state.tp_rank, "dp_rank": state.dp_rank, "pp_rank": state.pp_rank,
           "pp_ranks": state.pp_ranks, "dp_ranks": state.dp_ranks, "tp_ranks": state.tp_ranks,
           "embedding_ranks": state.embedding_ranks, "has_embedding_group": state.embedding_group is not None}
    for name, group in (("tp", state.tp_group), ("dp", state.dp_group), ("pp", state.pp_group),
                        ("embedding", state.embedding_group), ("mp", state.model_parallel_group)):
        t = torch.tensor([float(rank)])
        if group is not None:
            dist.all_reduce(t, group=group)
        out[f"{name}_sum"] = t.item()
    with pytest.raises(ValueError, match=r"divisible by tensor_model_parallel_size \(1\) x "
                                         r"pipeline_model_parallel_size \(3\)"):
        PipelineParallelState.build(1, 3)
    return out


@pytest.mark.distributed
def test_groups_follow_megatrons_rank_order():
    """World 4 = TP 1 x DP 2 x PP 2: rank = pp * 2 + dp; PP groups [0, 2], [1, 3]; DP groups inside a stage
    [0, 1], [2, 3]; embedding group = first and last stage; the groups contain exactly those ranks; a world size
    that tp x pp does not divide is a clear error."""
    outs = run_distributed(_groups_body, 4, 1, 2)
    for rank, o in enumerate(outs):
        assert (o["pp_rank"], o["dp_rank"], o["tp_rank"]) == (rank // 2, rank % 2, 0)
        assert o["pp_ranks"] == [rank % 2, rank % 2 + 2] and o["dp_ranks"] == [rank - rank % 2, rank - rank % 2 + 1]
        assert o["embedding_ranks"] == o["pp_ranks"] and o["has_embedding_group"]
        assert o["pp_sum"] == sum(o["pp_ranks"]) == o["embedding_sum"] == o["mp_sum"]
        assert o["dp_sum"] == sum(o["dp_ranks"]) and o["tp_sum"] == rank


# --------------------------------------------------------------------------------------------------------------
# Equality with the unpipelined model
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.distributed
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pp2_equals_pp1(schedule):
    """PP = 2 (two layers per stage, tied embeddings): every micro-batch's loss and every parameter's gradient,
    both tied-embedding copies included after their sync, equal the unpipelined loop's."""
    cfg, batches = _config(), [_microbatches()]
    outs = run_distributed(_pipeline_body, 2, 1, 2, schedule, cfg, batches)
    _check_against_reference(outs, cfg, batches)
    first, last = (o["grads"]["word_embeddings.weight"] for o in outs)
    torch.testing.assert_close(first, last, rtol=0, atol=0)  # the two copies receive the same summed gradient


@pytest.mark.distributed
def test_interleaved_equals_pp1():
    """Interleaved 1F1B, PP = 2 with two virtual stages per rank (one layer each), untied output layer and a
    reset attention mask passed to every stage: losses and gradients equal the unpipelined loop's."""
    cfg, batches = _config(untie_embeddings_and_output_weights=True), [_microbatches(mask=True)]
    outs = run_distributed(_pipeline_body, 2, 1, 2, "interleaved_1f1b", cfg, batches, 1)
    _check_against_reference(outs, cfg, batches)


@pytest.mark.distributed
@pytest.mark.slow
def test_pp2_tp2_equals_pp1():
    """PP = 2 x TP = 2 (4 processes, 1F1B, rope and SwiGLU): losses on every rank and TP-gathered gradients equal
    the unpipelined, unsharded model's."""
    cfg = _config(position_embedding_type="rope", swiglu=True, normalization="RMSNorm")
    batches = [_microbatches()]
    outs = run_distributed(_pipeline_body, 4, 2, 2, "1f1b", cfg, batches)
    _check_against_reference(outs, cfg, batches)


@pytest.mark.distributed
@pytest.mark.slow
def test_pp2_dp2_equals_pp1():
    """PP = 2 x DP = 2 (4 processes, 1F1B): each replica's losses are the unpipelined loop's on its micro-batches,
    and the DP-averaged gradients equal one unpipelined step over both replicas' micro-batches (the pipeline runs
    inside each data-parallel replica, over the right groups)."""
    cfg = _config()
    per_dp = {0: [_microbatches(seed=3)], 1: [_microbatches(seed=4)]}
    outs = run_distributed(_pipeline_body, 4, 1, 2, "1f1b", cfg, per_dp)
    ref_losses, ref_grads = _reference(cfg, [per_dp[0][0] + per_dp[1][0]])
    for out in outs:
        mine = ref_losses[0][out["dp_rank"] * M:(out["dp_rank"] + 1) * M]
        torch.testing.assert_close(torch.tensor(out["losses"][0]), torch.tensor(mine), rtol=0, atol=1e-6)
        for name, grad in out["grads"].items():
            torch.testing.assert_close(grad, ref_grads[name], atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.distributed
@pytest.mark.parametrize(("schedule", "vpp_layers"), [("1f1b", None), ("interleaved_1f1b", 1)])
def test_random_ltd_and_curriculum_lengths_equal_pp1(schedule, vpp_layers):
    """Random-LTD on layers 1 and 2 (in different stages, so a later stage's layer uses a draw its own stage made;
    interleaved: on rank 1's first and rank 0's second chunk, each with its own stream) with full recomputation,
    over two steps whose sequence length changes as curriculum truncation changes it: losses and gradients equal
    the unpipelined wrapped model's, so the kept tokens are the same draws."""
    cfg = _config(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    batches = [_microbatches(s=SEQ, seed=1), _microbatches(s=SEQ // 2, seed=2)]
    ltd = ([1, 2], 5)
    outs = run_distributed(_pipeline_body, 2, 1, 2, schedule, cfg, batches, vpp_layers, ltd)
    _check_against_reference(outs, cfg, batches, ltd)


def _bad_microbatches_body(rank: int, world_size: int) -> str:
    pstate = PipelineParallelState.build(1, 2)
    stages = build_gpt_stages(_config(), pstate, VOCAB, seed=SEED)
    with pytest.raises(ValueError, match=r"1f1b pipeline schedule needs at least pipeline_model_parallel_size "
                                         r"\(2\) micro-batches per step, got 1"):
        PipelineEngine(stages, pstate, "1f1b").train_step(_microbatches(1))
    with pytest.raises(ValueError, match="must have one shape"):
        PipelineEngine(stages, pstate, "gpipe").train_step(_microbatches(1) + _microbatches(1, s=8))
    il = build_gpt_stages(_config(), pstate, VOCAB, seed=SEED, num_layers_per_virtual_stage=1)
    with pytest.raises(ValueError, match=r"multiple of pipeline_model_parallel_size \(2\) micro-batches"):
        PipelineEngine(il, pstate, "interleaved_1f1b").train_step(_microbatches(3))
    return "ok"


@pytest.mark.distributed
def test_bad_microbatch_counts_are_clear_errors():
    """Too few micro-batches for 1F1B, a count interleaving cannot split, and micro-batches of different shapes
    raise ValueError naming the sizes before any communication (so no rank hangs)."""
    assert run_distributed(_bad_microbatches_body, 2) == ["ok", "ok"]
