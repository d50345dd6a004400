"""``scripts/install.sh`` picks the torch build the README promises: the CPU build where there is no CUDA.

The script runs for real (bash, in a copy of the repository layout) with a stand-in ``.venv/bin/python`` that
records each command instead of installing anything, and a ``PATH`` with or without ``nvidia-smi``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/bin:/bin"

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$INSTALL_LOG"
case "$*" in
  "-c import torch") exit "${TORCH_IMPORT_RC:-1}" ;;
  *"torch==2.13.0+cpu"*) exit "${CPU_BUILD_RC:-0}" ;;
esac
exit 0
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _install(tmp_path: Path, *, cuda: bool, **env: str) -> list[str]:
    """Run install.sh in a fake checkout; returns the recorded python commands."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "install.sh", root / "scripts" / "install.sh")
    _executable(root / ".venv" / "bin" / "python", FAKE_PYTHON)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    if cuda:
        _executable(fake_bin / "nvidia-smi", "#!/bin/sh\nexit 0\n")
    log = tmp_path / "log.txt"
    proc = subprocess.run(["bash", str(root / "scripts" / "install.sh")], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{fake_bin}:{SYSTEM_PATH}", "HOME": str(tmp_path), "INSTALL_LOG": str(log),
                               **env})
    assert proc.returncode == 0, proc.stderr
    return log.read_text(encoding="utf-8").splitlines()


def _torch_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if c.startswith("-m pip install") and "torch" in c]


@pytest.fixture(autouse=True)
def _no_real_nvidia_smi():
    if shutil.which("nvidia-smi", path=SYSTEM_PATH):
        pytest.skip("this machine has nvidia-smi in /usr/bin or /bin: the no-CUDA case cannot be staged")


def test_cpu_only_machine_gets_the_cpu_build(tmp_path):
    """Without nvidia-smi the script asks for torch==2.13.0+cpu (here it comes from the configured wheelhouse);
    never PyPI's plain Linux wheel, which is the CUDA build."""
    assert _torch_installs(_install(tmp_path, cuda=False)) == ["-m pip install -q torch==2.13.0+cpu"]


def test_cpu_build_falls_back_to_pytorch_cpu_index(tmp_path):
    """Where the configured indexes have no +cpu build (plain PyPI), the script installs torch==2.13.0 from
    PyTorch's CPU index (TORCH_INDEX_URL overrides it)."""
    installs = _torch_installs(_install(tmp_path, cuda=False, CPU_BUILD_RC="1"))
    assert installs == ["-m pip install -q torch==2.13.0+cpu",
                        "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    installs = _torch_installs(_install(mirror, cuda=False, CPU_BUILD_RC="1", TORCH_INDEX_URL="https://m/cpu"))
    assert installs[-1] == "-m pip install -q torch==2.13.0 --index-url https://m/cpu"


def test_cuda_machine_and_existing_torch(tmp_path):
    """With nvidia-smi the script installs PyPI's torch==2.13.0 (the CUDA build); an importable torch is kept."""
    assert _torch_installs(_install(tmp_path / "cuda", cuda=True)) == ["-m pip install -q torch==2.13.0"]
    assert _torch_installs(_install(tmp_path / "kept", cuda=False, TORCH_IMPORT_RC="0")) == []
