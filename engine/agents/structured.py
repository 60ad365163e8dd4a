"""Structured output helpers shared by agents: schema prompt, tolerant JSON parsing, validation."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def schema_instructions(model: type[BaseModel]) -> str:
    """Text appended to a prompt when the provider cannot enforce a schema itself."""
    return ("\n\nWhen you are done, reply with a single JSON object (no prose, no code fence needed) "
            f"that validates against this JSON schema:\n{json.dumps(schema_of(model), indent=1)}")


def extract_json(text: str) -> Any:
    """Parse JSON from an answer: bare, in a ```json fence, or the outermost {...} in prose."""
    s = text.strip()
    candidates = [s] + [m.strip() for m in reversed(_FENCE.findall(s))]
    for open_, close in (("{", "}"), ("[", "]")):
        a, b = s.find(open_), s.rfind(close)
        if 0 <= a < b:
            candidates.append(s[a : b + 1])
    last: ValueError | None = None
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError as e:
            last = e
    raise ValueError(f"the answer is not valid JSON ({last})" if s else "the answer was empty; expected JSON")


def validate_answer(model: type[BaseModel], text: str) -> tuple[BaseModel | None, str]:
    """Returns (instance, "") or (None, errors as text for the model to fix)."""
    try:
        data = extract_json(text)
    except ValueError as e:
        return None, str(e)
    try:
        return model.model_validate(data), ""
    except ValidationError as e:
        lines = [f"- {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()]
        return None, "the JSON does not match the schema:\n" + "\n".join(lines)


def correction_message(errors: str, model: type[BaseModel] | None = None) -> str:
    """Feedback sent back after an invalid answer (with the schema again when `model` is given)."""
    schema = f"\nThe schema: {json.dumps(schema_of(model))}" if model is not None else ""
    return (f"Your answer could not be used: {errors}\n"
            f"Reply again with only the corrected JSON object that validates against the schema.{schema}")
