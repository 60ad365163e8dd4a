"""A form generated from a workflow's pydantic input model, with a message under each field
that does not validate."""
from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, Static, Switch


def field_kind(ann: Any) -> tuple[str, list[Any], bool]:
    """(kind, choices, optional) for a field annotation: str, int, float, bool, choice or json."""
    optional = False
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return field_kind(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) < len(typing.get_args(ann))
        if len(args) != 1:
            return "json", [], optional
        ann, origin = args[0], typing.get_origin(args[0])
    if origin is typing.Literal:
        return "choice", list(typing.get_args(ann)), optional
    if isinstance(ann, type):
        if issubclass(ann, enum.Enum):
            return "choice", [m.value for m in ann], optional
        if issubclass(ann, bool):
            return "bool", [], optional
        if issubclass(ann, int):
            return "int", [], optional
        if issubclass(ann, float):
            return "float", [], optional
        if issubclass(ann, str) or ann.__name__ in ("Path", "PosixPath"):
            return "str", [], optional
    return "json", [], optional


class InputForm(VerticalScroll):
    DEFAULT_CSS = """
    InputForm { height: auto; max-height: 100%; }
    InputForm .field { height: auto; margin-bottom: 1; }
    InputForm .field-label { color: $text; }
    InputForm .field-help { color: $text-muted; }
    InputForm .field-error { color: $error; height: auto; }
    InputForm Switch { width: auto; }
    InputForm .empty { color: $text-muted; }
    """

    def __init__(self, model: type[BaseModel] | None, values: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = model
        self.initial = values or {}
        self.kinds: dict[str, tuple[str, list[Any], bool]] = {}

    def compose(self) -> ComposeResult:
        if self.model is None or not self.model.model_fields:
            yield Static("This workflow takes no input.", classes="empty")
            return
        for name, f in self.model.model_fields.items():
            kind, choices, optional = field_kind(f.annotation)
            self.kinds[name] = (kind, choices, optional)
            default = self.initial.get(name, f.get_default(call_default_factory=True)
                                       if not f.is_required() else PydanticUndefined)
            has_default = default is not PydanticUndefined
            with Vertical(classes="field"):
                type_name = {"json": "JSON", "choice": "one of"}.get(kind, kind)
                yield Label(f"{name}{'' if has_default or optional else ' *'}  ({type_name})", classes="field-label")
                if f.description:
                    yield Label(f.description, classes="field-help")
                wid = f"field-{name}"
                if kind == "bool":
                    yield Switch(value=bool(default) if has_default else False, id=wid)
                elif kind == "choice":
                    yield Select([(str(c), c) for c in choices], id=wid, allow_blank=optional or not has_default,
                                 value=default if has_default and default in choices else Select.BLANK)
                else:
                    text = "" if not has_default or default is None else (
                        json.dumps(default) if kind == "json" else str(default))
                    yield Input(value=text, id=wid, type={"int": "integer", "float": "number"}.get(kind, "text"),
                                placeholder="JSON value" if kind == "json" else "")
                yield Static("", id=f"error-{name}", classes="field-error")

    def raw(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Values as typed, and the fields that could not even be parsed."""
        data: dict[str, Any] = {}
        errors: dict[str, str] = {}
        if self.model is None:
            return data, errors
        for name, (kind, _c, optional) in self.kinds.items():
            w = self.query_one(f"#field-{name}")
            if isinstance(w, Switch):
                data[name] = w.value
                continue
            if isinstance(w, Select):
                if w.value is not Select.BLANK:
                    data[name] = w.value
                continue
            text = w.value.strip() if isinstance(w, Input) else ""
            if text == "":
                if self.model.model_fields[name].is_required() and not optional:
                    errors[name] = "required"
                continue
            try:
                data[name] = json.loads(text) if kind in ("json", "int", "float") else w.value  # type: ignore[union-attr]
            except json.JSONDecodeError as e:
                errors[name] = f"not valid JSON: {e.msg} at column {e.colno}"
        return data, errors

    def validated(self) -> dict[str, Any] | None:
        """The input if it validates; otherwise None, with a message under each bad field."""
        data, errors = self.raw()
        if not errors and self.model is not None:
            try:
                self.model.model_validate(data)
            except ValidationError as e:
                for err in e.errors():
                    loc = str(err["loc"][0]) if err["loc"] else ""
                    msg = err["msg"] + (f" (at {'.'.join(map(str, err['loc'][1:]))})" if len(err["loc"]) > 1 else "")
                    errors.setdefault(loc if loc in self.kinds else next(iter(self.kinds), ""), msg)
        for name in self.kinds:
            self.query_one(f"#error-{name}", Static).update(("✖ " + errors[name]) if name in errors else "")
        return None if errors else data

    def error_count(self) -> int:
        return sum(1 for s in self.query(".field-error") if str(s.render()).strip())
