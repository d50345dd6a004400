"""Architecture guard: each room of ``megatron/`` imports only the rooms below it (see STYLE, "Rooms and arrows")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "megatron"

# room -> rooms it may import (besides itself).
ALLOWED = {
    "config": set(),
    "logging": {"config"},
    "data": {"config", "logging"},
    "parallel": {"config", "logging"},
    "kernels": {"config", "logging"},
    "data_efficiency": {"config", "logging", "data", "parallel", "kernels"},
    "model": {"config", "logging", "parallel", "kernels"},
    "training": {"config", "logging", "data", "parallel", "kernels", "data_efficiency", "model"},
    "tasks": {"config", "logging", "data", "parallel", "kernels", "data_efficiency", "model", "training"},
    "interop": {"config", "logging", "data", "parallel", "kernels", "model", "training"},
    "reproduce": {"config", "logging", "data", "parallel", "kernels", "data_efficiency", "model", "training",
                  "tasks"},
}


def _room_of(path: Path) -> str | None:
    rel = path.relative_to(PKG)
    if rel.parts[0] == "__init__.py":
        return None
    return rel.parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
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
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "megatron" and len(parts) > 1 and parts[1] in ALLOWED:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("path", sorted(p for p in PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_room_imports_only_lower_rooms(path: Path):
    """A module may import only its own room and the rooms listed below it in ALLOWED."""
    room = _room_of(path)
    if room is None:
        return
    assert room in ALLOWED, f"{path}: unknown room {room!r}; add it to ALLOWED in {__file__}"
    bad = _imported_rooms(path) - ALLOWED[room] - {room}
    assert not bad, f"{path.relative_to(PKG.parent)} (room {room!r}) imports higher rooms {sorted(bad)}"
