"""The one place the HTTP layer touches trust: the current request's Caller, or a 401 ApiError."""

from __future__ import annotations

from flask import request

from service.config import Settings
from service.errors import ApiError
from service.trust.verify import ANONYMOUS_CALLER, Authenticator, AuthError, Caller, endpoint_url

# RFC 6750 §3: a 401 for a bad bearer token names the scheme and the error.
WWW_AUTHENTICATE = 'Bearer error="invalid_token"'


def require_caller(settings: Settings, authenticator: Authenticator | None) -> Caller:
    """Authenticate the current Flask request (CDS Hooks 2.0 JWT) and return its Caller.

    With ``settings.auth`` "disabled" every request is the anonymous Caller (development only).
    Otherwise raises ``ApiError(401, ...)`` with ``WWW-Authenticate: Bearer`` on any failure.
    """
    if not settings.auth_enabled:
        return ANONYMOUS_CALLER
    if authenticator is None:
        # A wiring mistake, not a client error: never fall back to anonymous when auth is required.
        raise RuntimeError("auth is required but no Authenticator was built (see build_authenticator)")
    audience = endpoint_url(settings.public_base_url, request.url_root, request.path)
    try:
        return authenticator.authenticate(request.headers.get("Authorization"), audience)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.diagnostics, headers={"WWW-Authenticate": WWW_AUTHENTICATE}) from exc
