"""One hook call, start to finish, without Flask: scope -> data -> facts/evaluate -> render -> record.

The HTTP layer and ``islet-cds evaluate`` both call ``handle_hook``, so they give the same decision.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from service.decision import Decision
from service.envelope import HookRequest, dispatched_order_refs
from service.errors import ApiError
from service.logs import get_logger
from service.state import AppState

log = get_logger("pipeline")


@dataclass
class HookResult:
    body: dict[str, Any]
    decisions: list[Decision]
    timings_ms: dict[str, float] = field(default_factory=dict)
    data_notes: tuple[str, ...] = ()

    def log_summary(self) -> list[dict[str, Any]]:
        """Per order: codes, policy version, outcome. No ids that could identify the patient."""
        return [
            {
                "codes": [code for _, code in d.order.codes],
                "policyVersion": d.policy_version,
                "outcome": d.outcome,
            }
            for d in self.decisions
        ]


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - self._t) * 1000, 3)
        self._t = now


def _resources_in(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry") or []
        return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    return [value]


def _allowed_servers(app_state: AppState, caller: Any) -> tuple[str, ...] | None:
    if app_state.settings.auth_enabled and caller is not None:
        return tuple(getattr(caller, "fhir_servers", ()) or ())
    return None


def _resolve_dispatched_orders(app_state: AppState, request: HookRequest, caller: Any) -> HookRequest:
    """order-dispatch names orders by reference: find them in prefetch, else read them from the EHR."""
    from service.fhirdata import DataUnavailable, gather

    refs = dispatched_order_refs(request.context)
    found: dict[str, dict[str, Any]] = {}
    for value in (request.prefetch or {}).values():
        for res in _resources_in(value):
            ref = f"{res.get('resourceType')}/{res.get('id')}"
            if ref in refs:
                found[ref] = res
    missing = [r for r in refs if r not in found]
    if missing:
        templates = {f"dispatchedOrder{i}": ref for i, ref in enumerate(missing)}
        try:
            record = gather(request, templates, app_state.settings, _allowed_servers(app_state, caller))
        except DataUnavailable as exc:
            raise ApiError(412, "not-found", f"The dispatched orders could not be read: {exc.diagnostics}",
                           "context.dispatchedOrders") from None
        for key, ref in templates.items():
            for res in record.resources.get(key, []):
                if f"{res.get('resourceType')}/{res.get('id')}" == ref:
                    found[ref] = res
    orders = [found[r] for r in refs if r in found]
    return dataclasses.replace(request, draft_orders=orders, all_orders=orders)


def _order_location(request: HookRequest, order: dict[str, Any]) -> str:
    """Where the order sits in the request, as a FHIRPath-like expression for the OperationOutcome."""
    field = {"appointment-book": "appointments"}.get(request.hook, "draftOrders")
    bundle = request.context.get(field)
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict) and entry.get("resource") is order:
            return f"context.{field}.entry[{i}].resource"
    return "context.dispatchedOrders" if request.hook == "order-dispatch" else f"context.{field}"


def _check_orders_are_fhir(request: HookRequest) -> None:
    """hook-13: an order that fails FHIR validation makes the request invalid (400), naming the field."""
    from service.facts import order_problem, order_read_problem

    for order in request.draft_orders:
        # The R4B model first, then the reader the policy uses (stricter on dates given as numbers).
        problem = order_problem(order) or order_read_problem(order)
        if problem:
            where = _order_location(request, order)
            field = problem.split(":", 1)[0] if ":" in problem else ""
            expression = f"{where}.{field}" if field and " " not in field else where
            ref = f"{order.get('resourceType')}/{order.get('id')}"
            raise ApiError(400, "structure", f"{ref} is not a valid FHIR R4 resource: {problem}", expression)


def _check_dates_of_service(request: HookRequest, orders: list[dict[str, Any]], today: Any) -> None:
    """A date of service the policy cannot sensibly be applied to (year 1, or decades ahead) is 422."""
    from service.policy import implausible_date_of_service

    for order in orders:
        problem = implausible_date_of_service(order, today)
        if problem:
            ref = f"{order.get('resourceType')}/{order.get('id')}"
            raise ApiError(422, "business-rule", f"{ref}: {problem}", _order_location(request, order))


def _check_order_ids(orders: list[dict[str, Any]]) -> None:
    for i, order in enumerate(orders):
        if not isinstance(order.get("id"), str) or not order["id"]:
            raise ApiError(
                422,
                "required",
                f"In-scope {order.get('resourceType')} #{i + 1} has no id; coverage information must reference it.",
                "context.draftOrders",
            )


def _require_one_coverage(patient_record: Any, today: Any) -> None:
    """CRD hook-13: coverage information needs exactly one Coverage to speak for (400 otherwise);
    a Coverage that could not be read at all is data that could not be obtained (412)."""
    from cards import CoverageProblem, select_coverage

    if "coverage" in patient_record.gaps:
        raise ApiError(412, "not-found", f"The patient's Coverage could not be read: {patient_record.gaps['coverage']}",
                       "prefetch.coverage")
    selected = select_coverage(patient_record.resources.get("coverage", []), on=today)
    if isinstance(selected, CoverageProblem):
        if selected.kind == "none":
            raise ApiError(400, "not-found", "The patient has no active Coverage in prefetch or on the FHIR server; "
                           "coverage requirements cannot be given (CRD hook-13).", "prefetch.coverage")
        raise ApiError(400, "multiple-matches", f"{selected.count} active Coverages and none marked primary "
                       "(Coverage.order); send the primary one (CRD hook-13, dev-29).", "prefetch.coverage")


def handle_hook(app_state: AppState, request: HookRequest, caller: Any, *, record: bool = True) -> HookResult:
    from cards import RenderContext, render_response
    from service.fhirdata import DataUnavailable, gather
    from service.policy import decide
    from service.policy.scope import in_scope_orders

    clock = _Stopwatch()
    policy = app_state.policy
    if request.hook == "order-dispatch":
        request = _resolve_dispatched_orders(app_state, request, caller)
    _check_orders_are_fhir(request)
    orders = in_scope_orders(policy, request.draft_orders)
    clock.lap("scope")
    if not orders:
        result = HookResult(body={"cards": []}, decisions=[], timings_ms=clock.timings)
        if record:
            _record(app_state, request, caller, result)
        return result
    _check_order_ids(orders)
    _check_dates_of_service(request, orders, app_state.clock())

    try:
        patient_record = gather(request, policy.prefetch, app_state.settings, _allowed_servers(app_state, caller))
    except DataUnavailable as exc:
        raise ApiError(412, "not-found", f"Required patient data could not be obtained: {exc.diagnostics}",
                       "prefetch") from None
    clock.lap("data")

    today = app_state.clock()
    _require_one_coverage(patient_record, today)
    decisions = decide(policy, patient_record.resources, orders, request.all_orders, today, gaps=patient_record.gaps)
    clock.lap("evaluate")

    ctx = RenderContext(
        hook=request.hook,
        hook_instance=request.hook_instance,
        orders_by_ref={f"{o['resourceType']}/{o['id']}": o for o in request.all_orders + orders},
        coverages=patient_record.resources.get("coverage", []),
        configuration=request.configuration,
        crd_version=str(request.extension.get("davinci-crd.requestedVersion") or "2.0"),
        assertion_date=today,
        wording=app_state.wording,
        dtr_launch_url=app_state.settings.dtr_launch_url,
    )
    body = render_response(decisions, ctx)
    clock.lap("render")
    result = HookResult(body=body, decisions=decisions, timings_ms=clock.timings, data_notes=patient_record.notes)
    if record:
        _record(app_state, request, caller, result)
        clock.lap("record")
        result.timings_ms = clock.timings
    return result


def _record(app_state: AppState, request: HookRequest, caller: Any, result: HookResult) -> None:
    # Committed before the response is sent: a decision the EHR saw is never lost.
    app_state.records.record_call(
        hook_instance=request.hook_instance,
        hook=request.hook,
        service_id=request.service_id,
        patient_id=request.patient_id,
        issuer=getattr(caller, "issuer", None) or "anonymous",
        tenant=getattr(caller, "tenant", None),
        decisions=result.decisions,
        response=result.body,
        timings=result.timings_ms,
    )
