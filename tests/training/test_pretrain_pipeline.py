"""``pretrain_gpt.py --pipeline-model-parallel-size`` end to end (gloo, CPU): PP=2 (1F1B), interleaved and PP x TP
train like one process, with curriculum learning and random-LTD too; checkpoints in Megatron's per-stage layout
resume exactly; the start-up rules name the flags.

Dropout is off (pipeline stages draw dropout from per-stage streams, as Megatron, so dropout masks differ from the
unpipelined run by design). Losses: every stage runs the unpipelined model's operations on the same values; what
differs is the order of a few fp32 sums (the tied embedding's two gradient copies are summed once per step instead
of per micro-batch; the model-parallel norm all-reduce), measured at ~1e-7 relative after 6 steps; 1e-5 is far
below what a wrong layer, a lost micro-batch or another kept-token draw moves (>= 1e-3).
"""

from __future__ import annotations

import pytest

from dist_utils import run_distributed
from training.conftest import gpt_args, load_entry_script

pytestmark = [pytest.mark.distributed]

REL = 1e-5
COMMON = dict(train_iters=6, hidden_dropout=0.0, attention_dropout=0.0, eval_interval=3, eval_iters=1,
              global_batch_size=8, micro_batch_size=2, skip_test=True)


def _train_body(rank: int, world_size: int, argv: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    result = load_entry_script().main(argv)
    return {"train": result.train_losses, "valid": result.val_losses}


def _reference(argv: list[str]) -> dict:
    result = load_entry_script().main(argv)
    return {"train": result.train_losses, "valid": result.val_losses}


def _assert_same(outs: list[dict], ref: dict) -> None:
    for out in outs:
        assert list(out["train"]) == list(ref["train"])
        assert list(out["train"].values()) == pytest.approx(list(ref["train"].values()), rel=REL)
        assert list(out["valid"]) == list(ref["valid"])
        assert list(out["valid"].values()) == pytest.approx(list(ref["valid"].values()), rel=REL)


def test_pp2_trains_like_one_process(tiny_corpus):
    """PP=2 with the 1F1B schedule (4 micro-batches per step): every rank logs the training and validation losses
    of the unpipelined run over 6 steps (the logged loss comes from the last stage; the optimizer, LR schedule,
    gradient clipping over TP x PP with the tied embedding counted once, and evaluation all match)."""
    ref = _reference(gpt_args(tiny_corpus, **COMMON))
    outs = run_distributed(_train_body, 2, gpt_args(tiny_corpus, pipeline_model_parallel_size=2, **COMMON),
                           timeout_s=300)
    _assert_same(outs, ref)


def test_interleaved_pp2_trains_like_one_process(tiny_corpus):
    """Interleaved 1F1B (PP=2, one layer per virtual stage: two chunks per rank, 4 stages) trains like one
    process."""
    ref = _reference(gpt_args(tiny_corpus, **COMMON))
    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, num_layers_per_virtual_pipeline_stage=1, **COMMON)
    _assert_same(run_distributed(_train_body, 2, argv, timeout_s=300), ref)


def _ltd_cl_flags(tmp_path, ltd_layers: list[int]) -> dict:
    from training.test_data_efficiency import de_args, de_config, seqlen_metric

    config = {**de_config({"seqlen_truncate": seqlen_metric(steps=8)}, ltd_layers=ltd_layers),
              "train_batch_size": COMMON["global_batch_size"]}
    return de_args(tmp_path / "ds.json", config)


def test_pp2_with_curriculum_and_random_ltd_trains_like_one_process(tiny_corpus, tmp_path):
    """Curriculum learning (seqlen truncation: the step's length changes every iteration, so the schedule is rebuilt
    per shape on every stage) and random-LTD (layers 1 and 2: one on each stage; each stage draws the kept tokens
    from its own copy of the token-routing stream) under PP=2 give the unpipelined run's losses, and the same
    layer-token count feeds the LR schedule."""
    flags = {**COMMON, **_ltd_cl_flags(tmp_path, [1, 2])}
    ref = _reference(gpt_args(tiny_corpus, **flags))
    outs = run_distributed(_train_body, 2, gpt_args(tiny_corpus, pipeline_model_parallel_size=2, **flags),
                           timeout_s=300)
    _assert_same(outs, ref)


def _resume_body(rank: int, world_size: int, argv: list[str], ckpt: str) -> tuple[dict, dict]:
    import torch

    torch.set_num_threads(1)
    pg = load_entry_script()
    straight = pg.main(argv).train_losses
    first = pg.main([*argv, "--save", ckpt, "--exit-interval", "3"])
    second = pg.main([*argv, "--save", ckpt, "--load", ckpt])
    return straight, {**first.train_losses, **second.train_losses}


def test_resume_under_pp2_is_exact_and_uses_megatrons_layout(tiny_corpus, tmp_path):
    """A PP=2 run (with random-LTD on layer 2 only: stage 0 never draws) saved at iteration 3 and resumed continues
    bit for bit as the run straight through; the checkpoint has Megatron's mp_rank_00_000 / mp_rank_00_001
    directories, the first holding the embeddings, the second the final norm and the tied embedding's copy."""
    import torch

    flags = {**COMMON, **_ltd_cl_flags(tmp_path, [2])}
    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, **flags)
    ckpt = tmp_path / "ckpt"
    for straight, resumed in run_distributed(_resume_body, 2, argv, str(ckpt), timeout_s=400):
        assert sorted(resumed) == list(range(1, 7))
        assert resumed == straight
    assert sorted(p.name for p in (ckpt / "iter_0000006").iterdir()) == ["config.json", "mp_rank_00_000",
                                                                         "mp_rank_00_001"]
    first = torch.load(ckpt / "iter_0000006" / "mp_rank_00_000" / "model_optim_rng.pt", weights_only=True)
    last = torch.load(ckpt / "iter_0000006" / "mp_rank_00_001" / "model_optim_rng.pt", weights_only=True)
    assert first["pipeline_model_parallel_size"] == 2
    assert "position_embeddings.weight" in first["model"] and "decoder.final_layernorm.weight" not in first["model"]
    assert "decoder.final_layernorm.weight" in last["model"] and "position_embeddings.weight" not in last["model"]
    assert torch.equal(first["model"]["word_embeddings.weight"], last["model"]["word_embeddings.weight"])
    layers = {k.split(".")[2] for k in last["model"] if k.startswith("decoder.layers.")}
    assert layers == {"0", "1"}  # global layers 2 and 3, numbered locally as Megatron does


def _pp2_then_continue_body(rank: int, world_size: int, argv: list[str], ckpt: str) -> dict:
    import torch

    torch.set_num_threads(1)
    pg = load_entry_script()
    pg.main([*argv, "--save", ckpt, "--exit-interval", "3"])
    return pg.main([*argv, "--load", ckpt]).train_losses


def test_pp2_checkpoint_converted_to_pp1_continues_the_same(tiny_corpus, tmp_path):
    """tools/checkpoint/convert_pipeline.py turns a PP=2 checkpoint (iteration 3; random-LTD on layer 2, so only
    stage 1 advanced the token-routing stream) into a PP=1 one whose resumed iterations 4-6 give the losses of
    the PP=2 run continued from the same checkpoint (weights, AdamW moments, LR schedule, counters, sampler and
    kept-token draws carried over); a PP=1 run refuses the unconverted checkpoint, naming the converter."""
    flags = {**COMMON, **_ltd_cl_flags(tmp_path, [2])}
    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, **flags)
    continued = run_distributed(_pp2_then_continue_body, 2, argv, str(tmp_path / "pp2"), timeout_s=400)[0]
    assert sorted(continued) == [4, 5, 6]
    one = gpt_args(tiny_corpus, **flags)
    with pytest.raises(ValueError, match="convert_pipeline.py"):
        load_entry_script().main([*one, "--load", str(tmp_path / "pp2")])
    load_entry_script("tools/checkpoint/convert_pipeline.py").main(
        ["--load", str(tmp_path / "pp2"), "--save", str(tmp_path / "pp1"), "--target-pipeline-model-parallel-size",
         "1"])
    resumed = load_entry_script().main([*one, "--load", str(tmp_path / "pp1")]).train_losses
    assert list(resumed) == [4, 5, 6]
    assert list(resumed.values()) == pytest.approx(list(continued.values()), rel=REL)


def _resume_body_only(rank: int, world_size: int, argv: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    return load_entry_script().main(argv).train_losses


def test_pp1_checkpoint_converted_to_interleaved_pp2_continues_the_same(tiny_corpus, tmp_path):
    """The other direction: a PP=1 checkpoint (random-LTD on layer 2) re-split into interleaved PP=2 (chunks
    model0/model1 per rank, four stages, fresh dropout streams for the stages PP=1 did not have) resumes with the
    losses of the PP=1 run continued."""
    flags = {**COMMON, **_ltd_cl_flags(tmp_path, [2])}
    one = gpt_args(tiny_corpus, **flags)
    pg = load_entry_script()
    pg.main([*one, "--save", str(tmp_path / "pp1"), "--exit-interval", "3"])
    continued = pg.main([*one, "--load", str(tmp_path / "pp1")]).train_losses
    load_entry_script("tools/checkpoint/convert_pipeline.py").main(
        ["--load", str(tmp_path / "pp1"), "--save", str(tmp_path / "vpp"), "--target-pipeline-model-parallel-size",
         "2", "--target-num-layers-per-virtual-pipeline-stage", "1"])
    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, num_layers_per_virtual_pipeline_stage=1,
                    load=str(tmp_path / "vpp"), **flags)
    for resumed in run_distributed(_resume_body_only, 2, argv, timeout_s=300):
        assert list(resumed) == [4, 5, 6]
        assert list(resumed.values()) == pytest.approx(list(continued.values()), rel=REL)


def test_pp2_tp2_trains_like_one_process(tiny_corpus):
    """PP=2 x TP=2 on 4 ranks (Megatron's rank order: TP pairs inside each stage): every rank logs the unpipelined,
    unsharded run's losses (TP-sharded stages, the vocab-parallel loss on the last stage, the norm over TP x PP)."""
    ref = _reference(gpt_args(tiny_corpus, **COMMON))
    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, tensor_model_parallel_size=2, **COMMON)
    _assert_same(run_distributed(_train_body, 4, argv, timeout_s=400), ref)


def test_interleaved_checkpoint_holds_chunks_and_resumes_exactly(tiny_corpus, tmp_path):
    """Interleaved PP=2 (two one-layer chunks per rank) saves Megatron's per-chunk entries model0 / model1 (rank 0:
    global layers 0 and 2) and resumes bit for bit, chunk RNG trackers included."""
    import torch

    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, num_layers_per_virtual_pipeline_stage=1, **COMMON)
    ckpt = tmp_path / "ckpt"
    for straight, resumed in run_distributed(_resume_body, 2, argv, str(ckpt), timeout_s=400):
        assert sorted(resumed) == list(range(1, 7)) and resumed == straight
    payload = torch.load(ckpt / "iter_0000006" / "mp_rank_00_000" / "model_optim_rng.pt", weights_only=True)
    assert "model" not in payload and {"model0", "model1"} <= payload.keys()
    assert "position_embeddings.weight" in payload["model0"] and "position_embeddings.weight" not in payload["model1"]
    assert set(payload["rng_state"][0]["rng_tracker_states"]) == {"chunk0", "chunk1"}


def test_pp2_dp2_with_distributed_optimizer_trains_like_one_process(tiny_corpus):
    """PP=2 x DP=2 on 4 ranks with --use-distributed-optimizer (AdamW state sharded over each stage's DP pair, as
    the multi-node recipe runs): the unpipelined one-process losses (each DP rank trains 2 of the 4 micro-batches,
    so each pipeline runs PP=2's minimum of 2 per step)."""
    ref = _reference(gpt_args(tiny_corpus, **COMMON))
    argv = gpt_args(tiny_corpus, pipeline_model_parallel_size=2, use_distributed_optimizer=True, **COMMON)
    _assert_same(run_distributed(_train_body, 4, argv, timeout_s=400), ref)


def test_pp2_fp16_skips_and_scales_like_one_process(tiny_corpus, tmp_path):
    """fp16 under PP=2 (the loss scale multiplies each micro-batch's loss inside the schedule; an overflow on either
    stage skips the step on both, the flag reduced over TP x PP): the same steps are skipped, the loss scale backs
    off and grows at the same iterations, and the losses follow PP=1's."""
    from training.conftest import read_metrics

    flags = dict(COMMON, train_iters=8, eval_iters=0, fp16=True, initial_loss_scale=2**20, loss_scale_window=3)
    load_entry_script().main(gpt_args(tiny_corpus, metrics_file=tmp_path / "one.jsonl", **flags))
    run_distributed(_train_body, 2, gpt_args(tiny_corpus, pipeline_model_parallel_size=2,
                                             metrics_file=tmp_path / "pp2.jsonl", **flags), timeout_s=300)
    one, pp2 = ([r for r in read_metrics(tmp_path / f"{name}.jsonl") if r["kind"] == "train"]
                for name in ("one", "pp2"))
    assert [r["skipped_iterations"] for r in pp2] == [r["skipped_iterations"] for r in one]
    assert sum(r["skipped_iterations"] for r in one) >= 1
    assert [r["loss_scale"] for r in pp2] == [r["loss_scale"] for r in one]
    assert [r["loss"] for r in pp2] == pytest.approx([r["loss"] for r in one], rel=1e-3)
