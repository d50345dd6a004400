"""``examples/pretrain_gpt_multinode.sh``: its flags (printed by ``DRY_RUN=1``) parse and pass every start-up rule
of ``pretrain_gpt.py`` for a 4-node x 8-GPU world (TP 2 x PP 2 x DP 8, plain and interleaved), with the curriculum
and random-LTD config applied and checked against the model; its launch line uses torchrun's c10d rendezvous."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from training.conftest import REPO
from megatron.training.config import PretrainConfig
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION, build_data_efficiency_extensions

SCRIPT = REPO / "examples" / "pretrain_gpt_multinode.sh"


def _flags(corpus: dict, run: Path, **env: str) -> list[str]:
    environ = {**os.environ, "DRY_RUN": "1", "NNODES": "4", "NPROC": "8", "DATA_PATH": corpus["data_path"],
               "VOCAB_FILE": corpus["vocab_file"], "MERGE_FILE": corpus["merge_file"], "RUN": str(run), **env}
    out = subprocess.run(["bash", str(SCRIPT)], env=environ, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()


@pytest.mark.parametrize("env,chunks", [({}, None), ({"VPP": "6"}, 6)])
def test_recipe_flags_pass_validation_for_four_nodes(tiny_corpus, tmp_path, env, chunks):
    """TP 2 x PP 2 on 32 ranks leaves DP 8 and 512 / (4 x 8) = 16 micro-batches per step (>= PP; a multiple of PP
    for the interleaved VPP=6 variant); the DeepSpeed config's curriculum and random-LTD pass their checks against
    the 24-layer model."""
    cfg = PretrainConfig.from_args(_flags(tiny_corpus, tmp_path / "run", **env),
                                   extra_sections=DATA_EFFICIENCY_SECTION)
    extensions = build_data_efficiency_extensions(cfg)
    cfg.validate(world_size=32)
    p = cfg.parallel
    assert (p.tensor_model_parallel_size, p.pipeline_model_parallel_size) == (2, 2)
    assert p.num_layers_per_virtual_pipeline_stage == chunks
    assert cfg.data_parallel_size == 8 and cfg.num_microbatches == 16
    assert sorted(e.name for e in extensions) == ["curriculum_learning", "random_ltd"]


def test_recipe_launches_with_c10d_rendezvous():
    """The launch line is torchrun with --nnodes, --nproc-per-node, --rdzv-backend c10d and --rdzv-endpoint
    HOST:PORT from the environment; the script is valid bash."""
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    text = SCRIPT.read_text(encoding="utf-8")
    for part in ('--nnodes "$NNODES"', '--nproc-per-node "$NPROC"', "--rdzv-backend c10d",
                 '--rdzv-endpoint "$RDZV_HOST:$RDZV_PORT"', "-m torch.distributed.run"):
        assert part in text
