"""What ``gather`` returns, and what it raises when there is nothing to decide on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["prefetch", "null", "fhir"]


@dataclass(frozen=True)
class PatientRecord:
    """The patient's data for one hook call, by prefetch key.

    ``resources``: key -> resources (searchset entries flattened; a single resource -> [it]; prefetch
    null -> []). ``gaps``: key -> why it could not be read, or was read only in part (a key may then be in
    both ``resources`` and ``gaps``: keep its positive evidence, but do not conclude absence from it).
    ``sources``: key -> where the data came from; a key read from nowhere has no source.
    ``notes``: what was dropped or skipped on the way (no identifiers).
    """

    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gaps: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    sources: dict[str, Source] = field(default_factory=dict)


class DataUnavailable(Exception):
    """Data the decision needs is absent and cannot be fetched (the HTTP layer answers 412).

    ``diagnostics`` is safe to return in an OperationOutcome: no token, URL or patient identifier.
    """

    def __init__(self, diagnostics: str, gaps: Mapping[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.gaps: dict[str, str] = dict(gaps or {})


class FhirServerRefused(DataUnavailable):
    """The request's fhirServer may not be contacted (not allowed, invalid, or http where https is required)."""
