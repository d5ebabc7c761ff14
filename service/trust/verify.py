"""CDS Hooks 2.0 JWT verification: who is calling, and may they?

Checks, in order (each failure is an ``AuthError`` whose ``diagnostics`` says which rule failed):

1. ``Authorization: Bearer <JWT>``.
2. Header: ``alg`` in the service's allowlist (never ``none``, never HMAC), ``typ`` "JWT" if present
   (case-insensitive), ``kid`` present; ``jku`` if present must be in the issuer's ``jku_allowlist``
   (checked before anything is fetched).
3. ``iss`` is a trusted issuer and ``alg`` is one of that issuer's algorithms.
4. Signature, with the issuer's key selected by ``kid`` (PyJWT, key bound to ``alg``).
5. Claims: ``iss aud exp iat jti`` required; ``exp``, ``nbf`` (if present) and ``iat`` (not in the
   future) with ``settings.jwt_leeway_seconds`` of leeway.
6. ``aud`` (see ``audience_matches``).
7. ``jti`` never seen before for this issuer (replay cache, kept until exp + leeway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from service.config import Settings
from service.trust.issuers import TrustConfigError, TrustedIssuer, TrustedIssuers, load_trusted_issuers
from service.trust.jwks import JwksCache, JwksError, verification_key
from service.trust.replay import ReplayCache, ReplayCacheUnavailable, make_replay_cache

log = logging.getLogger(__name__)

ANONYMOUS_ISSUER = "anonymous"
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")


class AuthError(Exception):
    """The call is not authenticated. ``diagnostics`` is safe to return in an OperationOutcome.

    ``code`` is the FHIR IssueType: "login" (no or bad credentials) or "security" (credentials that
    were valid once but are refused now: a replayed token).
    """

    def __init__(self, diagnostics: str, code: str = "login") -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.code = code


@dataclass(frozen=True)
class Caller:
    """Who made this call, as established by the JWT (or the anonymous caller when auth is off)."""

    issuer: str
    tenant: str | None
    subject: str | None
    jti: str | None
    # FHIR base URLs this caller's requests may name in fhirServer ("*" = any the service allows).
    # The data layer applies them on top of ISLET_CDS_ALLOWED_FHIR_SERVERS for authenticated callers;
    # the anonymous caller (auth disabled) has () and only the service-wide list applies.
    fhir_servers: tuple[str, ...]

    @property
    def is_anonymous(self) -> bool:
        return self.issuer == ANONYMOUS_ISSUER


ANONYMOUS_CALLER = Caller(issuer=ANONYMOUS_ISSUER, tenant=None, subject=None, jti=None, fhir_servers=())


def endpoint_url(public_base_url: str | None, request_url_root: str, path: str) -> str:
    """The exact URL the client called, as it must appear in ``aud``.

    ``public_base_url`` (as clients see the service, e.g. behind a TLS proxy) wins over the URL root
    Flask saw. ``path`` is the route path (Flask ``request.path``), without query string.
    """
    base = (public_base_url or request_url_root).rstrip("/")
    return base + "/" + path.lstrip("/")


def audience_matches(aud: Any, endpoint: str) -> str | None:
    """None when ``aud`` names exactly ``endpoint``, else the reason it does not.

    CDS Hooks 2.0 types ``aud`` as "string or array of string" and says it MUST be the URL of the
    endpoint being called. So a string must equal the endpoint exactly, and an array is accepted
    only when it holds exactly that one URL: an array naming other audiences too would be a token
    the client meant to be usable elsewhere, which a single-endpoint bearer token must not be.
    No normalisation (trailing slash, case) is applied: the issuer signs the exact URL.
    """
    if isinstance(aud, str):
        return None if aud == endpoint else f"aud {aud!r} is not this endpoint ({endpoint})"
    if isinstance(aud, list):
        if len(aud) != 1:
            return f"aud is an array of {len(aud)} audiences; it must name only this endpoint ({endpoint})"
        if aud[0] != endpoint:
            return f"aud {aud[0]!r} is not this endpoint ({endpoint})"
        return None
    return "aud must be a string (or an array holding only this endpoint's URL)"


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise AuthError("Authorization header missing: expected 'Bearer <JWT>' (CDS Hooks 2.0)")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization header must be 'Bearer <JWT>'")
    return token


class Authenticator:
    """Verifies CDS Hooks 2.0 JWTs against the trusted issuers. Thread-safe; build once per app."""

    def __init__(
        self,
        settings: Settings,
        issuers: TrustedIssuers,
        replay_cache: ReplayCache,
        jwks_cache: JwksCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._algorithms = tuple(settings.jwt_algorithms)
        self._leeway = int(settings.jwt_leeway_seconds)
        self._issuers = issuers
        self._replay_cache = replay_cache
        self._jwks = jwks_cache or JwksCache()
        self._clock = clock

    @property
    def replay_cache(self) -> ReplayCache:
        return self._replay_cache

    def authenticate(self, authorization_header: str | None, audience: str) -> Caller:
        token = _bearer_token(authorization_header)
        header = self._checked_header(token)
        alg: str = header["alg"]
        kid: str = header["kid"]

        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"JWT payload cannot be decoded ({exc})") from exc
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("JWT has no iss claim")
        issuer = self._issuers.get(iss)
        if issuer is None:
            log.info("JWT refused: untrusted issuer %r", iss)
            raise AuthError(f"iss {iss!r} is not a trusted issuer")
        if alg not in issuer.algorithms:
            raise AuthError(f"alg {alg} is not accepted for issuer {iss!r} (accepted: {', '.join(issuer.algorithms)})")

        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or jku not in issuer.jku_allowlist):
            # Refused before any fetch: a token must not make the service call URLs it chose.
            log.info("JWT refused: jku not allowlisted for issuer %r", iss)
            raise AuthError(f"jku {jku!r} is not an allowed JWK Set URL for issuer {iss!r}")

        try:
            key = verification_key(self._jwks.signing_jwk(issuer, kid, jku), alg)
        except JwksError as exc:
            raise AuthError(f"no usable key for kid {kid!r}: {exc}") from exc

        claims = self._verified_claims(token, key, alg)
        return self._accept(issuer, claims, audience)

    def _checked_header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"Bearer token is not a JWT ({exc})") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise AuthError("JWT header has no alg")
        if alg.lower() == "none":
            raise AuthError("JWT alg 'none' is not allowed: tokens must be signed (CDS Hooks 2.0)")
        if alg.upper().startswith("HS"):
            raise AuthError(f"JWT alg {alg} (HMAC) is not allowed: CDS Hooks 2.0 requires an asymmetric signature")
        if alg not in self._algorithms:
            raise AuthError(f"JWT alg {alg} is not accepted (accepted: {', '.join(self._algorithms)})")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthError(f"JWT typ {typ!r} is not 'JWT'")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("JWT header has no kid (CDS Hooks 2.0 requires it)")
        return header

    def _verified_claims(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                leeway=self._leeway,
                # aud is checked by audience_matches (exact-match rule); everything else by PyJWT.
                options={"require": list(REQUIRED_CLAIMS), "verify_aud": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise AuthError("JWT signature does not verify with the issuer's key") from exc
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("JWT has expired (exp)") from exc
        except jwt.ImmatureSignatureError as exc:
            claim = "iat" if "iat" in str(exc) else "nbf"
            when = "issued in the future" if claim == "iat" else "not valid yet"
            raise AuthError(f"JWT is {when} ({claim})") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"JWT lacks the required claim {exc.claim} (CDS Hooks 2.0)") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(f"JWT alg refused: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"JWT rejected: {exc}") from exc
        return claims

    def _accept(self, issuer: TrustedIssuer, claims: dict[str, Any], audience: str) -> Caller:
        mismatch = audience_matches(claims["aud"], audience)
        if mismatch:
            raise AuthError(mismatch)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("JWT jti must be a non-empty string")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthError("JWT tenant must be a string")
        if issuer.tenant is not None and tenant is not None and tenant != issuer.tenant:
            raise AuthError("JWT tenant does not match the tenant configured for its issuer")
        subject = claims.get("sub")

        # Keep the jti until the token could no longer pass the exp check anywhere.
        ttl_seconds = int(claims["exp"]) + self._leeway - int(self._clock()) + 1
        try:
            first_use = self._replay_cache.add_if_absent(issuer.iss, jti, ttl_seconds)
        except ReplayCacheUnavailable as exc:
            # Fail closed: if we cannot tell whether this jti was already used, accepting it would
            # let a captured token be replayed during every cache outage, and the token carries
            # access to PHI. A refused call is retried by the EHR; a replay cannot be undone.
            log.error("Replay cache unavailable (%s): refusing the call", exc)
            raise AuthError("replay cache unavailable: the token cannot be checked for replay") from exc
        if not first_use:
            log.warning("JWT refused: replayed jti from issuer %r", issuer.iss)
            raise AuthError("JWT jti was already used (replay refused)", code="security")

        return Caller(
            issuer=issuer.iss,
            tenant=issuer.tenant or tenant,
            subject=subject if isinstance(subject, str) else None,
            jti=jti,
            fhir_servers=issuer.fhir_servers,
        )


def build_authenticator(settings: Settings) -> Authenticator:
    """The app's Authenticator: trusted issuers from ``settings.trusted_issuers``, replay cache by URL.

    Called at start-up when auth is required. Raises TrustConfigError when the issuer file is unset or
    broken, so the service does not start in a state where it would refuse (or accept) every call.
    """
    if not settings.trusted_issuers:
        raise TrustConfigError(
            "ISLET_CDS_TRUSTED_ISSUERS must name the trusted-issuers file when ISLET_CDS_AUTH is 'required'"
        )
    issuers = load_trusted_issuers(settings.trusted_issuers, settings.jwt_algorithms)
    return Authenticator(settings, issuers, make_replay_cache(settings))
