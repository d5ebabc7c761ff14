"""Helpers shared by the blueprints: the app state, JSON bodies, authentication."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, request

from service.errors import ApiError
from service.state import AppState

JSON_TYPES = ("application/json", "application/fhir+json")


def state() -> AppState:
    app_state: AppState = current_app.extensions["islet_cds"]["state"]
    return app_state


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> Any:
    """The request body as JSON: 415 if it is not JSON, 413 if too large, 400 if unparseable."""
    mimetype = request.mimetype or ""
    if not (mimetype in JSON_TYPES or mimetype.endswith("+json")):
        shown = mimetype or "none"
        raise ApiError(415, "not-supported", f"Content-Type must be application/json, not {shown}.", "Content-Type")
    raw = request.get_data(cache=False)  # werkzeug enforces MAX_CONTENT_LENGTH here (413)
    if not raw:
        raise ApiError(400, "invalid", "The request body is empty; a JSON object is required.", "$")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid", "The request body is not UTF-8 encoded JSON.", "$") from None
    except RecursionError:
        raise ApiError(400, "too-costly", "The request body is nested too deeply.", "$") from None
    except ValueError as exc:
        raise ApiError(400, "invalid", f"The request body is not valid JSON: {exc}", "$") from None


def authenticate() -> None:
    """Verify the caller's JWT (unless authentication is disabled); sets ``g.caller``."""
    g.caller = state().authenticate()
