"""Suite-wide pytest hooks: skip ``gpu`` tests without CUDA, keep tokenizer caches inside the test tmp dir, run
every test with one intra-op torch thread.

Room-specific fixtures live in ``tests/<room>/conftest.py``.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True, scope="session")
def _hermetic_caches(tmp_path_factory):
    """tiktoken copies vocabulary files into a cache directory; keep it out of the user's temp dir."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken_cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(autouse=True)
def _single_thread():
    """Test tensors are tiny: intra-op threads only add OpenMP synchronization, badly so on CI's two shared cores.
    (Spawned distributed workers set their own thread count.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
