"""``TransformerConfig.torch_compile`` changes kernels, not the math."""

import pytest
import torch

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
