"""Trust: CDS Hooks 2.0 JWT verification, trusted issuers, and the jti replay cache.

The HTTP layer calls ``service.trust.flask_auth.require_caller``; the app factory builds the
Authenticator once with ``build_authenticator(settings)``.
"""

from service.trust.issuers import TrustConfigError, TrustedIssuer, TrustedIssuers, load_trusted_issuers
from service.trust.replay import MemoryReplayCache, RedisReplayCache, ReplayCache, make_replay_cache
from service.trust.verify import (
    ANONYMOUS_CALLER,
    Authenticator,
    AuthError,
    Caller,
    build_authenticator,
    endpoint_url,
)

__all__ = [
    "ANONYMOUS_CALLER",
    "AuthError",
    "Authenticator",
    "Caller",
    "MemoryReplayCache",
    "RedisReplayCache",
    "ReplayCache",
    "TrustConfigError",
    "TrustedIssuer",
    "TrustedIssuers",
    "build_authenticator",
    "endpoint_url",
    "load_trusted_issuers",
    "make_replay_cache",
]
