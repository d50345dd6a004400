"""Shared plumbing of the model parity tests against megatron-core 0.16: where its side install lives, the skip
marker when it is absent, our-to-its parameter names for transformer layers, and running a script in a subprocess.

megatron-core's ``megatron`` namespace collides with ours, so its code runs with ``PYTHONPATH=.venv/mcore`` and a
working directory outside the repository; tensors travel through ``torch.save`` files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["MCORE", "requires_mcore", "LAYER_RENAMES", "rename", "to_mcore_shape", "run_mcore_script"]

REPO = Path(__file__).resolve().parents[1]
MCORE = REPO / ".venv" / "mcore"

requires_mcore = pytest.mark.skipif(
    not (MCORE / "megatron" / "core").is_dir(),
    reason=f"megatron-core side install not found at {MCORE.relative_to(REPO)} (see scripts/install.sh)",
)

# Transformer-layer parameters, ours -> megatron-core's local spec. The fused QKV row layout is the same: per
# key/value group [q heads of the group; k; v] (per head [q; k; v] without grouped-query attention). Our SwiGLU
# dense_h_to_4h.weight [2, ffn, h] is its linear_fc1.weight [gate; up] = [2 * ffn, h] (see ``to_mcore_shape``).
LAYER_RENAMES = [
    (r"\.self_attention\.query_key_value\.", ".self_attention.linear_qkv."),
    (r"\.self_attention\.dense\.", ".self_attention.linear_proj."),
    (r"\.post_attention_layernorm\.", ".pre_mlp_layernorm."),
    (r"\.mlp\.dense_h_to_4h\.", ".mlp.linear_fc1."),
    (r"\.mlp\.dense_4h_to_h\.", ".mlp.linear_fc2."),
]

# Preamble of every megatron-core script: one-process gloo group, TP=1, CPU-only RNG tracker and device, and
# ``config_from_spec`` (the TransformerConfig of a case's ``spec`` dict).
MCORE_PREAMBLE = """
import json, os, sys, warnings
warnings.simplefilter("ignore")
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.random import initialize_rng_tracker

dist.init_process_group("gloo", init_method="file://" + os.path.abspath("store"), rank=0, world_size=1)
parallel_state.initialize_model_parallel(1, 1)
initialize_rng_tracker(inference_rng_tracker=True)  # CPU-only torch: no CUDA RNG states to fork
# Its attention scratch buffer and RoPE frequencies are placed on torch.cuda.current_device(); point it at the CPU.
torch.cuda.current_device = lambda: "cpu"


def config_from_spec(spec):
    # megatron-core's TransformerConfig for a case's shape: fp32, dropout off, unfused CPU code paths. Optional
    # keys: normalization (LayerNorm), swiglu (False), groups (key/value heads; None = one per head).
    from megatron.core.transformer.transformer_config import TransformerConfig

    swiglu = spec.get("swiglu", False)
    return TransformerConfig(
        num_layers=spec["num_layers"], hidden_size=spec["hidden_size"], num_attention_heads=spec["heads"],
        ffn_hidden_size=spec["ffn"], kv_channels=spec["kv"], layernorm_epsilon=spec["eps"],
        hidden_dropout=0.0, attention_dropout=0.0, add_bias_linear=spec["bias"],
        normalization=spec.get("normalization", "LayerNorm"), num_query_groups=spec.get("groups"),
        gated_linear_unit=swiglu, activation_func=torch.nn.functional.silu if swiglu else torch.nn.functional.gelu,
        use_cpu_initialization=True, perform_initialization=False, bias_activation_fusion=False,
        masked_softmax_fusion=False, persist_layer_norm=False, gradient_accumulation_fusion=False,
        apply_rope_fusion=False, bias_dropout_fusion=False,
    )
"""


def to_mcore_shape(name: str, tensor: "torch.Tensor") -> "torch.Tensor":
    """Our tensor (by our ``name``) as megatron-core stores it: SwiGLU's stacked gate/up ``dense_h_to_4h`` weight
    ``[2, ffn, h]`` and bias ``[2, ffn]`` become ``[2 * ffn, h]`` and ``[2 * ffn]``; everything else as is."""
    stacked = ".mlp.dense_h_to_4h." in name and tensor.dim() == (3 if name.endswith("weight") else 2)
    return tensor.flatten(0, 1) if stacked else tensor


def rename(name: str, renames: list[tuple[str, str]]) -> str:
    """Apply the ``(pattern, replacement)`` regex pairs to ``name`` in order."""
    for pattern, repl in renames:
        name = re.sub(pattern, repl, name)
    return name


def run_mcore_script(body: str, args: list[str], cwd: Path) -> str:
    """Run ``MCORE_PREAMBLE + body`` with megatron-core importable, in ``cwd``; returns its stdout.

    Fails the test with the tail of its stderr when the script exits non-zero.
    """
    env = {**os.environ, "PYTHONPATH": str(MCORE)}
    proc = subprocess.run([sys.executable, "-c", MCORE_PREAMBLE + body, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout
