"""GET /cds-services: the discovery document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from service.api.common import authenticate, state

bp = Blueprint("discovery", __name__)


@bp.get("/cds-services")
def discovery() -> Response:
    app_state = state()
    if app_state.settings.discovery_auth == "protected":
        authenticate()
    return jsonify(app_state.discovery)
