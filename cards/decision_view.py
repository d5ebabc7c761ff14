"""Read-only views of a Decision shared by the cards and the coverage-information builder."""

from __future__ import annotations

from service.decision import CriterionResult, Decision, PathwayResult


def chosen_pathways(decision: Decision) -> tuple[PathwayResult, ...]:
    """The pathway the outcome rests on, or every pathway evaluated when none was chosen."""
    if decision.pathway is None:
        return decision.pathways
    chosen = tuple(p for p in decision.pathways if p.pathway == decision.pathway)
    return chosen or decision.pathways


def applying_exclusions(decision: Decision) -> tuple[CriterionResult, ...]:
    # An exclusion "not_met" means the exclusion applies (service/decision.py); excluded_by names them too.
    named = set(decision.excluded_by)
    return tuple(x for x in decision.exclusions if x.status == "not_met" or x.id in named)


def failing_criteria(decision: Decision) -> tuple[CriterionResult, ...]:
    """Applying exclusions first, then the failing criteria of the pathway(s) the outcome rests on."""
    failing = list(applying_exclusions(decision))
    for pathway in chosen_pathways(decision):
        failing.extend(c for c in pathway.criteria if c.status == "not_met")
    return tuple(failing)


def open_criteria(decision: Decision) -> tuple[CriterionResult, ...]:
    """Criteria that could not be settled from the record (they ask for documentation)."""
    return decision.unknown_criteria()


def criterion_label(criterion: CriterionResult) -> str:
    return f"{criterion.id} {criterion.title}"


def criteria_list(criteria: tuple[CriterionResult, ...]) -> str:
    return "; ".join(criterion_label(c) for c in criteria)


def first_reason(decision: Decision) -> str | None:
    failing = failing_criteria(decision)
    return failing[0].reason if failing else None
