"""Our GPTModel computes the same function as megatron-core 0.16's GPTModel (local layer spec) with equal weights.

megatron-core's ``megatron`` namespace collides with ours, so it runs in a subprocess with
``PYTHONPATH=.venv/mcore`` and a working directory outside the repository; weights and inputs travel as a
``torch.save`` file (loaded there with ``weights_only=True``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from mcore_utils import LAYER_RENAMES, rename, requires_mcore, run_mcore_script, to_mcore_shape
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.state import ParallelState

VOCAB, BATCH, SEQ = 128, 2, 16

pytestmark = requires_mcore

# Our parameter names -> megatron-core's (local spec).
RENAMES = [
    (r"^word_embeddings\.", "embedding.word_embeddings."),
    (r"^position_embeddings\.", "embedding.position_embeddings."),
    *LAYER_RENAMES,
]

MCORE_SCRIPT = textwrap.dedent(
    """
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    params = []
    for case in sys.argv[1:]:
        blob = torch.load(case + ".in.pt", weights_only=True)
        spec = blob["spec"]
        cfg = config_from_spec(spec)
        model = GPTModel(
            cfg, get_gpt_layer_local_spec(normalization=spec["normalization"]), vocab_size=spec["vocab"],
            max_sequence_length=spec["max_pos"], position_embedding_type=spec["pe"],
            rotary_percent=spec["rotary_percent"], rotary_base=spec["rotary_base"],
            share_embeddings_and_output_weights=not spec["untie"],
        ).eval()
        missing, unexpected = model.load_state_dict(blob["weights"], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        assert not missing and not unexpected, (missing, unexpected)
        s = blob["tokens"].size(1)
        causal = torch.ones(s, s, dtype=torch.bool).triu(1)[None, None]
        with torch.no_grad():
            logits = model(blob["tokens"], blob["position_ids"], causal)
        torch.save({"logits": logits}, case + ".out.pt")
        params.append(sum(p.numel() for p in model.parameters()))
    print(json.dumps({"params": params}))
    """
)


CASES = {
    "learned-tied-bias": {},
    "rope-untied-nobias": dict(position_embedding_type="rope", rotary_percent=0.5,
                               untie_embeddings_and_output_weights=True, add_bias_linear=False),
    # Llama-style: RMSNorm, SwiGLU (derived ffn 128), 2 key/value groups for 4 heads, rope base 500000, no biases.
    "llama-gqa": dict(normalization="RMSNorm", swiglu=True, group_query_attention=True, num_query_groups=2,
                      position_embedding_type="rope", rotary_base=500000, untie_embeddings_and_output_weights=True,
                      add_bias_linear=False, layernorm_epsilon=1e-6),
    # The same layers with linear biases (SwiGLU's stacked gate/up bias) and one key/value head (multi-query).
    "rmsnorm-swiglu-mqa-bias": dict(normalization="RMSNorm", swiglu=True, group_query_attention=True,
                                    position_embedding_type="rope"),
}


def _write_case(prefix: Path, overrides: dict) -> tuple[GPTModel, torch.Tensor, torch.Tensor]:
    cfg = TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0, **overrides)
    model = GPTModel(cfg, ParallelState.single(), VOCAB, seed=11).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # biases and norm weights off their init (0 and 1), so a misplaced one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    position_ids = torch.arange(SEQ).repeat(BATCH, 1)
    spec = dict(num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, heads=cfg.num_attention_heads,
                ffn=cfg.ffn_hidden_size, kv=cfg.kv_channels, eps=cfg.layernorm_epsilon, bias=cfg.add_bias_linear,
                vocab=VOCAB, max_pos=cfg.max_position_embeddings, pe=cfg.position_embedding_type,
                rotary_percent=cfg.rotary_percent, untie=cfg.untie_embeddings_and_output_weights,
                normalization=cfg.normalization, swiglu=cfg.swiglu, rotary_base=cfg.rotary_base,
                groups=cfg.num_query_groups)
    weights = {rename(k, RENAMES): to_mcore_shape(k, v) for k, v in model.state_dict().items()}
    torch.save({"weights": weights, "tokens": tokens, "position_ids": position_ids, "spec": spec},
               str(prefix) + ".in.pt")
    return model, tokens, position_ids


@pytest.mark.slow
def test_logits_match_megatron_core(tmp_path):
    """With our weights loaded into megatron-core's GPTModel (renamed, same layout), both produce the same logits
    and have the same parameter count, for learned/tied/bias, rope/untied/no-bias and Llama-style (RMSNorm, SwiGLU,
    grouped-query and multi-query attention, rope base) models: pre-norm layout, GELU and SwiGLU MLPs, the fused
    QKV group layout, attention scaling, RoPE and the output layer agree."""
    prefixes = [tmp_path / name for name in CASES]
    ours = [_write_case(prefix, overrides) for prefix, overrides in zip(prefixes, CASES.values())]
    stdout = run_mcore_script(MCORE_SCRIPT, list(map(str, prefixes)), tmp_path)
    their_params = json.loads(stdout.strip().splitlines()[-1])["params"]
    for prefix, (model, tokens, position_ids), n_params in zip(prefixes, ours, their_params):
        theirs = torch.load(str(prefix) + ".out.pt", weights_only=True)["logits"]
        with torch.no_grad():
            logits = model(tokens, position_ids)
        assert n_params == sum(p.numel() for p in model.parameters()), prefix.name
        # fp32; SDPA versus megatron-core's baddbmm + softmax differ only in rounding (measured max |diff| ~2e-7
        # on logits up to ~1); a real architectural difference (LN placement, GELU variant, scaling) is >1e-2.
        torch.testing.assert_close(logits, theirs, atol=1e-4, rtol=1e-4, msg=prefix.name)
