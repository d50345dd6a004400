"""End-to-end ``pretrain_gpt.py`` runs on CPU: exact resume, metrics file, extension hooks and SIGTERM exit,
token-budget stop, and DP=2 / TP=2 equal to one process."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
import torch.distributed as dist
from torch import nn

from dist_utils import run_distributed
from training.conftest import gpt_args, load_entry_script, read_metrics
from megatron.training.checkpointing import read_tracker
from megatron.training.config import PretrainConfig
from megatron.training.loop import TrainerExtension
from megatron.training.pretrain import pretrain

TRAIN_KEYS = {"iteration", "loss", "lr", "grad_norm", "consumed_samples", "consumed_tokens", "step_time_s",
              "tokens_per_s"}


# Megatron-DeepSpeed's Llama-2 recipe spellings: RMSNorm, SwiGLU, 2 key/value heads for the debug flavor's 4 heads.
LLAMA_FLAGS = dict(normalization="rmsnorm", swiglu=True, num_key_value_heads=2, use_rotary_position_embeddings=True,
                   disable_bias_linear=True, untie_embeddings_and_output_weights=True)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [{}, LLAMA_FLAGS], ids=["gpt", "llama"])
def test_resume_is_exact_and_metrics_file_has_its_keys(tiny_corpus, tmp_path, arch):
    """20 iterations straight give bit-identical losses (dropout on) to 10 iterations, an --exit-interval exit with a
    checkpoint, and a --load resume for 10 more; the metrics file holds one train record per log interval with the
    required keys and one valid record (loss, ppl) per evaluation. Also for a Llama-style model (RMSNorm, SwiGLU,
    grouped-query attention, rope, no biases, untied), whose config.json records those fields."""
    pg = load_entry_script()
    straight = pg.main(gpt_args(tiny_corpus, metrics_file=tmp_path / "straight.jsonl", **arch))
    ckpt = tmp_path / "ckpt"
    first = pg.main(gpt_args(tiny_corpus, save=ckpt, exit_interval=10, **arch))
    assert first.exit_reason == "exit_interval" and read_tracker(ckpt) == 10
    second = pg.main(gpt_args(tiny_corpus, save=ckpt, load=ckpt, **arch))
    assert second.exit_reason == "finished" and read_tracker(ckpt) == 20
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    assert second.val_losses[20] == straight.val_losses[20] and second.test_loss == straight.test_loss
    assert (second.consumed_samples, second.consumed_tokens) == (straight.consumed_samples, straight.consumed_tokens)

    records = read_metrics(tmp_path / "straight.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == list(range(1, 21))
    assert all(TRAIN_KEYS <= r.keys() for r in train)
    assert train[-1]["consumed_tokens"] == 20 * 4 * 32 and train[-1]["loss"] == straight.train_losses[20]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [(r["iteration"], round(r["val_loss"], 9)) for r in valid] == [
        (i, round(v, 9)) for i, v in straight.val_losses.items()]
    assert all(r["val_ppl"] == pytest.approx(torch.tensor(r["val_loss"]).exp().item()) for r in valid)
    assert (ckpt / "iter_0000020" / "config.json").is_file()
    model = json.loads((ckpt / "iter_0000020" / "config.json").read_text())["model"]
    if arch:
        assert (model["normalization"], model["swiglu"], model["group_query_attention"], model["num_query_groups"],
                model["ffn_hidden_size"]) == ("RMSNorm", True, True, 2, 128)


ERRORS = [
    (["--num-attention-heads", "4", "--tensor-model-parallel-size", "3"], 3,
     r"num_attention_heads \(4\) must be divisible by tensor_model_parallel_size \(3\).*--num-attention-heads"),
    (["--tensor-model-parallel-size", "2"], 3, r"world size \(3\).*--tensor-model-parallel-size"),
    (["--group-query-attention", "--num-query-groups", "1", "--tensor-model-parallel-size", "2"], 2,
     r"num_query_groups \(1\) must be divisible by tensor_model_parallel_size \(2\).*--num-query-groups"),
    (["--global-batch-size", "6", "--micro-batch-size", "4"], 1, r"global_batch_size \(6\).*--global-batch-size"),
    (["--seq-length", "1024"], 1, r"seq_length \(1024\) exceeds max_position_embeddings \(512\).*--seq-length"),
    (["--train-samples", "100"], 1, r"--train-iters / --train-samples"),
]


@pytest.mark.parametrize("extra,world,message", ERRORS)
def test_config_errors_name_values_and_flags(tiny_corpus, extra, world, message):
    """Cross-room rules fail in validate() with the offending values and the flag to change."""
    cfg = PretrainConfig.from_args(gpt_args(tiny_corpus) + extra)
    with pytest.raises(ValueError, match=message):
        cfg.validate(world_size=world)


def test_missing_inputs_and_unsupported_flags(tiny_corpus):
    """No data path, missing data or tokenizer files, no lr and pipeline parallelism are refused by flag; a flag defined by two rooms is a bug."""
    with pytest.raises(ValueError, match="--data-path"):
        PretrainConfig.from_args(gpt_args(tiny_corpus, data_path=None)).validate(world_size=1)
    with pytest.raises(ValueError, match="--lr"):
        PretrainConfig.from_args(gpt_args(tiny_corpus, lr=None)).validate(world_size=1)
    with pytest.raises(ValueError, match=r"--data-path '.*nowhere'.*nowhere\.bin.*not found"):
        PretrainConfig.from_args(gpt_args(tiny_corpus, data_path=tiny_corpus["data_path"] + "_nowhere")).validate(
            world_size=1)
    with pytest.raises(ValueError, match="merge_file .* does not exist; change --merge-file"):
        PretrainConfig.from_args(gpt_args(tiny_corpus, merge_file="missing-merges.txt")).validate(world_size=1)
    with pytest.raises(ValueError, match="--pipeline-model-parallel-size"):
        PretrainConfig.from_args(gpt_args(tiny_corpus, pipeline_model_parallel_size=2)).validate(world_size=1)
    with pytest.raises(SystemExit):
        PretrainConfig.from_args(gpt_args(tiny_corpus, tokenizer_type="NoSuchTokenizer"))

    from dataclasses import dataclass

    @dataclass(kw_only=True)
    class Clash:
        seed: int = 0
        """Collides with TrainingConfig.seed."""

    with pytest.raises(TypeError, match=r"--seed is defined by both the 'training' and 'clash' configs"):
        PretrainConfig.build_parser({"clash": Clash})


def test_errors_come_before_any_process_group(tiny_corpus, monkeypatch):
    """pretrain() validates before torch.distributed is initialized, so a bad config fails on every rank alike
    instead of leaving one rank waiting in a collective."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    pg = load_entry_script()
    with pytest.raises(ValueError, match="world size"):
        pg.main(gpt_args(tiny_corpus, tensor_model_parallel_size=4))
    assert not dist.is_initialized()


class _Probe(TrainerExtension):
    """Truncates batches to 16 positions, feeds its own sampler, counts steps, and SIGTERMs itself."""

    name = "probe"

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.steps, self.pulled, self.restored, self.wrapped = kill_at, [], 0, None, False

    def build_train_sampler(self, dataset, *, consumed_samples, micro_batch_size, global_batch_size, dp_rank,
                            dp_size):
        def gen():
            i = consumed_samples
            while True:
                self.pulled += 1
                yield list(range(i, i + micro_batch_size))
                i += micro_batch_size
        return gen()

    def wrap_model(self, model: nn.Module) -> None:
        self.wrapped = isinstance(model.layers, nn.ModuleList)

    def on_step_begin(self, iteration: int) -> None:
        self.steps.append(iteration)
        if iteration == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def process_batch(self, batch, iteration):
        return {k: (v[:, :16] if isinstance(v, torch.Tensor) and v.dim() == 2 else v) for k, v in batch.items()}

    def metrics(self):
        return {"data_efficiency/difficulty": 16.0}

    def state_dict(self):
        return {"steps": len(self.steps)}

    def load_state_dict(self, state):
        self.restored = state


def _run_with(ext: _Probe, argv: list[str]):
    pg = load_entry_script()
    cfg = PretrainConfig.from_args(argv)
    return pretrain(cfg, pg.model_provider, pg.datasets_provider, pg.forward_step, collate_fn=pg.collate_fn,
                    extensions=[ext])


def test_extension_hooks_and_sigterm_checkpoint(tiny_corpus, tmp_path):
    """Extension hooks run (sampler, wrap, per-step callback, batch post-processing that changes s, metrics);
    tokens are counted from the processed batch; SIGTERM with --exit-signal-handler saves a checkpoint holding the
    extension's state and exits cleanly; the resume hands that state back."""
    ckpt = tmp_path / "ckpt"
    probe = _Probe(kill_at=3)
    argv = gpt_args(tiny_corpus, save=ckpt, exit_signal_handler=True, metrics_file=tmp_path / "m.jsonl",
                    eval_iters=0)
    result = _run_with(probe, argv)
    assert result.exit_reason == "signal" and result.iteration == 3 and read_tracker(ckpt) == 3
    assert probe.wrapped and probe.steps == [1, 2, 3] and probe.pulled == 3 * 2
    assert result.consumed_tokens == 3 * 4 * 16
    records = read_metrics(tmp_path / "m.jsonl")
    assert [r["data_efficiency/difficulty"] for r in records] == [16.0] * 3
    assert signal.getsignal(signal.SIGTERM) is not None  # our handler was removed again
    resumed = _Probe()
    result = _run_with(resumed, gpt_args(tiny_corpus, save=ckpt, load=ckpt, train_iters=5, eval_iters=0,
                                         override_opt_param_scheduler=True))
    assert resumed.restored == {"steps": 3} and resumed.steps == [4, 5] and result.consumed_tokens == 5 * 4 * 16


def test_train_tokens_budget_and_token_lr_schedule(tiny_corpus, tmp_path):
    """--train-tokens stops at the first iteration reaching the budget, and a token-based schedule sets the lr from
    the consumed tokens (warmup 256, cosine decay to 1024 tokens)."""
    pg = load_entry_script()
    argv = gpt_args(tiny_corpus, train_iters=None, train_tokens=1000, lr_warmup_iters=None, lr_warmup_tokens=256,
                    lr_decay_tokens=1024, metrics_file=tmp_path / "m.jsonl", eval_iters=0)
    result = pg.main(argv)
    assert result.iteration == 8 and result.consumed_tokens == 8 * 128
    lrs = {r["iteration"]: r["lr"] for r in read_metrics(tmp_path / "m.jsonl")}
    assert lrs[1] == pytest.approx(1e-3 * 128 / 256)  # lr for the next step, after 128 tokens
    assert lrs[4] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 256 / 768)).item()))
    assert lrs[8] == pytest.approx(1e-4)


def _two_rank_body(rank: int, world_size: int, dp_argv: list[str], tp_argv: list[str]) -> tuple[dict, dict]:
    torch.set_num_threads(1)
    pg = load_entry_script()
    return pg.main(dp_argv).train_losses, pg.main(tp_argv).train_losses


@pytest.mark.slow
@pytest.mark.distributed
def test_dp2_and_tp2_match_one_process(tiny_corpus):
    """Two data-parallel ranks (ZeRO-1 optimizer) with 2 micro-batches each train like one process accumulating 4;
    two tensor-parallel ranks train like one unsharded process (dropout off so the function is deterministic)."""
    pg = load_entry_script()
    common = dict(train_iters=6, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=0)
    dp_argv = gpt_args(tiny_corpus, global_batch_size=8, use_distributed_optimizer=True, **common)
    tp_argv = gpt_args(tiny_corpus, tensor_model_parallel_size=2, **common)
    ref_dp = pg.main(gpt_args(tiny_corpus, global_batch_size=8, **common)).train_losses
    ref_tp = pg.main(gpt_args(tiny_corpus, **common)).train_losses
    for dp_losses, tp_losses in run_distributed(_two_rank_body, 2, dp_argv, tp_argv, timeout_s=300):
        # fp32 reductions in another order (DP all-reduce, TP row-parallel sums): agreement to ~1e-6 relative.
        assert dp_losses == pytest.approx(ref_dp, rel=1e-5)
        assert tp_losses == pytest.approx(ref_tp, rel=1e-5)


def test_mixed_precision_runs(tiny_corpus, tmp_path):
    """bf16 trains close to fp32 (fp32 masters); fp16 starts from a large loss scale, skips overflowed steps
    (counted, no LR step), backs off and grows the scale, with finite losses on the applied steps."""
    pg = load_entry_script()
    common = dict(train_iters=8, eval_iters=0, hidden_dropout=0.0, attention_dropout=0.0)
    fp32 = pg.main(gpt_args(tiny_corpus, **common)).train_losses
    bf16 = pg.main(gpt_args(tiny_corpus, bf16=True, **common)).train_losses
    assert list(bf16.values()) == pytest.approx(list(fp32.values()), abs=2e-2)
    pg.main(gpt_args(tiny_corpus, fp16=True, initial_loss_scale=2**20, loss_scale_window=3,
                     metrics_file=tmp_path / "fp16.jsonl", **common))
    records = read_metrics(tmp_path / "fp16.jsonl")
    scales = [r["loss_scale"] for r in records]
    assert sum(r["skipped_iterations"] for r in records) >= 1
    assert min(scales) < 2**20 and any(b > a for a, b in zip(scales, scales[1:])), scales
    applied = [r["loss"] for r in records if r["skipped_iterations"] == 0]
    assert applied and all(torch.isfinite(torch.tensor(applied)))
