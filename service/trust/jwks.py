"""Public signing keys of trusted issuers: inline JWK Sets and fetched ones, cached per issuer.

Fetched sets are kept ``ttl_seconds``. A token whose ``kid`` is not in the cached set makes the cache
fetch the set again once (the issuer may have rotated its keys); if the kid is still missing the
token is refused. Forced re-fetches of one URL are spaced by ``min_refresh_interval_seconds`` so a
stream of tokens with made-up kids cannot turn the service into a fetch amplifier against an issuer.
When a set cannot be fetched (or re-fetched after its TTL) the token is refused: keys we cannot
confirm are not used.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from service.trust.issuers import TrustedIssuer

log = logging.getLogger(__name__)

# JWK Sets are small (a few keys); anything larger is not a JWK Set we want to parse.
MAX_JWKS_BYTES = 256 * 1024


class JwksError(Exception):
    """No usable key: the message is safe to show the caller (no secrets, no PHI)."""


@dataclass
class _CachedKeySet:
    keys_by_kid: dict[str, Mapping[str, Any]]
    fetched_at: float
    last_forced_refresh_at: float | None = None


def _keys_by_kid(document: Any, source: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError(f"JWK Set at {source} has no 'keys' array")
    keys: dict[str, Mapping[str, Any]] = {}
    for key in document["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            continue  # a key without a kid can never be selected (CDS Hooks requires kid)
        if key.get("use", "sig") != "sig":
            continue  # encryption keys must not verify signatures
        keys[key["kid"]] = key
    return keys


class JwksCache:
    """Thread-safe cache of issuers' JWK Sets, fetched with ``requests`` and short timeouts."""

    def __init__(
        self,
        ttl_seconds: float = 300.0,
        min_refresh_interval_seconds: float = 30.0,
        connect_timeout_seconds: float = 1.0,
        read_timeout_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._min_refresh_interval = min_refresh_interval_seconds
        self._timeout = (connect_timeout_seconds, read_timeout_seconds)
        self._clock = clock
        self._cache: dict[tuple[str, str], _CachedKeySet] = {}
        self._cache_lock = threading.Lock()
        # One lock per (issuer, url): concurrent requests wait for a single fetch instead of stampeding.
        self._fetch_locks: dict[tuple[str, str], threading.Lock] = {}

    def signing_jwk(self, issuer: TrustedIssuer, kid: str, jku: str | None = None) -> Mapping[str, Any]:
        """The JWK (as a dict) with ``kid`` for ``issuer``, or JwksError.

        ``jku`` must already be checked against ``issuer.jku_allowlist``; when given, the keys come
        from it, else from the issuer's inline ``jwks`` or its ``jwks_url``.
        """
        url = jku or issuer.jwks_url
        if url is None:
            for key in issuer.inline_keys:
                if key.get("kid") == kid:
                    return key
            if not issuer.inline_keys:
                raise JwksError("the issuer's keys are published only via jku, and the token has no jku header")
            raise JwksError(f"kid {kid!r} is not among the issuer's configured keys")
        return self._fetched_jwk(issuer.iss, url, kid)

    def _fetch_lock(self, cache_key: tuple[str, str]) -> threading.Lock:
        with self._cache_lock:
            return self._fetch_locks.setdefault(cache_key, threading.Lock())

    def _fetched_jwk(self, iss: str, url: str, kid: str) -> Mapping[str, Any]:
        cache_key = (iss, url)
        with self._fetch_lock(cache_key):
            now = self._clock()
            cached = self._cache.get(cache_key)
            if cached is None or now - cached.fetched_at >= self._ttl:
                cached = self._store(cache_key, self._fetch(url), now, previous=cached)
                if kid in cached.keys_by_kid:
                    return cached.keys_by_kid[kid]
            elif kid in cached.keys_by_kid:
                return cached.keys_by_kid[kid]

            # Unknown kid: the issuer may have rotated keys since we fetched. Re-fetch once.
            if cached.last_forced_refresh_at is not None and (
                now - cached.last_forced_refresh_at < self._min_refresh_interval
            ):
                raise JwksError(f"kid {kid!r} is not in the issuer's JWK Set")
            cached = self._store(cache_key, self._fetch(url), now, previous=cached)
            cached.last_forced_refresh_at = now
            if kid in cached.keys_by_kid:
                return cached.keys_by_kid[kid]
            raise JwksError(f"kid {kid!r} is not in the issuer's JWK Set (checked again after a refresh)")

    def _store(
        self,
        cache_key: tuple[str, str],
        keys_by_kid: dict[str, Mapping[str, Any]],
        now: float,
        previous: _CachedKeySet | None,
    ) -> _CachedKeySet:
        entry = _CachedKeySet(
            keys_by_kid=keys_by_kid,
            fetched_at=now,
            last_forced_refresh_at=previous.last_forced_refresh_at if previous else None,
        )
        with self._cache_lock:
            self._cache[cache_key] = entry
        return entry

    def _fetch(self, url: str) -> dict[str, Mapping[str, Any]]:
        try:
            # No redirects: an allowlisted jku that redirects would otherwise hand key selection to
            # whatever URL it points at.
            with requests.get(
                url,
                timeout=self._timeout,
                stream=True,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status_code != 200:
                    raise JwksError(f"JWK Set at {url} answered HTTP {response.status_code}")
                body = b""
                for chunk in response.iter_content(chunk_size=16 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError(f"JWK Set at {url} is larger than {MAX_JWKS_BYTES} bytes")
        except requests.RequestException as exc:
            log.warning("JWK Set fetch failed: %s (%s)", url, type(exc).__name__)
            raise JwksError(f"JWK Set at {url} could not be fetched ({type(exc).__name__})") from exc
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise JwksError(f"JWK Set at {url} is not JSON") from exc
        return _keys_by_kid(document, url)


def verification_key(jwk: Mapping[str, Any], algorithm: str) -> jwt.PyJWK:
    """A PyJWK bound to the token's algorithm, refusing keys that do not fit it.

    PyJWK binds one algorithm to the key and ``jwt.decode`` then refuses any other, which is what
    stops algorithm-confusion tricks; the checks here give a clear reason first.
    """
    declared = jwk.get("alg")
    if declared is not None and declared != algorithm:
        raise JwksError(f"key {jwk.get('kid')!r} is for {declared}, the token says {algorithm}")
    expected_kty = {"ES": "EC", "RS": "RSA", "PS": "RSA"}.get(algorithm[:2])
    if jwk.get("kty") != expected_kty:
        raise JwksError(f"key {jwk.get('kid')!r} (kty {jwk.get('kty')}) cannot verify {algorithm}")
    expected_curve = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}.get(algorithm)
    if expected_curve is not None and jwk.get("crv") != expected_curve:
        raise JwksError(f"key {jwk.get('kid')!r} is on curve {jwk.get('crv')}, {algorithm} needs {expected_curve}")
    try:
        return jwt.PyJWK(dict(jwk), algorithm=algorithm)
    except jwt.PyJWTError as exc:
        raise JwksError(f"key {jwk.get('kid')!r} is not a usable {algorithm} public key") from exc
