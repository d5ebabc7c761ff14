"""The result of applying the policy to one order: plain, immutable data.

This is the contract between the policy engine (which builds Decisions), ``cards`` (which renders
them) and the decision log (which records them). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

CriterionStatus = Literal["met", "not_met", "unknown"]
Pathway = Literal["allogeneic", "autologous"]
# covered: criteria met (prior authorization still required);
# not_covered: an exclusion applies or a criterion is not met on evidence;
# documentation_needed: nothing contradicts the policy but something is unknown;
# indeterminate: data the decision needs could not be obtained (technical failure).
Outcome = Literal["covered", "not_covered", "documentation_needed", "indeterminate"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """One piece of the patient's record that a criterion used."""

    reference: str | None = None  # "Condition/123" (relative to the EHR's FHIR server)
    system: str | None = None
    code: str | None = None
    display: str | None = None
    date: str | None = None  # ISO 8601 date (or dateTime) the evidence refers to
    value: str | None = None  # human-readable value with unit, e.g. "8.2 %"
    note: str | None = None  # e.g. "supporting evidence only"


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str  # "A1" … "A9", "B1" … "B3", "X1" … "X4" (exclusions)
    title: str  # short human name from the policy file
    status: CriterionStatus
    reason: str  # one plain sentence
    evidence: tuple[Evidence, ...] = ()
    question: str | None = None  # linkId of the Questionnaire item that can settle it when unknown


@dataclass(frozen=True, slots=True)
class PathwayResult:
    pathway: Pathway
    status: CriterionStatus  # not_met if any criterion not_met, met if all met, else unknown
    criteria: tuple[CriterionResult, ...]


@dataclass(frozen=True, slots=True)
class OrderRef:
    """The draft order a decision is about."""

    reference: str  # "ServiceRequest/abc"
    resource_type: str
    id: str
    codes: tuple[tuple[str, str], ...]  # (system, code) of the order's code, normalised systems
    description: str  # human-readable name of the order (code text/display)


@dataclass(frozen=True, slots=True)
class Decision:
    policy_id: str
    policy_version: str
    policy_title: str
    policy_url: str
    plan_label: str
    questionnaire_url: str  # canonical URL (with |version) of the documentation Questionnaire
    order: OrderRef
    date_of_service: date
    outcome: Outcome
    pathway: Pathway | None  # the pathway the outcome rests on; None when no pathway applies
    pathway_basis: str  # one sentence: why this pathway (or why both were evaluated)
    pathways: tuple[PathwayResult, ...]  # every pathway evaluated (one, or both)
    exclusions: tuple[CriterionResult, ...]  # status not_met = the exclusion applies
    earliest_eligible_date: date | None = None  # from A9, when a repeat infusion is too early
    notes: tuple[str, ...] = ()  # keys of notes the cards must show, e.g. "lantidra_conflict"
    skipped_resources: tuple[str, ...] = ()  # "Observation/9: invalid (reason)" — skipped, not fatal
    data_gaps: tuple[str, ...] = ()  # what could not be read from the EHR, e.g. "Procedure: timeout"
    excluded_by: tuple[str, ...] = field(default=())  # ids of exclusions that apply

    @property
    def criteria(self) -> tuple[CriterionResult, ...]:
        """All criteria of the pathways evaluated, then the exclusions."""
        out: list[CriterionResult] = []
        for p in self.pathways:
            out.extend(p.criteria)
        out.extend(self.exclusions)
        return tuple(out)

    def unknown_criteria(self) -> tuple[CriterionResult, ...]:
        chosen = [p for p in self.pathways if self.pathway is None or p.pathway == self.pathway]
        return tuple(c for p in chosen for c in p.criteria if c.status == "unknown")

    def failing_criteria(self) -> tuple[CriterionResult, ...]:
        return tuple(c for c in self.criteria if c.status == "not_met")
