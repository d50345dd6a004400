"""``TransformerConfig.torch_compile`` changes kernels, not the math, and compiles each layer without a graph break
(dropout included: the RNG tracker's fork stays outside the compiled computation)."""

import pytest
import torch
from torch._dynamo.utils import counters

from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.state import ParallelState


@pytest.mark.slow
def test_compiled_model_matches_eager_loss_and_grads():
    """Compiled layers and the compiled TP=1 loss give the eager loss and gradients (fp32; 1e-5 covers Inductor's
    reordered reductions in LayerNorm/softmax, far below a real change such as a dropped bias or residual)."""
    kwargs = dict(hidden_dropout=0.0, attention_dropout=0.0)
    eager = GPTModel(TransformerConfig.flavor("debug", **kwargs), ParallelState.single(), 512, seed=7)
    compiled = GPTModel(TransformerConfig.flavor("debug", torch_compile=True, **kwargs), ParallelState.single(), 512,
                        seed=7)
    assert compiled._compiled_loss is not None
    tokens = torch.randint(0, 512, (2, 33), generator=torch.Generator().manual_seed(0))
    losses = [m(tokens[:, :-1], labels=tokens[:, 1:]) for m in (eager, compiled)]
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    for loss in losses:
        loss.mean().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


RECOMPUTE = {
    "none": {},
    "selective": dict(recompute_granularity="selective"),
    "full-uniform-2": dict(recompute_granularity="full", recompute_num_layers=2),
}


def _train(model: GPTModel, steps: int = 2) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], dict, torch.Tensor]:
    tokens = torch.randint(0, 512, (2, 33), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    losses = []
    for _ in range(steps):
        loss = model(tokens[:, :-1], labels=tokens[:, 1:])
        loss.mean().backward()
        losses.append(loss.detach())
    grads = {n: p.grad for n, p in model.named_parameters()}
    return losses, grads, model.rng_tracker.get_states(), torch.get_rng_state()


ARCHS = {
    "learned_absolute": {},
    "rope": dict(position_embedding_type="rope"),
    # RMSNorm, SwiGLU and grouped-query attention (SDPA's own GQA, no mask) with rope and no biases.
    "llama": dict(position_embedding_type="rope", normalization="RMSNorm", swiglu=True, group_query_attention=True,
                  num_query_groups=2, add_bias_linear=False),
}


@pytest.mark.slow
@pytest.mark.parametrize("recompute", list(RECOMPUTE))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_compiled_layers_with_dropout_have_no_graph_break_and_equal_eager(recompute, arch):
    """With hidden and attention dropout at 0.1, compiling the layers (aot_eager backend: Dynamo and AOTAutograd
    trace the layer, the aten ops then run as in eager) records no graph break, and two training steps give the
    eager per-token losses, every gradient and the final RNG streams (tracker and default) bit for bit, with and
    without recomputation: the attention dropout draws from the model-parallel stream and hidden dropout from the
    replicated stream, exactly as in eager. Also for Llama-style layers."""
    def build() -> GPTModel:
        cfg = TransformerConfig.flavor("debug", hidden_dropout=0.1, attention_dropout=0.1, **ARCHS[arch],
                                       **RECOMPUTE[recompute])
        return GPTModel(cfg, ParallelState.single(), 512, seed=7).train()

    eager = _train(build())
    torch._dynamo.reset()
    counters.clear()
    compiled_model = build()
    for layer in compiled_model.layers:
        layer.compile(backend="aot_eager")
    compiled = _train(compiled_model)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1, "all layers should share one graph"
    (losses, grads, tracker_states, default_state), (ref_losses, ref_grads, ref_tracker, ref_default) = compiled, eager
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses))
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name], grad), name
    assert all(torch.equal(tracker_states[k]["cpu"], ref_tracker[k]["cpu"]) for k in ref_tracker)
    assert torch.equal(default_state, ref_default)
