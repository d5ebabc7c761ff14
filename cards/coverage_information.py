"""The Da Vinci CRD coverage-information extension and the ``update`` system action that carries it.

One action per in-scope order: the draft order echoed unchanged (deep copy) plus the extension
(CRD resp-29, resp-37). The extension is built to validate under CRD 2.0.1 *and* 2.2.1 at once
(conformance checklist §2.5.4); only "indeterminate" differs by the caller's CRD version, because
2.0.1 has no such code.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from cards.decision_view import criteria_list, failing_criteria, open_criteria
from cards.wording import Wording
from service.decision import Decision

EXT_COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
# Reason codes (coverageAssertionReasons) live in the CRD "temp" code system in 2.2.1.
CRD_TEMP_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
PRIMARY_HOOKS = frozenset({"order-sign", "order-dispatch", "appointment-book"})
# Fixed namespace: coverage-assertion-ids must stay the same across releases for the same inputs.
_ASSERTION_NAMESPACE = uuid.UUID("6f0b7f7c-3c52-5b38-9d0e-2a6b8e1c4d17")

CrdVersion = Literal["2.0", "2.2"]


# --------------------------------------------------------------------------- versions


def normalise_crd_version(value: Any) -> CrdVersion:
    """ "2.2", "2.2.1", "2.1" -> "2.2" rules; "2.0", "2.0.1", absent or unreadable -> "2.0" rules.

    2.0 rules are the safe default: what they produce is also valid under 2.2.1.
    """
    if isinstance(value, str):
        parts = value.strip().split(".")
        try:
            major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            return "2.0"
        if major > 2 or (major == 2 and minor >= 1):
            return "2.2"
    return "2.0"


def requested_crd_version(extension: Mapping[str, Any] | None) -> CrdVersion:
    """The CRD version a request asks for (``davinci-crd.requestedVersion``; CRD dev-3), default 2.0."""
    if not isinstance(extension, Mapping):
        return "2.0"
    return normalise_crd_version(extension.get("davinci-crd.requestedVersion"))


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class CoverageProblem:
    """Why no single Coverage can be named in a coverage-information extension.

    The extension's ``coverage`` sub-extension is 1..1 and must reference the client's Coverage, so
    without exactly one usable Coverage no extension can be emitted. islet-cds then still answers
    200 with its cards (the clinician learns what the policy needs; the summary card's detail says
    the coverage was not identified) and no coverage-information system action. CRD 2.2.1 hook-13
    would have a 400 instead; a pipeline that prefers that can call ``select_coverage`` first and
    raise on a CoverageProblem (``kind`` says which).
    """

    kind: Literal["none", "several"]
    count: int  # usable (active, identifiable) Coverages found


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def is_usable_coverage(resource: Any, on: date | None = None) -> bool:
    """An identifiable Coverage that is active (status active or absent; period covering ``on``)."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Coverage":
        return False
    if not isinstance(resource.get("id"), str) or not resource["id"]:
        return False  # a Coverage we cannot reference cannot be named in the extension
    status = resource.get("status")
    if status is not None and status != "active":
        return False
    period = resource.get("period")
    if on is not None and isinstance(period, Mapping):
        start, end = _day(period.get("start")), _day(period.get("end"))
        if (start is not None and on < start) or (end is not None and on > end):
            return False
    return True


def select_coverage(coverages: Iterable[Any], on: date | None = None) -> dict[str, Any] | CoverageProblem:
    """The one Coverage the coverage information is about, or the problem that prevents naming one.

    The EHR should prefetch only the primary Coverage (CRD dev-29). When several active ones arrive,
    the one with the unique lowest ``Coverage.order`` (1 = primary) is chosen; otherwise the choice
    is ambiguous and reported.
    """
    unique: dict[str, dict[str, Any]] = {}
    for resource in coverages:
        if is_usable_coverage(resource, on):
            unique.setdefault(resource["id"], dict(resource))
    found = list(unique.values())
    if not found:
        return CoverageProblem(kind="none", count=0)
    if len(found) == 1:
        return found[0]
    ranked = sorted(
        (c for c in found if isinstance(c.get("order"), int) and not isinstance(c.get("order"), bool)),
        key=lambda c: c["order"],
    )
    if ranked and (len(ranked) == 1 or ranked[0]["order"] < ranked[1]["order"]):
        return ranked[0]
    return CoverageProblem(kind="several", count=len(found))


def coverage_reference(coverage: Mapping[str, Any]) -> str:
    return f"Coverage/{coverage['id']}"


def coverage_assertion_id(decisions: Sequence[Decision], coverage_ref: str, scope: str | None = None) -> str:
    """One deterministic id per coverage and response (uuid5).

    Stable for the same policy version(s), order set and coverage, so a repeated call (or a later hook
    on the same orders) yields the same trace id; Inferno requires a single distinct id per coverage
    within a response, so every order of the response shares it. ``scope`` (e.g. the EHR's FHIR base
    URL) keeps ids of different EHRs apart.
    """
    policies = sorted({f"{d.policy_id}|{d.policy_version}" for d in decisions})
    orders = sorted({d.order.reference for d in decisions})
    key = "\n".join([*policies, coverage_ref, *orders, scope or ""])
    return str(uuid.uuid5(_ASSERTION_NAMESPACE, key))


# --------------------------------------------------------------------------- extension


def _code(url: str, code: str) -> dict[str, Any]:
    return {"url": url, "valueCode": code}


def _reason_text(text: str) -> dict[str, Any]:
    return {"url": "reason", "valueCodeableConcept": {"text": text}}


def coverage_information_extension(
    decision: Decision,
    *,
    coverage_ref: str,
    assertion_id: str,
    assertion_date: date,
    hook: str,
    crd_version: CrdVersion,
    wording: Wording,
) -> dict[str, Any]:
    """The ``ext-coverage-information`` extension for one decision (DESIGN.md §4 table).

    Cross-version rules (checklist §2.5.4): pa-needed present iff covered != not-covered (2.0.1 q2);
    info-needed present iff something is conditional (2.2.1 q3 / 2.0.1 q3); a reason whenever
    doc-purpose is present, info-needed is OTH or anything is indeterminate (2.2.1 q6, q8, q9);
    one doc-needed at most (2.0.1 is 0..1); no 2.2-only codes except "indeterminate" for 2.2 callers.
    """
    text = wording.coverage_information
    # Secondary hooks (order-select) MUST NOT ask for clinical/admin documentation (CRD hook-19).
    may_ask_documentation = hook in PRIMARY_HOOKS
    parts: list[dict[str, Any]] = [{"url": "coverage", "valueReference": {"reference": coverage_ref}}]
    reasons: list[dict[str, Any]] = []

    if decision.outcome == "not_covered":
        parts.append(_code("covered", "not-covered"))
        failing = failing_criteria(decision)
        if failing:
            reasons.append(_reason_text(text["not_covered_reason"].format(criteria=criteria_list(failing))))
        else:  # "all other indications": no criterion failed, the order fits no covered pathway
            reasons.append(_reason_text(text["investigational_reason"]))
    elif decision.outcome == "covered":
        parts.append(_code("covered", "covered"))
        parts.append(_code("pa-needed", "auth-needed"))
        if may_ask_documentation:
            parts.append(_code("doc-needed", "clinical"))
            parts.append(_code("doc-purpose", "withpa"))
            parts.append({"url": "questionnaire", "valueCanonical": decision.questionnaire_url})
        reasons.append(_reason_text(text["covered_reason"]))
    elif decision.outcome == "documentation_needed":
        parts.append(_code("covered", "conditional"))
        parts.append(_code("pa-needed", "auth-needed"))
        if may_ask_documentation:
            parts.append(_code("doc-needed", "clinical"))
            parts.append({"url": "questionnaire", "valueCanonical": decision.questionnaire_url})
        # What is missing is clinical documentation, which none of performer/location/timeframe/
        # contract-window names: OTH, explained by the reason text (2.2.1 q6).
        parts.append(_code("info-needed", "OTH"))
        reasons.append(
            _reason_text(text["documentation_reason"].format(criteria=criteria_list(open_criteria(decision))))
        )
    else:  # indeterminate: data the decision needs could not be obtained
        what = "; ".join(decision.data_gaps)
        reason = text["technical_reason"].format(what=what) if what else text["technical_reason_unspecified"]
        # Prior authorization is required for this service whatever the patient's data say, so
        # pa-needed stays auth-needed (and keeps 2.0.1 q2 satisfied).
        if crd_version == "2.2":
            parts.append(_code("covered", "indeterminate"))
            parts.append(_code("pa-needed", "auth-needed"))
            # resp-43: indeterminate with reason code "technical" (+ text; 2.2.1 q9).
            reasons.append(
                {
                    "url": "reason",
                    "valueCodeableConcept": {
                        "coding": [{"system": CRD_TEMP_SYSTEM, "code": "technical"}],
                        "text": reason,
                    },
                }
            )
        else:
            # CRD 2.0.1 has no "indeterminate" and no "technical" reason code (its temp code system
            # lacks it, so a coding would fail validation). The closest valid statement: coverage is
            # conditional on information the payer could not get (info-needed OTH), with the
            # technical cause in reason.text, which the extensible reason binding allows.
            parts.append(_code("covered", "conditional"))
            parts.append(_code("pa-needed", "auth-needed"))
            parts.append(_code("info-needed", "OTH"))
            reasons.append(_reason_text(reason))

    if "lantidra_conflict" in decision.notes and decision.outcome != "not_covered":
        reasons.append(_reason_text(text["lantidra_conflict_reason"]))
    parts.extend(reasons)
    parts.append({"url": "date", "valueDate": assertion_date.isoformat()})
    parts.append({"url": "coverage-assertion-id", "valueString": assertion_id})
    return {"url": EXT_COVERAGE_INFORMATION, "extension": parts}


# --------------------------------------------------------------------------- system action


def _coverage_of(extension: Mapping[str, Any]) -> str | None:
    for part in extension.get("extension") or []:
        if isinstance(part, Mapping) and part.get("url") == "coverage":
            ref = part.get("valueReference")
            if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
                return str(ref["reference"])
    return None


def _without_date(extension: Mapping[str, Any]) -> list[Any]:
    return [p for p in extension.get("extension") or [] if not (isinstance(p, Mapping) and p.get("url") == "date")]


def coverage_information_action(
    draft: Mapping[str, Any], extension: Mapping[str, Any], description: str
) -> dict[str, Any] | None:
    """The ``update`` system action: the draft order unchanged plus ``extension``.

    A coverage-information extension the draft already carries for the same Coverage is replaced
    (CRD resp-37 allows modifying it); if it already says the same thing (apart from its date),
    nothing is new and no action is returned (resp-35).
    """
    resource = copy.deepcopy(dict(draft))
    coverage_ref = _coverage_of(extension)
    kept: list[Any] = []
    for existing in resource.get("extension") or []:
        ours = (
            isinstance(existing, Mapping)
            and existing.get("url") == EXT_COVERAGE_INFORMATION
            and _coverage_of(existing) == coverage_ref
        )
        if ours and _without_date(existing) == _without_date(extension):
            return None
        if not ours:
            kept.append(existing)
    kept.append(copy.deepcopy(dict(extension)))
    resource["extension"] = kept
    return {"type": "update", "description": description, "resource": resource}
