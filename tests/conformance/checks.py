"""Conformance checks for a CDS Hooks / CRD response: JSON Schemas, CRD invariants and the Inferno CRD
test kit's server-response checks (checklist §3, items 8–14), as plain functions returning messages.

``check_response(request_body, response_body)`` is the entry point (empty list = conforms).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from tests.conformance.invariants import check_invariants

SCHEMAS = Path(__file__).resolve().parent / "schemas"
EXT_COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
PRIMARY_HOOKS = frozenset({"appointment-book", "order-sign", "order-dispatch"})
ORDER_TYPES = frozenset(
    {"DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest", "VisionPrescription"}
)
# Inferno item 13: the resource type a coverage-information action must update, per hook.
HOOK_RESOURCE_TYPES: dict[str, frozenset[str]] = {
    "appointment-book": frozenset({"Appointment"}),
    "order-sign": ORDER_TYPES,
    "order-select": ORDER_TYPES,
    "order-dispatch": ORDER_TYPES,
    "encounter-start": frozenset({"Encounter"}),
    "encounter-discharge": frozenset({"Encounter"}),
}
TOPIC_SYSTEMS = {
    "2.0": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
    "2.2": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type",
}
CARD_TYPES = frozenset(
    {
        "coverage-info",
        "unsolicited-determ",
        "claim",
        "insurance",
        "limits",
        "network",
        "appropriate-use",
        "cost",
        "therapy-alternatives-opt",
        "therapy-alternatives-req",
        "clinical-reminder",
        "duplicate-therapy",
        "contraindication",
        "guideline",
        "off-guideline",
    }
)
_RELATIVE_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _where(path: Sequence[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "$"


def schema_errors(name: str, instance: Any, prefix: str = "") -> list[str]:
    out = []
    for error in sorted(validator(name).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        where = _where(list(error.absolute_path))
        out.append(f"{prefix}{where}: {_message(error)}")
    return out


def _message(error: ValidationError) -> str:
    # Cardinality rules are "contains" + min/maxContains on a url const: name the sub-extension
    # instead of printing the whole array.
    if error.validator in ("contains", "minContains", "maxContains") and isinstance(error.schema, Mapping):
        url = error.schema.get("contains", {}).get("properties", {}).get("url", {}).get("const")
        if url:
            low, high = error.schema.get("minContains", 1), error.schema.get("maxContains", "*")
            return f"sub-extension '{url}' must occur {low}..{high} times"
    return error.message


# --------------------------------------------------------------------------- request helpers


def requested_version(request_body: Mapping[str, Any]) -> str:
    """ "2.0" or "2.2" from davinci-crd.requestedVersion (absent: 2.0, what Inferno tests)."""
    extension = request_body.get("extension")
    value = extension.get("davinci-crd.requestedVersion") if isinstance(extension, Mapping) else None
    if isinstance(value, str):
        parts = value.split(".")
        if len(parts) >= 2 and parts[0] == "2" and parts[1].isdigit() and int(parts[1]) >= 1:
            return "2.2"
    return "2.0"


def _bundle_resources(bundle: Any) -> list[Mapping[str, Any]]:
    if not isinstance(bundle, Mapping):
        return []
    entries = bundle.get("entry") or []
    return [e["resource"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)]


def draft_resources(request_body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """'Type/id' -> resource for every resource the hook context carries (draftOrders, appointments)."""
    context = request_body.get("context")
    if not isinstance(context, Mapping):
        return {}
    found: dict[str, Mapping[str, Any]] = {}
    for key in ("draftOrders", "appointments"):
        for resource in _bundle_resources(context.get(key)):
            found[f"{resource.get('resourceType')}/{resource.get('id')}"] = resource
    return found


def coverage_info_disabled(request_body: Mapping[str, Any]) -> bool:
    extension = request_body.get("extension")
    config = extension.get("davinci-crd.configuration") if isinstance(extension, Mapping) else None
    return isinstance(config, Mapping) and config.get("coverage-info") is False


# --------------------------------------------------------------------------- generic rules


def empty_values(value: Any, path: str = "$", allowed: frozenset[str] = frozenset()) -> list[str]:
    """CDS Hooks 2.0: no null and no empty string/array/object anywhere (FHIR forbids them too).

    ``allowed``: paths whose array or object may be empty (their content is still checked).
    """
    if value is None:
        return [f"{path}: null value"]
    if isinstance(value, str) and value == "":
        return [f"{path}: empty string"]
    if isinstance(value, list):
        if not value:
            return [] if path in allowed else [f"{path}: empty array"]
        return [m for i, v in enumerate(value) for m in empty_values(v, f"{path}[{i}]", allowed)]
    if isinstance(value, Mapping):
        if not value:
            return [] if path in allowed else [f"{path}: empty object"]
        return [m for k, v in value.items() for m in empty_values(v, f"{path}.{k}", allowed)]
    return []


def fhir_errors(resource: Any, where: str) -> list[str]:
    """Inferno item 8: a create/update resource must be parseable FHIR (here: fhir.resources R4B)."""
    from fhir.resources.R4B import get_fhir_model_class

    if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
        return [f"{where}: resource has no resourceType"]
    try:
        model = get_fhir_model_class(resource["resourceType"])
    except KeyError:
        return [f"{where}: unknown FHIR resource type {resource['resourceType']!r}"]
    try:
        model.model_validate(copy.deepcopy(dict(resource)))
    except Exception as exc:  # pydantic ValidationError and friends: report, don't raise
        first = str(exc).splitlines()
        return [f"{where}: not valid FHIR {resource['resourceType']}: {' '.join(first[:3])}"]
    return []


def check_update_echo(draft: Mapping[str, Any], updated: Mapping[str, Any]) -> list[str]:
    """CRD resp-37: the updated resource differs from the draft only by coverage-information extensions."""

    def strip(resource: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(resource))
        kept = [
            e
            for e in out.get("extension") or []
            if not (isinstance(e, Mapping) and e.get("url") == EXT_COVERAGE_INFORMATION)
        ]
        out.pop("extension", None)
        if kept:
            out["extension"] = kept
        return out

    before, after = strip(draft), strip(updated)
    if before == after:
        return []
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return [
        f"update of {draft.get('resourceType')}/{draft.get('id')} changes more than coverage information: {changed}"
    ]


def check_coverage_information(extension: Mapping[str, Any], version: str, where: str = "") -> list[str]:
    """Schema (urls, cardinalities, bindings) and invariants of CRD ``version`` ("2.0.1" / "2.2.1")."""
    prefix = f"{where}: CRD {version} " if where else f"CRD {version} "
    errors = schema_errors(f"coverage-information-{version}", extension, prefix)
    errors += [f"{where}: {m}" if where else m for m in check_invariants(extension, version)]
    return errors


def card_kinds(card: Mapping[str, Any]) -> set[str]:
    """How Inferno classifies a card (cards_identification.rb, checklist §3.5)."""
    kinds: set[str] = set()
    links = card.get("links") or []
    suggestions = card.get("suggestions") or []
    if links and all(isinstance(link, Mapping) and link.get("type") == "absolute" for link in links):
        kinds.add("external-reference")
    if links and all(isinstance(link, Mapping) and link.get("type") == "smart" for link in links):
        kinds.add("launch-smart")
    if not links and not suggestions:
        kinds.add("instructions")
    return kinds


def demonstrated_card_kinds(responses: Sequence[Mapping[str, Any]]) -> set[str]:
    """Inferno items 19–21 look across every hook's response: which card kinds (and whether a
    coverage-information action) were shown at least once. Check the result contains
    {"external-reference", "instructions", "coverage-information"}."""
    kinds: set[str] = set()
    for response in responses:
        for card in response.get("cards") or []:
            if isinstance(card, Mapping):
                kinds |= card_kinds(card)
        for action in response.get("systemActions") or []:
            resource = action.get("resource") if isinstance(action, Mapping) else None
            if isinstance(resource, Mapping) and _coverage_extensions(resource):
                kinds.add("coverage-information")
    return kinds


# --------------------------------------------------------------------------- the response


def _coverage_extensions(resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        e
        for e in resource.get("extension") or []
        if isinstance(e, Mapping) and e.get("url") == EXT_COVERAGE_INFORMATION
    ]


def _sub_value(extension: Mapping[str, Any], url: str, key: str) -> Any:
    for part in extension.get("extension") or []:
        if isinstance(part, Mapping) and part.get("url") == url:
            return part.get(key)
    return None


def _check_cards(cards: Sequence[Any], version: str) -> list[str]:
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, card in enumerate(cards):
        if not isinstance(card, Mapping):
            continue  # the schema reports it
        where = f"cards[{i}]"
        uuid = card.get("uuid")
        if isinstance(uuid, str):
            if uuid in seen:
                errors.append(f"{where}.uuid: duplicates cards[{seen[uuid]}].uuid")
            seen[uuid] = i
        topic = (card.get("source") or {}).get("topic") if isinstance(card.get("source"), Mapping) else None
        if isinstance(topic, Mapping):
            if topic.get("code") not in CARD_TYPES:
                errors.append(f"{where}.source.topic.code: {topic.get('code')!r} is not a CRD card type")
            if topic.get("system") != TOPIC_SYSTEMS[version]:
                errors.append(
                    f"{where}.source.topic.system: CRD {version} callers expect {TOPIC_SYSTEMS[version]}, "
                    f"got {topic.get('system')!r}"
                )
        # CRD Instructions profile: a card without links and suggestions must carry detail.
        if "instructions" in card_kinds(card) and not card.get("detail"):
            errors.append(f"{where}: a card without links or suggestions (Instructions) must have detail")
        links = card.get("links") or []
        if (
            links
            and card.get("suggestions")
            and all(isinstance(x, Mapping) and x.get("type") == "absolute" for x in links)
        ):
            errors.append(f"{where}: an External Reference card must not carry suggestions")
        for j, link in enumerate(links):
            if isinstance(link, Mapping) and link.get("type") == "smart" and "appContext" in link:
                try:
                    json.loads(link["appContext"])
                except (TypeError, ValueError):
                    errors.append(f"{where}.links[{j}].appContext: not a JSON string")
    return errors


def _check_actions(
    request_body: Mapping[str, Any], actions: Sequence[Any], version: str, require_coverage_information: bool
) -> list[str]:
    hook = request_body.get("hook")
    drafts = draft_resources(request_body)
    errors: list[str] = []
    assertion_ids: dict[str, set[str]] = {}
    satisfied_ids: dict[str, set[str]] = {}
    matching = 0
    for i, action in enumerate(actions):
        if not isinstance(action, Mapping):
            continue
        where = f"systemActions[{i}]"
        kind = action.get("type")
        resource = action.get("resource")
        if kind in ("create", "update"):
            errors += fhir_errors(resource, f"{where}.resource")
        if kind == "delete" and not (
            isinstance(action.get("resourceId"), str) and _RELATIVE_REFERENCE.match(action["resourceId"])
        ):
            errors.append(f"{where}.resourceId: a delete needs a relative reference")
        if not isinstance(resource, Mapping):
            continue
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        if kind == "update" and hook in ("order-sign", "order-select", "appointment-book"):
            draft = drafts.get(ref)
            if draft is None:
                errors.append(f"{where}: update targets {ref}, which is not in the request's context")
            else:
                errors += [f"{where}: {m}" for m in check_update_echo(draft, resource)]
        extensions = _coverage_extensions(resource)
        if not extensions:
            continue
        # Coverage information (Inferno item 14, CRDHooksResponse-coverageInformation).
        if kind != "update":
            errors.append(f"{where}: a coverage-information action must be an update, not {kind!r}")
        if "resourceId" in action:
            errors.append(f"{where}: a coverage-information action has no resourceId (0..0)")
        if resource.get("resourceType") in HOOK_RESOURCE_TYPES.get(str(hook), frozenset()):
            matching += 1
        for k, ext in enumerate(extensions):
            ext_where = f"{where}.resource.extension(coverage-information)[{k}]"
            errors += check_coverage_information(ext, "2.0.1" if version == "2.0" else "2.2.1", ext_where)
            # Cross-version safety (§2.5.4): also valid under the other version, except that a 2.2
            # "indeterminate" cannot be expressed in 2.0.1.
            indeterminate = any(
                _sub_value(ext, u, "valueCode") == "indeterminate" for u in ("covered", "pa-needed", "doc-needed")
            )
            if version == "2.0":
                errors += check_coverage_information(ext, "2.2.1", ext_where)
            elif not indeterminate:
                errors += check_coverage_information(ext, "2.0.1", ext_where)
            if hook not in PRIMARY_HOOKS:
                docs = {p.get("valueCode") for p in ext.get("extension") or [] if p.get("url") == "doc-needed"}
                if docs & {"clinical", "admin"}:
                    errors.append(
                        f"{ext_where}: secondary hook {hook} must not say doc-needed clinical/admin (hook-19)"
                    )
            coverage = _sub_value(ext, "coverage", "valueReference")
            coverage_ref = coverage.get("reference") if isinstance(coverage, Mapping) else None
            key = str(coverage_ref)
            assertion = _sub_value(ext, "coverage-assertion-id", "valueString")
            if isinstance(assertion, str):
                assertion_ids.setdefault(key, set()).add(assertion)
            satisfied = _sub_value(ext, "satisfied-pa-id", "valueString")
            if isinstance(satisfied, str):
                satisfied_ids.setdefault(key, set()).add(satisfied)
    # Inferno item 14: per coverage one distinct coverage-assertion-id, at most one satisfied-pa-id;
    # across coverages the ids are distinct.
    owners: dict[str, str] = {}
    for coverage_ref, ids in sorted(assertion_ids.items()):
        if len(ids) != 1:
            errors.append(f"coverage {coverage_ref}: {len(ids)} distinct coverage-assertion-ids, expected 1")
        for value in ids:
            if value in owners and owners[value] != coverage_ref:
                errors.append(f"coverage-assertion-id {value} is shared by {owners[value]} and {coverage_ref}")
            owners[value] = coverage_ref
    for coverage_ref, ids in sorted(satisfied_ids.items()):
        if len(ids) > 1:
            errors.append(f"coverage {coverage_ref}: {len(ids)} distinct satisfied-pa-ids, at most 1 allowed")
    # Inferno item 13: primary hooks must carry a coverage-information update of the hook's resource type.
    if require_coverage_information and not coverage_info_disabled(request_body) and matching == 0:
        expected = sorted(HOOK_RESOURCE_TYPES[str(hook)])
        errors.append(f"{hook}: no coverage-information system action updating one of {expected} (Inferno item 13)")
    return errors


def check_response(
    request_body: Mapping[str, Any], response_body: Any, *, require_coverage_information: bool | None = None
) -> list[str]:
    """Every rule a CDS Hooks 2.0 / CRD response to ``request_body`` breaks; empty list = conforms.

    ``require_coverage_information``: None (default) follows Inferno item 13 (a coverage-information
    action is required on primary hooks); pass False for a request with no order in the policy's
    scope, where there is nothing to assert.
    """
    if not isinstance(response_body, Mapping):
        return ["response: not a JSON object"]
    hook = request_body.get("hook")
    version = requested_version(request_body)
    errors = schema_errors("cds-hooks-response", response_body)
    # Inferno item 8 wants systemActions on primary hooks even when there is nothing to say, so an
    # empty systemActions (and the empty cards list CDS Hooks allows) is not an "empty value" there.
    allowed = {"$.cards"} | ({"$.systemActions"} if hook in PRIMARY_HOOKS else set())
    errors += empty_values(response_body, allowed=frozenset(allowed))
    cards = response_body.get("cards")
    if not isinstance(cards, list):
        return errors or ["cards: missing or not an array"]
    errors += _check_cards(cards, version)
    actions = response_body.get("systemActions")
    if hook in PRIMARY_HOOKS and not isinstance(actions, list):
        errors.append(f"systemActions: required for the primary hook {hook} (Inferno item 8)")
    required = hook in PRIMARY_HOOKS if require_coverage_information is None else require_coverage_information
    errors += _check_actions(request_body, actions if isinstance(actions, list) else [], version, required)
    return errors
