"""Committed golden files for the e2e tests: rewritten with ``MEGATRON_DE_REGEN_GOLDEN=1``, else read and checked
to belong to the same recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "e2e" / "golden"


def load_golden(name: str, got: dict) -> dict:
    """The golden record ``name`` for a run that produced ``got`` (which holds its ``recipe``).

    With ``MEGATRON_DE_REGEN_GOLDEN=1`` the file is first replaced (atomically) by ``got``.
    """
    path = GOLDEN_DIR / f"{name}.json"
    if os.environ.get("MEGATRON_DE_REGEN_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(got, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    golden = json.loads(path.read_text(encoding="utf-8"))
    assert golden["recipe"] == got["recipe"], f"{path} was made for another recipe; regenerate it"
    return golden
