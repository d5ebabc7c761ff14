"""Wording of gaps, notes and diagnostics, kept in ``messages.json`` (data, not code)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

_MESSAGES: dict[str, dict[str, str]] = json.loads(
    resources.files("service.fhirdata").joinpath("messages.json").read_text(encoding="utf-8")
)


def message(kind: str, name: str, **values: Any) -> str:
    """The text of message ``kind.name`` (kind: gap, note, diagnostics) with ``values`` filled in."""
    return _MESSAGES[kind][name].format(**values)
