"""The application factory (Flask tutorial style): settings from defaults, environment, mapping."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask_cors import CORS
from prometheus_client import Counter, Histogram
from werkzeug.exceptions import HTTPException

from service.config import Settings, load_settings
from service.discovery import discovery_document, load_catalogue
from service.errors import ApiError, operation_outcome
from service.logs import configure_logging, get_logger
from service.state import AppState

log = get_logger("http")

REQUEST_SECONDS = Histogram(
    "islet_cds_request_seconds", "HTTP request duration", ["endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTCOMES = Counter("islet_cds_decisions_total", "Decisions by outcome", ["service", "outcome"])

# werkzeug's status -> FHIR IssueType
_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                409: "conflict", 412: "not-found", 413: "too-costly", 415: "not-supported",
                422: "processing", 429: "throttled"}


def _utc_today() -> date:
    return datetime.now(UTC).date()


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], date] | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the app. ``config`` overrides ISLET_CDS_* variables (tests); ``clock`` gives today's date."""
    settings = load_settings(environ, config)
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]

    app_state = build_state(settings, clock or _utc_today, policy_overrides=policy_overrides)
    app.extensions["islet_cds"] = {
        "state": app_state,
        "records": app_state.records,
        "service_ids": [s.id for s in app_state.catalogue.services],
    }
    if not settings.auth_enabled:
        log.warning("authentication disabled (ISLET_CDS_AUTH=disabled): for development only")
    if "*" in settings.allowed_fhir_servers:
        log.warning("any FHIR server may be called (ISLET_CDS_ALLOWED_FHIR_SERVERS=*): for development only")

    # CORS: the CDS Hooks sandbox calls from the browser. Preflight is answered on every route.
    CORS(
        app,
        origins=list(settings.cors_origins) or [],
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=86400,
    )

    from service.api import discovery, fhir, health, hooks
    from service.api.feedback import bp as feedback_bp

    app.register_blueprint(discovery.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(feedback_bp)
    app.register_blueprint(fhir.bp)
    app.register_blueprint(health.bp)
    if settings.bench_endpoints:
        from service.api import bench

        app.register_blueprint(bench.bp)

    _register_error_handlers(app)
    _register_request_log(app)
    return app


def build_state(
    settings: Settings,
    clock: Callable[[], date],
    *,
    with_records: bool = True,
    policy_overrides: Mapping[str, Any] | None = None,
) -> AppState:
    from cards import configuration_options, load_wording
    from service.policy import load_policy
    from service.records.store import DecisionLog

    policy = load_policy(settings.policy_path, overrides=policy_overrides)
    catalogue = load_catalogue(policy.id)
    records = None
    if with_records:
        records = DecisionLog(settings.database_url)
        records.migrate()
    authenticator = None
    extras: dict[str, Any] = {}
    if settings.auth_enabled:
        from service.config import require_public_base_url
        from service.trust import build_authenticator

        require_public_base_url(settings)
        authenticator = build_authenticator(settings)
        extras["replay_cache"] = authenticator.replay_cache
    return AppState(
        settings=settings,
        policy=policy,
        catalogue=catalogue,
        wording=load_wording(),
        discovery=discovery_document(catalogue, policy.prefetch, configuration_options()),
        records=records,
        authenticator=authenticator,
        clock=clock,
        extras=extras,
    )


def _outcome_response(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/fhir+json"
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return _outcome_response(exc.status, exc.outcome(), exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        diagnostics = {
            404: f"No such endpoint: {request.method} {request.path}. Discovery is at /cds-services.",
            405: f"Method {request.method} is not allowed on {request.path}.",
            413: f"The request body exceeds the limit of {app.config['MAX_CONTENT_LENGTH']} bytes.",
        }.get(status, exc.description or exc.name)
        headers = {}
        if status == 405:
            allow = exc.get_response().headers.get("Allow")
            if allow:
                headers["Allow"] = allow
        return _outcome_response(status, operation_outcome(_ISSUE_CODES.get(status, "exception"), diagnostics), headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc, extra={"hookInstance": g.get("hook_instance")})
        return _outcome_response(
            500, operation_outcome("exception", "Internal error. The incident was logged; please retry or report it.")
        )


def _register_request_log(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUEST_SECONDS.labels(endpoint, str(response.status_code)).observe(elapsed)
        outcomes = g.get("outcomes") or []
        for o in outcomes:
            OUTCOMES.labels(g.get("service_id", "-"), o.get("outcome", "-")).inc()
        # No patient data and no tokens: ids of the call, codes of the orders, outcomes, timings.
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": endpoint,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "hookInstance": g.get("hook_instance"),
                "serviceId": g.get("service_id"),
                "orders": outcomes or None,
            },
        )
        return response
