"""Errors as FHIR OperationOutcome bodies.

Every non-2xx answer carries an OperationOutcome naming the field (FHIRPath-like ``expression``) and
the reason (``diagnostics``), as CDS Hooks 3.0 recommends and CRD hook-10 requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# FHIR IssueType codes used here: http://hl7.org/fhir/issue-type
IssueCode = str


@dataclass
class ApiError(Exception):
    """An error the HTTP layer turns into ``status`` + OperationOutcome."""

    status: int
    code: IssueCode
    diagnostics: str
    expression: str | None = None
    headers: dict[str, str] | None = None

    def __str__(self) -> str:  # pragma: no cover - for logs only
        return f"{self.status} {self.code}: {self.diagnostics}"

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.code, self.diagnostics, self.expression)


def operation_outcome(
    code: IssueCode,
    diagnostics: str,
    expression: str | None = None,
    severity: str = "error",
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
