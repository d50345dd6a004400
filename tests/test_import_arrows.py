"""Architecture guard: each room of ``megatron/`` imports only the rooms below it (see STYLE, "Rooms and arrows").

Two rooms are split further. ``data`` is the datasets, ``data.tokenizers`` (below them) and ``data.preprocessing``
(the offline tools' library code, above them: no dataset imports it). ``data_efficiency`` is its ``config`` (the
JSON block, both sides' settings) below ``curriculum`` and ``routing``, which never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "megatron"

# Packages split into sub-rooms: sub-package -> room; any other module of the package is the package's base room.
SUBROOMS = {
    "data": ({"tokenizers": "data.tokenizers", "preprocessing": "data.preprocessing"}, "data"),
    "data_efficiency": ({"curriculum": "data_efficiency.curriculum", "routing": "data_efficiency.routing"},
                        "data_efficiency.config"),
}

_BASE = {"config", "logging"}
_DATA = {"data", "data.tokenizers"}  # what the rooms above data may import (data.preprocessing is tools' code)
_LOW = _BASE | _DATA | {"parallel", "kernels"}
_DE = {"data_efficiency.config", "data_efficiency.curriculum", "data_efficiency.routing"}

# room -> rooms it may import (besides itself).
ALLOWED = {
    "config": set(),
    "logging": {"config"},
    "data.tokenizers": _BASE,
    "data": _BASE | {"data.tokenizers"},
    "data.preprocessing": _BASE | _DATA,
    "parallel": _BASE,
    "kernels": _BASE,
    "data_efficiency.config": _BASE,
    "data_efficiency.curriculum": _LOW | {"data_efficiency.config"},
    "data_efficiency.routing": _LOW | {"data_efficiency.config"},
    "model": _BASE | {"parallel", "kernels"},
    "training": _LOW | _DE | {"model"},
    "tasks": _LOW | _DE | {"data.preprocessing", "model", "training"},
    "interop": _LOW | {"model", "training"},
    "reproduce": _LOW | _DE | {"data.preprocessing", "model", "training", "tasks"},
}


def _room_of_module(parts: tuple[str, ...]) -> str | None:
    """The room of module ``megatron.<parts...>`` (``parts`` without ``megatron``), or None for ``megatron``."""
    if not parts or parts[0] == "__init__":
        return None
    top = parts[0]
    if top not in SUBROOMS:
        return top
    subs, base = SUBROOMS[top]
    return subs.get(parts[1], base) if len(parts) > 1 else base


def _room_of(path: Path) -> str | None:
    return _room_of_module(path.relative_to(PKG).with_suffix("").parts)


def _imported_rooms(path: Path, source: str | None = None) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    rel_pkg = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    rooms: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_pkg[: len(rel_pkg) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            elif node.module:
                # ``from megatron.data import tokenizers`` imports the sub-room, not the datasets.
                names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = tuple(name.split("."))
            if parts[0] == "megatron":
                room = _room_of_module(parts[1:])
                if room in ALLOWED:
                    rooms.add(room)
    return rooms


def _bad_imports(path: Path, source: str | None = None) -> set[str]:
    room = _room_of(path)
    assert room in ALLOWED, f"{path}: unknown room {room!r}; add it to ALLOWED in {__file__}"
    return _imported_rooms(path, source) - ALLOWED[room] - {room}


@pytest.mark.parametrize("path", sorted(p for p in PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_room_imports_only_lower_rooms(path: Path):
    """A module may import only its own room and the rooms listed below it in ALLOWED."""
    if _room_of(path) is None:
        return
    bad = _bad_imports(path)
    assert not bad, f"{path.relative_to(PKG.parent)} (room {_room_of(path)!r}) imports higher rooms {sorted(bad)}"


@pytest.mark.parametrize("module, source, bad", [
    ("data_efficiency/curriculum/sampler.py", "from megatron.data_efficiency.routing.scheduler import X", {
        "data_efficiency.routing"}),
    ("data_efficiency/routing/random_ltd.py", "from megatron.data_efficiency.curriculum import scheduler", {
        "data_efficiency.curriculum"}),
    ("data_efficiency/config.py", "from .routing.scheduler import RandomLTDScheduler", {"data_efficiency.routing"}),
    ("data/gpt_dataset.py", "import megatron.data.preprocessing.preprocess", {"data.preprocessing"}),
    ("data/tokenizers/base.py", "from megatron.data.indexed_dataset import IndexedDataset", {"data"}),
    ("data_efficiency/curriculum/analyzer.py", "from megatron.data.preprocessing import corpora", {
        "data.preprocessing"}),
    ("data_efficiency/routing/scheduler.py", "from megatron.data_efficiency.config import RandomLTDConfig", set()),
    ("data/preprocessing/preprocess.py", "from megatron.data.tokenizers.build import build_tokenizer", set()),
])
def test_guard_sees_arrows_between_sub_rooms(module, source, bad):
    """The guard tells the sub-rooms apart: curriculum <-> routing, config -> routing (also relative), datasets ->
    preprocessing, tokenizers -> datasets and data efficiency -> preprocessing are flagged; the allowed arrows
    (routing -> its config, preprocessing -> tokenizers) are not."""
    assert _bad_imports(PKG / module, source) == bad
