"""What the rules loader says about a value pydantic refused: one line a person can act on
("must be a number, got string 'x'", "unknown key 'smaple' (did you mean 'sample'? ...)")."""

from __future__ import annotations

import difflib
import types
from datetime import date
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from shadowproxy.rules.model import RulesFile

__all__ = ["Loc", "message", "show"]

Loc = tuple[str | int, ...]

_MUST_BE = {
    "float_type": "a number",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "invalid_key": "a string key",
}


def message(err: Any, loc: Loc) -> str:
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "literal_error" and loc and loc[-1] == "action":
        actions = "pass, stub, replay, block" if loc[0] == "egress" else "mirror, rewrite, skip"
        return f"unknown action {value!r} (one of {actions})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '?')}, got {show(value)}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind in _MUST_BE:
        hint = ""
        if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
            hint = f' (quote it: "{value}")'
        if kind == "list_type" and isinstance(value, str):
            hint = f" (write [{value}])"
        if loc and loc[-1] == "sample" and kind == "float_type" and len(loc) == 2 and loc[0] == "defaults":
            hint = " (a fraction between 0 and 1, or {mode: budget, rps: N})"
        return f"must be {_MUST_BE[kind]}, got {show(value)}{hint}"
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _unknown_key(loc: Loc) -> str:
    key = loc[-1]
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown key {key!r}"
    allowed = list(model.model_fields)
    near = difflib.get_close_matches(str(key), allowed, n=1)
    maybe = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown key {key!r} ({maybe}allowed: {', '.join(allowed)})"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class whose mapping sits at `loc` in a rules file, if any."""
    t: Any = RulesFile
    for part in loc:
        if isinstance(t, type) and issubclass(t, BaseModel) and isinstance(part, str):
            field = t.model_fields.get(part)
            if field is None:
                return None
            t = field.annotation
        elif get_origin(t) is list and isinstance(part, int):
            t = get_args(t)[0]
        else:
            return None
        t = _unwrap(t)
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _unwrap(t: Any) -> Any:
    while True:
        origin = get_origin(t)
        if origin is Annotated:
            t = get_args(t)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(t) if a is not type(None)]
            if len(args) != 1:  # a union of one model and plain values: the model has the keys
                models = [a for a in map(_unwrap, args) if isinstance(a, type) and issubclass(a, BaseModel)]
                return models[0] if len(models) == 1 else t
            t = args[0]
        else:
            return t


def show(value: Any) -> str:
    """A value as a YAML user would name it: string 'x', number 1.5, true, null, a list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, date):
        return f"date {value.isoformat()}"
    return f"a {type(value).__name__}"
