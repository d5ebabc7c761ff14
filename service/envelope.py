"""The CDS Hooks 2.0 request envelope: validated once, turned into a HookRequest.

Validators are built at import from the JSON Schemas in ``service/schemas/``; unknown fields and
extensions are ignored (CRD found-33, hook-23).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from service.errors import ApiError

PRIMARY_HOOKS = frozenset({"order-sign", "order-dispatch", "appointment-book"})
ORDER_TYPES = frozenset(
    {
        "ServiceRequest",
        "MedicationRequest",
        "DeviceRequest",
        "NutritionOrder",
        "VisionPrescription",
        "CommunicationRequest",
    }
)


def _load_schema(name: str) -> dict[str, Any]:
    text = resources.files("service.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


_ENVELOPE = Draft202012Validator(_load_schema("hook-request.schema.json"))
_CONTEXTS = {
    hook: Draft202012Validator(_load_schema(f"context-{hook}.schema.json"))
    for hook in ("order-sign", "order-select", "order-dispatch", "appointment-book")
}


@dataclass(frozen=True)
class FhirAuthorization:
    """The OAuth2 token the EHR lends for this call. Transient: never logged, stored or reused."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


@dataclass(frozen=True)
class HookRequest:
    service_id: str
    hook: str
    hook_instance: str
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None
    extension: dict[str, Any]
    patient_id: str
    draft_orders: list[dict[str, Any]]  # the orders this hook is about (selections / dispatched)
    all_orders: list[dict[str, Any]]  # every order resource in context (the order set)
    configuration: dict[str, Any]  # davinci-crd.configuration (unknown options ignored later)

    @property
    def is_primary(self) -> bool:
        return self.hook in PRIMARY_HOOKS


def _expression(error: ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "$"


def _first_error(validator: Draft202012Validator, instance: Any, prefix: str = "") -> ValidationError | None:
    # Report the shallowest, most specific error: it names the field a client must fix.
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), e.message))
    return errors[0] if errors else None


def describe_validation_error(error: ValidationError) -> str:
    """What is wrong, without quoting the value: request values can be patient data."""
    rule, expected = error.validator, error.validator_value
    if rule in ("required", "dependentRequired"):
        return error.message  # names properties only
    if rule == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return "must be of type " + " or ".join(f"'{k}'" for k in kinds)
    if rule == "const":
        return f"must be '{expected}'"
    if rule == "pattern":
        return "does not match the expected format" + (" (a UUID)" if "[0-9a-fA-F]{8}" in str(expected) else "")
    if rule == "minLength":
        return "must not be empty"
    if rule == "minItems":
        return f"must have at least {expected} item(s)"
    if rule == "minimum":
        return f"must be at least {expected}"
    if rule == "enum":
        return "must be one of " + ", ".join(f"'{v}'" for v in expected)
    if rule == "anyOf":
        return "must contain dispatchedOrders (order-dispatch 1.1) or order (older clients)"
    return f"fails the '{rule}' rule"


def _raise_invalid(error: ValidationError, prefix: str = "") -> None:
    where = _expression(error)
    if prefix:
        where = prefix if where == "$" else f"{prefix}.{where}"
    raise ApiError(400, "invalid", f"Invalid CDS Hooks request at {where}: {describe_validation_error(error)}", where)


def _bundle_resources(bundle: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict):
        return []
    out = []
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
            out.append(res)
    return out


def _ref_of(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _orders_of(hook: str, context: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(orders the hook is about, every order in context)."""
    if hook in ("order-sign", "order-select"):
        every = [r for r in _bundle_resources(context.get("draftOrders")) if r["resourceType"] in ORDER_TYPES]
        if hook == "order-select":
            wanted = set(context.get("selections") or [])
            return [r for r in every if _ref_of(r) in wanted], every
        return every, every
    if hook == "appointment-book":
        appts = _bundle_resources(context.get("appointments"))
        return appts, appts
    if hook == "order-dispatch":
        # Both shapes: hook 1.1 (dispatchedOrders refs + fulfillmentTasks) and the older Inferno one
        # (order ref + task). Neither carries the order resource itself; orders come from prefetch or
        # the FHIR server (see pipeline). Here we keep any Task-embedded focus we can read.
        return [], []
    return [], []


def dispatched_order_refs(context: dict[str, Any]) -> list[str]:
    refs = context.get("dispatchedOrders")
    if isinstance(refs, list):
        return [r for r in refs if isinstance(r, str)]
    order = context.get("order")
    return [order] if isinstance(order, str) else []


def parse_hook_request(service_id: str, expected_hook: str, body: Any) -> HookRequest:
    """Validate the envelope and context for ``expected_hook``; raise ApiError(400) naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "The request body must be a JSON object.", "$")
    err = _first_error(_ENVELOPE, body)
    if err is not None:
        _raise_invalid(err)
    hook = body["hook"]
    if hook != expected_hook:
        raise ApiError(
            400,
            "invalid",
            f"Service '{service_id}' answers the '{expected_hook}' hook, but the request is for '{hook}'.",
            "hook",
        )
    context = body["context"]
    err = _first_error(_CONTEXTS[hook], context)
    if err is not None:
        _raise_invalid(err, "context")
    auth = body.get("fhirAuthorization")
    fhir_auth = None
    if auth is not None:
        fhir_auth = FhirAuthorization(
            access_token=auth["access_token"],
            token_type=auth["token_type"],
            expires_in=auth["expires_in"],
            scope=auth["scope"],
            subject=auth["subject"],
            patient=auth.get("patient"),
        )
    extension = body.get("extension") or {}
    configuration = extension.get("davinci-crd.configuration") if isinstance(extension, dict) else None
    drafts, every = _orders_of(hook, context)
    return HookRequest(
        service_id=service_id,
        hook=hook,
        hook_instance=body["hookInstance"],
        fhir_server=(body.get("fhirServer") or None),
        fhir_authorization=fhir_auth,
        context=context,
        prefetch=body.get("prefetch"),
        extension=extension if isinstance(extension, dict) else {},
        patient_id=context["patientId"],
        draft_orders=drafts,
        all_orders=every,
        configuration=configuration if isinstance(configuration, dict) else {},
    )
