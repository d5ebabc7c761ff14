"""Reading FHIR answers: Bundle entries, next links, and whose data a resource is."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from service.fhirdata.servers import ServerBase, parse_base

# Where a resource names its patient, for the types the prefetch keys read (Coverage: beneficiary).
_PATIENT_FIELDS = ("subject", "patient", "beneficiary")
_PATIENT_REF = re.compile(r"^(?:(?P<base>.+)/)?Patient/(?P<id>[^/]+)(?:/_history/[^/]+)?$")


@dataclass
class Entries:
    """The usable resources of one answer (a Bundle page or a single resource)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    outcomes: int = 0  # OperationOutcome entries skipped
    wrong_type: int = 0  # entries of another type than searched (and not _include'd)


def is_resource(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("resourceType"), str)


def entries(answer: dict[str, Any], resource_type: str) -> Entries:
    """Resources of ``resource_type`` in ``answer`` (a Bundle or one resource); included entries are kept."""
    found = Entries()
    if answer.get("resourceType") != "Bundle":
        items: list[tuple[dict[str, Any], str | None]] = [(answer, None)]
    else:
        items = []
        for entry in answer.get("entry") or []:
            if isinstance(entry, dict) and is_resource(entry.get("resource")):
                search = entry.get("search")
                mode = search.get("mode") if isinstance(search, dict) else None
                items.append((entry["resource"], mode if isinstance(mode, str) else None))
    for resource, mode in items:
        if resource["resourceType"] == "OperationOutcome":
            found.outcomes += 1
        elif resource["resourceType"] == resource_type or mode == "include":
            found.resources.append(resource)
        else:
            found.wrong_type += 1
    return found


def only_outcomes(answer: dict[str, Any]) -> bool:
    """An OperationOutcome, or a Bundle whose entries are all OperationOutcomes: an error, not data."""
    if answer.get("resourceType") == "OperationOutcome":
        return True
    if answer.get("resourceType") != "Bundle":
        return False
    # Stop at the first real resource: a data Bundle is answered in one step, not a full walk.
    outcomes = 0
    for entry in answer.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        if resource["resourceType"] != "OperationOutcome":
            return False
        outcomes += 1
    return outcomes > 0


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _names_patient(reference: str, patient_id: str, server: ServerBase | None) -> bool:
    if reference.startswith(("#", "urn:")):
        return True  # contained or bundle-local: cannot tell, and it is not another patient's id
    match = _PATIENT_REF.match(reference)
    if match is None or match.group("id") != patient_id:
        return False
    base = match.group("base")
    if base is None:
        return True
    if "://" not in base:
        return False  # e.g. "Group/1/Patient/2": not a plain patient reference
    if server is None:
        return True
    try:
        return parse_base(base) == server  # an absolute reference must point at the EHR's own server
    except ValueError:
        return False


def belongs_to(resource: dict[str, Any], patient_id: str, server: ServerBase | None) -> bool:
    """False when the resource is another patient's (Patient id, or its subject/patient reference).

    A resource that names no patient is kept: the query was for this patient, and nothing contradicts it.
    """
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient_id
    plain = "Patient/" + patient_id  # the usual form, settled without the regular expression
    for name in _PATIENT_FIELDS:
        ref = resource.get(name)
        reference = ref.get("reference") if isinstance(ref, dict) else None
        if reference == plain:
            continue
        if isinstance(reference, str) and not _names_patient(reference, patient_id, server):
            return False
    return True
