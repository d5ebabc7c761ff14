"""POST /cds-services/{id}: one hook call. Thin: parse, authenticate, hand over to the pipeline."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify

from service import pipeline
from service.api.common import authenticate, json_body, state
from service.envelope import parse_hook_request
from service.errors import ApiError
from service.logs import get_logger

bp = Blueprint("hooks", __name__)
log = get_logger("hooks")


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    app_state = state()
    g.service_id = service_id
    service = app_state.catalogue.by_id(service_id)
    if service is None:
        raise ApiError(404, "not-found", f"No CDS Service with id '{service_id}'.", "id")
    authenticate()
    body: Any = None
    try:
        body = json_body()
        hook_request = parse_hook_request(service_id, service.hook, body)
        g.hook_instance = hook_request.hook_instance
        result = pipeline.handle_hook(app_state, hook_request, g.caller)
    except ApiError as exc:
        _record_refusal(service_id, service.hook, body, exc)
        raise
    g.outcomes = result.log_summary()
    return jsonify(result.body)


def _record_refusal(service_id: str, hook: str, body: Any, exc: ApiError) -> None:
    """CRD found-37: every authenticated invocation is logged, refused ones too (status and field only)."""
    hook_instance = body.get("hookInstance") if isinstance(body, dict) else None
    context = body.get("context") if isinstance(body, dict) else None
    patient_id = context.get("patientId") if isinstance(context, dict) else None
    caller = g.get("caller")
    try:
        state().records.record_call(
            service_id=service_id,
            hook=hook,
            hook_instance=hook_instance if isinstance(hook_instance, str) else None,
            patient_id=patient_id if isinstance(patient_id, str) else None,
            issuer=getattr(caller, "issuer", None) or "anonymous",
            tenant=getattr(caller, "tenant", None),
            status_code=exc.status,
            error=f"{exc.code} at {exc.expression or '$'}",
        )
    except Exception:  # the client's error answer must not turn into a 500 because logging it failed
        log.error("could not record a refused call", exc_info=True, extra={"status": exc.status})
