"""GPTModel and the RNG tracker on CUDA: fused SDPA kernels agree with the CPU model, the tracker forks the CUDA
generator, activation recomputation replays CUDA dropout (flash / memory-efficient attention included), and compiled
layers with dropout have no graph break and match eager."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.random import MODEL_PARALLEL_RNG, RNGStatesTracker
from megatron.parallel.state import ParallelState

pytestmark = pytest.mark.gpu
VOCAB = 256


def _batch(device: str, b: int = 4, s: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (b, s + 1), generator=gen)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


def _model(**overrides) -> GPTModel:
    cfg = TransformerConfig.flavor("debug", hidden_size=128, num_attention_heads=4, **overrides)
    return GPTModel(cfg, ParallelState.single(), VOCAB, seed=3)


ARCHS = {
    "learned_absolute": {},
    "rope": dict(position_embedding_type="rope"),
    # Llama-style: RMSNorm, SwiGLU and grouped-query attention (SDPA's own GQA causally, repeated heads with a mask).
    "llama": dict(position_embedding_type="rope", normalization="RMSNorm", swiglu=True, group_query_attention=True,
                  num_query_groups=2, add_bias_linear=False),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cuda_matches_cpu(arch):
    """The fp32 model gives the same per-token losses on CUDA (SDPA's fused causal kernel) as on CPU, with the
    implicit causal mask and with an explicit boolean mask (GPT and Llama-style layers)."""
    model = _model(**ARCHS[arch], hidden_dropout=0.0, attention_dropout=0.0).eval()
    tokens, labels = _batch("cpu")
    mask = torch.ones(128, 128, dtype=torch.bool).triu(1)[None, None]
    with torch.no_grad():
        cpu = model(tokens, labels=labels)
        gpu_model = model.cuda()
        implicit = gpu_model(tokens.cuda(), labels=labels.cuda()).cpu()
        explicit = gpu_model(tokens.cuda(), attention_mask=mask.cuda(), labels=labels.cuda()).cpu()
    # TF32 is off for fp32 matmuls by default; kernels differ only in summation order (~1e-6 on losses ~5.5).
    torch.testing.assert_close(implicit, cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(explicit, cpu, atol=1e-4, rtol=1e-4)


def test_tracker_forks_the_cuda_generator():
    """Dropout on a CUDA tensor inside fork() draws from the tracked stream (not the default one, which is left
    untouched) and is replayed after set_states()."""
    tracker = RNGStatesTracker.build(5, ParallelState.single())
    ones = torch.ones(4096, device="cuda")
    torch.cuda.manual_seed(1)
    expected_default = torch.nn.functional.dropout(ones, 0.5)
    torch.cuda.manual_seed(1)
    saved = tracker.get_states()
    with tracker.fork(MODEL_PARALLEL_RNG):
        forked = torch.nn.functional.dropout(ones, 0.5)
    assert torch.equal(torch.nn.functional.dropout(ones, 0.5), expected_default)
    assert not torch.equal(forked, expected_default)
    tracker.set_states(saved)
    with tracker.fork(MODEL_PARALLEL_RNG):
        assert torch.equal(torch.nn.functional.dropout(ones, 0.5), forked)


def _loss_and_grads(model: GPTModel, seed: int = 7) -> tuple[torch.Tensor, list[torch.Tensor]]:
    tokens, labels = _batch("cuda")
    torch.cuda.manual_seed(seed)
    loss = model(tokens, labels=labels)
    loss.mean().backward()
    return loss.detach().float(), [p.grad.float() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("granularity", ["full", "selective"])
def test_recomputation_replays_cuda_dropout(dtype, granularity):
    """With dropout 0.3 on CUDA (flash attention for bf16, memory-efficient for fp32), recomputation gives the same
    loss bitwise and gradients equal up to the attention backward's atomics; a different dropout draw (control)
    changes the gradients by orders of magnitude more."""
    drop = dict(hidden_dropout=0.3, attention_dropout=0.3)
    plain = _model(**drop).to(device="cuda", dtype=dtype)
    loss, grads = _loss_and_grads(plain)
    rec_loss, rec_grads = _loss_and_grads(_model(**drop, recompute_granularity=granularity).to("cuda", dtype))
    ctl_model = _model(**drop).to(device="cuda", dtype=dtype)
    _, ctl_grads = _loss_and_grads(ctl_model, seed=8)
    assert torch.equal(loss, rec_loss)
    diff = max((a - b).abs().max().item() for a, b in zip(grads, rec_grads))
    ctl = max((a - b).abs().max().item() for a, b in zip(grads, ctl_grads))
    assert diff <= 1e-3 * ctl, (diff, ctl)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_layers_with_dropout_match_eager_on_cuda(dtype):
    """torch_compile=True with hidden and attention dropout 0.1 on CUDA compiles every layer without a graph break
    (SDPA's fused dropout draws from the model-parallel stream installed outside the graph, hidden dropout from an
    explicit state). With fallback_random Inductor calls the same random kernels on the same generators as eager,
    so compiled and eager differ only by kernel rounding: the loss within 1e-4 (fp32) / 2e-2 (bf16) relative and
    the gradients by less than 1% (fp32) / 10% (bf16) of what a different dropout draw (control) changes them by."""
    drop = dict(hidden_dropout=0.1, attention_dropout=0.1)
    loss, grads = _loss_and_grads(_model(**drop).to(device="cuda", dtype=dtype))
    _, ctl_grads = _loss_and_grads(_model(**drop).to(device="cuda", dtype=dtype), seed=8)
    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):
        c_loss, c_grads = _loss_and_grads(_model(**drop, torch_compile=True).to(device="cuda", dtype=dtype))
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    rel = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(c_loss, loss, atol=rel, rtol=rel)
    diff = max((a - b).abs().max().item() for a, b in zip(grads, c_grads))
    ctl = max((a - b).abs().max().item() for a, b in zip(grads, ctl_grads))
    assert diff <= (1e-2 if dtype == torch.float32 else 1e-1) * ctl, (diff, ctl)
