"""Dataclass configs and the command line generated from them.

Every room owns one ``@dataclass(kw_only=True)`` config whose fields carry a docstring on the line after them.
This module turns such dataclasses into ``argparse`` flags (field name with dashes, so Megatron's flag spellings
survive; help text = the field docstring) and back into dataclass instances. No hand-kept ``add_argument`` list.

Field metadata understood here (``dataclasses.field(metadata=...)``):
  * ``aliases``: extra flag spellings, e.g. ``["--deepspeed_config"]``.
  * ``negative_aliases``: (booleans) extra spellings that set the field False, e.g. ``["--bert-no-binary-head"]``.
  * ``nargs``: forwarded to argparse (lists default to ``"+"``).
  * ``cli``: ``False`` keeps the field off the command line (derived fields).

Help texts end in ``(default: X)``, the dataclass default, since the parser's own defaults are ``SUPPRESS``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import json
import textwrap
import types
import typing
from typing import Any, Literal, Sequence, TypeVar, get_args, get_origin

T = TypeVar("T")

__all__ = [
    "field_docs",
    "add_dataclass_arguments",
    "dataclass_from_namespace",
    "dataclass_to_dict",
    "flag_name",
]


def flag_name(field_name: str) -> str:
    """``tensor_model_parallel_size`` -> ``--tensor-model-parallel-size``."""
    return "--" + field_name.replace("_", "-")


def field_docs(cls: type) -> dict[str, str]:
    """Return ``{field_name: docstring}`` for a dataclass whose fields are documented on the next line.

    Walks the class bodies of ``cls`` and its dataclass bases with ``ast``; a string literal statement that
    directly follows an annotated assignment is that field's documentation.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        class_def = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if class_def is None:
            continue
        body = class_def.body
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar_parser(tp: Any):
    """Return (argparse type callable, choices) for a scalar annotation."""
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
        kind = type(choices[0])
        return kind, choices
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return (lambda s, _e=tp: _e(s)), list(tp)
    if tp in (int, float, str):
        return tp, None
    if tp is Any:
        return str, None
    raise TypeError(f"unsupported config field type {tp!r}")


def _default_text(value: Any) -> str:
    """How a dataclass default reads on the command line: enums by value, lists space-separated, dicts as JSON."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return " ".join(_default_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, str) and (not value or " " in value):
        return repr(value)
    return str(value)


def _with_default(help_text: str, f: dataclasses.Field, tp: Any) -> str:
    """``help_text`` plus ``(default: X)`` for the field's dataclass default.

    The parser's own defaults are ``argparse.SUPPRESS`` (an absent flag keeps the dataclass default), so argparse
    cannot show them. Left out: required fields, ``None`` (the docstring says what absence means) and ``False`` of
    a switch (off unless given).
    """
    if get_origin(tp) is dict:
        help_text += " (JSON)"
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return help_text
    if value is None or (tp is bool and value is False):
        return help_text
    suffix = f"(default: {_default_text(value)})"
    return f"{help_text} {suffix}" if help_text else suffix


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, title: str | None = None, exclude: Sequence[str] = ()
) -> argparse._ArgumentGroup:
    """Add one flag per field of dataclass ``cls`` to ``parser`` (in an argument group named ``title``).

    Booleans defaulting to False become ``store_true`` flags; booleans defaulting to True get a ``--no-...``
    negation as well (both spellings set the same field), plus any ``negative_aliases``. Lists take ``nargs="+"``.
    """
    group = parser.add_argument_group(title or cls.__name__)
    docs = field_docs(cls)
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude or f.metadata.get("cli", True) is False:
            continue
        tp, _optional = _unwrap_optional(hints[f.name])
        flags = [flag_name(f.name), *f.metadata.get("aliases", ())]
        help_text = _with_default(docs.get(f.name, ""), f, tp).replace("%", "%%")  # argparse %-formats help
        default = argparse.SUPPRESS  # absent flags keep the dataclass default (so help shows it in the text)
        if tp is bool:
            group.add_argument(*flags, dest=f.name, action="store_true", default=default, help=help_text)
            negatives = (["--no-" + f.name.replace("_", "-")] if f.default is True else [])
            negatives += f.metadata.get("negative_aliases", [])
            if negatives:
                group.add_argument(
                    *negatives, dest=f.name, action="store_false", default=default, help=f"Disable {flag_name(f.name)}."
                )
            continue
        origin = get_origin(tp)
        if origin in (list, tuple, Sequence):
            (elem,) = get_args(tp)[:1] or (str,)
            elem, _ = _unwrap_optional(elem)
            kind, choices = _scalar_parser(elem)
            group.add_argument(
                *flags, dest=f.name, type=kind, choices=choices, nargs=f.metadata.get("nargs", "+"),
                default=default, help=help_text,
            )
            continue
        if origin is dict:
            group.add_argument(*flags, dest=f.name, type=json.loads, default=default, help=help_text)
            continue
        kind, choices = _scalar_parser(tp)
        group.add_argument(*flags, dest=f.name, type=kind, choices=choices, default=default, help=help_text)
    return group


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the parsed flags that belong to it; absent flags keep the dataclass defaults."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in vars(namespace).items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)


def dataclass_to_dict(obj: Any) -> Any:
    """JSON-ready view of a (nested) dataclass: enums become their values, tuples lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dataclass_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [dataclass_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dataclass_to_dict(v) for k, v in obj.items()}
    return obj
