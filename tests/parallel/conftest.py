"""Fixtures for this room's tests: run each test single-threaded (tiny tensors; CI has two shared cores)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Intra-op threading only adds OpenMP spin/sync overhead on these toy shapes, badly so on a loaded machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
