"""The clinical scenarios of ``fhir_fixtures/scenarios/`` as engine and HTTP inputs.

A scenario file holds one CDS Hooks request and the decision DESIGN.md calls for per order (format in
``fhir_fixtures/README.md``). These helpers turn it into what each layer takes: the in-process engine
(``record``/``gaps``/orders), an HTTP test (request without some prefetch keys) or a FHIR test server
(resources by type).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from service.policy import load_policy

Resource = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "fhir_fixtures" / "scenarios"
BUILD_SCRIPT = ROOT / "fhir_fixtures" / "build.py"

# The prefetch keys come from the policy file (its `prefetch` templates), in its order.
PREFETCH_KEYS: tuple[str, ...] = tuple(load_policy().prefetch)
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


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    covers: tuple[str, ...]
    today: date
    policy_overrides: dict[str, str]
    request: Resource
    expected: dict[str, Resource]  # "ServiceRequest/<id>" -> expected decision
    path: Path

    @property
    def hook(self) -> str:
        hook: str = self.request["hook"]
        return hook

    @property
    def prefetch(self) -> Resource:
        prefetch: Resource = self.request["prefetch"]
        return prefetch

    def order(self, reference: str) -> Resource:
        """The order (or appointment) resource an expected decision is about."""
        for resource in hook_orders(self.request)[1]:
            if reference_of(resource) == reference:
                return resource
        raise KeyError(f"{self.name}: no order {reference} in the request")


def reference_of(resource: Resource) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def load_scenario(path: Path) -> Scenario:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return Scenario(
        name=doc["name"],
        title=doc["title"],
        covers=tuple(doc["covers"]),
        today=date.fromisoformat(doc["today"]),
        policy_overrides=dict(doc.get("policy_overrides") or {}),
        request=doc["request"],
        expected=doc["expected"],
        path=path,
    )


@cache
def _load_all() -> tuple[Scenario, ...]:
    return tuple(load_scenario(p) for p in sorted(SCENARIO_DIR.glob("*.json")))


def load_scenarios() -> list[Scenario]:
    """Every scenario, sorted by name. Callers get deep copies, so mutating one cannot leak."""
    return [copy.deepcopy(s) for s in _load_all()]


def scenario_by_name(name: str) -> Scenario:
    for s in load_scenarios():
        if s.name == name:
            return s
    raise KeyError(name)


def bundle_resources(value: Any) -> list[Resource]:
    """A prefetch value as a list: Bundle -> its entries' resources; one resource -> [it]; null -> [];
    an OperationOutcome (a failed prefetch) -> []."""
    if value is None or not isinstance(value, dict):
        return []
    if value.get("resourceType") == "OperationOutcome":
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry") or [] if isinstance(e.get("resource"), dict)]
    return [value]


def prefetch_record(prefetch: Resource) -> tuple[dict[str, list[Resource]], dict[str, str]]:
    """(record, gaps) for ``service.policy.decide``: record = {key: [resources]} for every prefetch key;
    gaps = {key: reason} for keys whose prefetch came back as an OperationOutcome (DESIGN.md §5: absent)."""
    record: dict[str, list[Resource]] = {}
    gaps: dict[str, str] = {}
    for key in PREFETCH_KEYS:
        value = prefetch.get(key)
        record[key] = bundle_resources(value)
        if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            issues = value.get("issue") or [{}]
            gaps[key] = str(issues[0].get("diagnostics") or issues[0].get("code") or "prefetch failed")
    return record, gaps


def hook_orders(request: Resource) -> tuple[list[Resource], list[Resource]]:
    """(the orders the hook is about, every order in context), as service.envelope defines them:
    order-select -> the selections; appointment-book -> the appointments."""
    context = request["context"]
    if request["hook"] == "appointment-book":
        appointments = bundle_resources(context.get("appointments"))
        return appointments, appointments
    every = [r for r in bundle_resources(context.get("draftOrders")) if r.get("resourceType") in ORDER_TYPES]
    if request["hook"] == "order-select":
        wanted = set(context.get("selections") or [])
        return [r for r in every if reference_of(r) in wanted], every
    return every, every


def without_prefetch(request: Resource, keys: tuple[str, ...] | None = None) -> Resource:
    """A copy of the request with the given prefetch keys removed (all of them, and the ``prefetch``
    member itself, when ``keys`` is None): the service must then query the FHIR server."""
    out = copy.deepcopy(request)
    if keys is None:
        out.pop("prefetch", None)
    else:
        for key in keys:
            out.get("prefetch", {}).pop(key, None)
    return out


def fhir_server_resources(scenario: Scenario) -> dict[str, list[Resource]]:
    """The scenario's patient data by resource type, for a FHIR server on loopback (pytest-httpserver)."""
    by_type: dict[str, list[Resource]] = {}
    for key in PREFETCH_KEYS:
        for resource in bundle_resources(scenario.prefetch.get(key)):
            by_type.setdefault(resource["resourceType"], []).append(copy.deepcopy(resource))
    return by_type


def date_of_service(order: Resource, today: date) -> date:
    """DESIGN.md §3: the order's occurrence date / period start, else authoredOn, else today
    (an Appointment's start)."""
    for value in (
        order.get("occurrenceDateTime"),
        (order.get("occurrencePeriod") or {}).get("start"),
        order.get("start"),
        order.get("authoredOn"),
    ):
        if isinstance(value, str) and len(value) >= 10:
            return date.fromisoformat(value[:10])
    return today


def order_cases(scenarios: list[Scenario]) -> list[tuple[Scenario, str]]:
    """One (scenario, order reference) pair per expected decision."""
    return [(s, ref) for s in scenarios for ref in sorted(s.expected)]
