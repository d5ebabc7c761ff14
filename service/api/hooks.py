"""POST /cds-services/{id}: one hook call. Thin: parse, authenticate, hand over to the pipeline."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from service import pipeline
from service.api.common import authenticate, json_body, state
from service.envelope import parse_hook_request
from service.errors import ApiError

bp = Blueprint("hooks", __name__)


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    app_state = state()
    g.service_id = service_id
    service = app_state.catalogue.by_id(service_id)
    if service is None:
        raise ApiError(404, "not-found", f"No CDS Service with id '{service_id}'.", "id")
    authenticate()
    body = json_body()
    hook_request = parse_hook_request(service_id, service.hook, body)
    g.hook_instance = hook_request.hook_instance
    result = pipeline.handle_hook(app_state, hook_request, g.caller)
    g.outcomes = result.log_summary()
    return jsonify(result.body)
