"""The coverage-information invariants as code (FHIRPath in the artefacts, evaluated here by hand).

CRD 2.2.1: crd-ci-q1 … q9 (davinci-crd-2.2.1/fsh/CoverageInformation.fsh).
CRD 2.0.1: crd-ci-q1 … q5 (StructureDefinition-ext-coverage-information.json of the 2.0.1 package,
the version Inferno validates against). Each function returns a list of messages, empty = holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# coverageAssertionReasons (2.2.1), all in the CRD temp code system.
REASON_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
REASON_CODES_221 = frozenset(
    {"gold-card", "no-member-found", "no-active-coverage", "coverage-not-found", "auth-out-network", "technical"}
)

Extension = Mapping[str, Any]


def _parts(ext: Extension, url: str) -> list[Mapping[str, Any]]:
    return [p for p in ext.get("extension") or [] if isinstance(p, Mapping) and p.get("url") == url]


def _codes(ext: Extension, url: str) -> list[Any]:
    return [p.get("valueCode") for p in _parts(ext, url)]


def _exists(ext: Extension, url: str) -> bool:
    return bool(_parts(ext, url))


def _any_value(ext: Extension, urls: tuple[str, ...], value: str) -> bool:
    return any(value in _codes(ext, u) for u in urls)


_CPD = ("covered", "pa-needed", "doc-needed")


# --------------------------------------------------------------------------- CRD 2.2.1


def q1_221(ext: Extension) -> bool:
    """questionnaire => doc-needed."""
    return not _exists(ext, "questionnaire") or _exists(ext, "doc-needed")


def q2_221(ext: Extension) -> bool:
    """covered = not-covered => no pa-needed."""
    return "not-covered" not in _codes(ext, "covered") or not _exists(ext, "pa-needed")


def q3_221(ext: Extension) -> bool:
    """any of covered/pa-needed/doc-needed conditional => info-needed."""
    return not _any_value(ext, _CPD, "conditional") or _exists(ext, "info-needed")


def q4_221(ext: Extension) -> bool:
    """pa-needed satisfied/no-auth/not-covered => no doc-purpose withpa.

    The FHIRPath compares with 'noauth' (a typo in the IG); both spellings are checked.
    """
    pa = set(_codes(ext, "pa-needed"))
    if pa & {"satisfied", "no-auth", "noauth", "not-covered"} and _exists(ext, "doc-purpose"):
        return "withpa" not in _codes(ext, "doc-purpose")
    return True


def q5(ext: Extension) -> bool:
    """satisfied-pa-id present iff pa-needed = satisfied (same in 2.0.1 and 2.2.1)."""
    return ("satisfied" in _codes(ext, "pa-needed")) == _exists(ext, "satisfied-pa-id")


def q6_221(ext: Extension) -> bool:
    """info-needed = OTH => reason."""
    return "OTH" not in _codes(ext, "info-needed") or _exists(ext, "reason")


def _reason_in_value_set(concept: Any) -> bool:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    return any(
        isinstance(c, Mapping) and c.get("system") == REASON_SYSTEM and c.get("code") in REASON_CODES_221
        for c in codings or []
    )


def q7_221(ext: Extension) -> bool:
    """a coded reason outside coverageAssertionReasons => reason.text."""
    for part in _parts(ext, "reason"):
        concept = part.get("valueCodeableConcept")
        has_text = isinstance(concept, Mapping) and bool(concept.get("text"))
        if not has_text and not _reason_in_value_set(concept):
            return False
    return True


def q8_221(ext: Extension) -> bool:
    """doc-purpose (other than conditional) => reason."""
    purposes = [c for c in _codes(ext, "doc-purpose") if c != "conditional"]
    return not purposes or _exists(ext, "reason")


def q9_221(ext: Extension) -> bool:
    """any of covered/pa-needed/doc-needed indeterminate => reason."""
    return not _any_value(ext, _CPD, "indeterminate") or _exists(ext, "reason")


# --------------------------------------------------------------------------- CRD 2.0.1


def q1_201(ext: Extension) -> bool:
    """questionnaire or response => doc-needed exists and none is 'no-doc'."""
    if not (_exists(ext, "questionnaire") or _exists(ext, "response")):
        return True
    return _exists(ext, "doc-needed") and "no-doc" not in _codes(ext, "doc-needed")


def q2_201(ext: Extension) -> bool:
    """As written in 2.0.1: covered other than not-covered => pa-needed MUST exist."""
    others = [c for c in _codes(ext, "covered") if c != "not-covered"]
    return not others or _exists(ext, "pa-needed")


def q3_201(ext: Extension) -> bool:
    """info-needed => at least one of covered/pa-needed/doc-needed is conditional."""
    return not _exists(ext, "info-needed") or _any_value(ext, _CPD, "conditional")


def q4_201(ext: Extension) -> bool:
    """pa-needed satisfied => doc-purpose is not 'PA'."""
    if "satisfied" in _codes(ext, "pa-needed") and _exists(ext, "doc-purpose"):
        return "PA" not in _codes(ext, "doc-purpose")
    return True


INVARIANTS: dict[str, dict[str, Callable[[Extension], bool]]] = {
    "2.2.1": {
        "crd-ci-q1": q1_221,
        "crd-ci-q2": q2_221,
        "crd-ci-q3": q3_221,
        "crd-ci-q4": q4_221,
        "crd-ci-q5": q5,
        "crd-ci-q6": q6_221,
        "crd-ci-q7": q7_221,
        "crd-ci-q8": q8_221,
        "crd-ci-q9": q9_221,
    },
    "2.0.1": {
        "crd-ci-q1": q1_201,
        "crd-ci-q2": q2_201,
        "crd-ci-q3": q3_201,
        "crd-ci-q4": q4_201,
        "crd-ci-q5": q5,
    },
}


def check_invariants(ext: Extension, version: str) -> list[str]:
    """Messages for every invariant of CRD ``version`` ("2.0.1" or "2.2.1") that ``ext`` breaks."""
    return [
        f"CRD {version} {key} violated: {(rule.__doc__ or '').strip().splitlines()[0]}"
        for key, rule in INVARIANTS[version].items()
        if not rule(ext)
    ]
