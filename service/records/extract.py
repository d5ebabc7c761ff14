"""Pure functions that pick what the decision log keeps out of a Decision and a CDS Hooks response.

No I/O, no clock: the store calls these and writes the result in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.decision import CriterionResult, Decision, Evidence

ASSOCIATED_RESOURCE = "davinci-crd.associated-resource"
COVERAGE_INFORMATION_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
COVERAGE_ASSERTION_ID = "coverage-assertion-id"
NO_ORDERS_IN_SCOPE = "no_orders_in_scope"
ERROR_OUTCOME = "error"
# Stands in for the birth date in a criterion's reason (audit records only; never shown to users).
REDACTED_DATE = "[birth date]"


def _cards(response: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    cards = (response or {}).get("cards")
    return [c for c in cards if isinstance(c, Mapping)] if isinstance(cards, list) else []


def card_uuids(response: Mapping[str, Any] | None) -> list[str]:
    """Every card uuid in the response, in response order."""
    return [c["uuid"] for c in _cards(response) if isinstance(c.get("uuid"), str)]


def associated_references(card: Mapping[str, Any]) -> list[str]:
    """The order references a card names in its ``davinci-crd.associated-resource`` extension."""
    extension = card.get("extension")
    if not isinstance(extension, Mapping):
        return []
    refs = extension.get(ASSOCIATED_RESOURCE)
    if not isinstance(refs, list):
        return []
    return [r["reference"] for r in refs if isinstance(r, Mapping) and isinstance(r.get("reference"), str)]


def card_uuids_by_order(response: Mapping[str, Any] | None, order_references: Iterable[str]) -> dict[str, list[str]]:
    """Card uuids per order reference.

    A card with an associated-resource extension belongs to the orders it names; a card without one
    concerns the whole call (CRD dev-24/25), so it belongs to every order.
    """
    orders = list(order_references)
    out: dict[str, list[str]] = {ref: [] for ref in orders}
    for card in _cards(response):
        uuid = card.get("uuid")
        if not isinstance(uuid, str):
            continue
        named = associated_references(card)
        for ref in named if named else orders:
            if ref in out and uuid not in out[ref]:
                out[ref].append(uuid)
    return out


def card_orders(response: Mapping[str, Any] | None, order_references: Iterable[str]) -> dict[str, list[str]]:
    """Order references per card uuid (the inverse of ``card_uuids_by_order``)."""
    orders = list(order_references)
    out: dict[str, list[str]] = {}
    for card in _cards(response):
        uuid = card.get("uuid")
        if isinstance(uuid, str):
            named = associated_references(card)
            out[uuid] = named if named else list(orders)
    return out


def _sub_extension_string(extension: Mapping[str, Any], url: str) -> str | None:
    for sub in extension.get("extension") or []:
        if isinstance(sub, Mapping) and sub.get("url") == url:
            value = sub.get("valueString")
            if isinstance(value, str):
                return value
    return None


def coverage_assertion_ids_by_order(response: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """coverage-assertion-id values per order reference, from the coverage-information system actions.

    An order carries one coverage-information extension per coverage, hence a list (first one first).
    """
    out: dict[str, list[str]] = {}
    actions = (response or {}).get("systemActions")
    for action in actions if isinstance(actions, list) else []:
        resource = action.get("resource") if isinstance(action, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not (isinstance(rtype, str) and isinstance(rid, str)):
            continue
        ids = out.setdefault(f"{rtype}/{rid}", [])
        for ext in resource.get("extension") or []:
            if isinstance(ext, Mapping) and ext.get("url") == COVERAGE_INFORMATION_URL:
                assertion_id = _sub_extension_string(ext, COVERAGE_ASSERTION_ID)
                if assertion_id is not None and assertion_id not in ids:
                    ids.append(assertion_id)
    return {ref: ids for ref, ids in out.items() if ids}


def _is_patient_evidence(evidence: Evidence) -> bool:
    return (evidence.reference or "").startswith("Patient/")


def demographic_dates(decision: Decision) -> set[str]:
    """Dates taken from the Patient resource itself (the birth date): identifying, so never logged."""
    return {e.date for c in decision.criteria for e in c.evidence if _is_patient_evidence(e) and e.date}


def _redact(reason: str, dates: set[str]) -> str:
    for value in sorted(dates, key=len, reverse=True):
        reason = reason.replace(value, REDACTED_DATE)
    return reason


def _criterion_row(criterion: CriterionResult, group: str, dates: set[str]) -> dict[str, Any]:
    # Evidence is kept as pointers (reference, code, date); displays, values and notes are free text
    # from the patient's record and stay out of the log, and so does the birth date.
    return {
        "id": criterion.id,
        "group": group,
        "status": criterion.status,
        "reason": _redact(criterion.reason, dates),
        "evidence": [
            {
                "reference": e.reference,
                "system": e.system,
                "code": e.code,
                "date": None if _is_patient_evidence(e) else e.date,
            }
            for e in criterion.evidence
        ],
    }


def criteria_rows(decision: Decision) -> list[dict[str, Any]]:
    """Per-criterion results of every pathway evaluated, then the exclusions (group "exclusion")."""
    dates = demographic_dates(decision)
    rows = [_criterion_row(c, p.pathway, dates) for p in decision.pathways for c in p.criteria]
    rows.extend(_criterion_row(c, "exclusion", dates) for c in decision.exclusions)
    return rows


def outcome_summary(status_code: int, decisions: Sequence[Decision]) -> str:
    """One short label for the call: its distinct outcomes, or why there are none."""
    if status_code >= 400:
        return ERROR_OUTCOME
    if not decisions:
        return NO_ORDERS_IN_SCOPE
    return ",".join(sorted({d.outcome for d in decisions}))
