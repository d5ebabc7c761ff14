"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.common import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    app_state = state()
    checks = {
        "policy": f"{app_state.policy.id} {app_state.policy.version}",
        "records": "ok" if app_state.records.health() else "unavailable",
    }
    replay = app_state.extras.get("replay_cache")
    if replay is not None and hasattr(replay, "health"):
        checks["replay_cache"] = "ok" if replay.health() else "unavailable"
    ready = all(v != "unavailable" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), (200 if ready else 503)


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
