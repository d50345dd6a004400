"""Room 4: composes the other rooms: config, initialization, optimizer, LR schedule, checkpoints, the loop.

``from megatron.training import pretrain, PretrainConfig, TrainerExtension`` is the public face; the names are
resolved lazily so that importing a leaf module (``megatron.training.lr_schedule``) does not pull in every room.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "pretrain": "megatron.training.pretrain",
    "PretrainConfig": "megatron.training.config",
    "TrainingConfig": "megatron.training.config",
    "TrainerExtension": "megatron.training.loop",
    "TrainResult": "megatron.training.loop",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'megatron.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
