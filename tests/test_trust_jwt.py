"""The CDS Hooks 2.0 JWT matrix for service.trust.Authenticator.

Keys are generated with `cryptography`; fetched JWK Sets are served over real HTTP by
pytest-httpserver on loopback.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from service.config import Settings
from service.trust.jwks import JwksCache
from service.trust.replay import MemoryReplayCache
from service.trust.verify import Authenticator, AuthError, Caller, audience_matches, endpoint_url
from tests.trust_tokens import (
    AUDIENCE,
    ISS,
    SigningKey,
    claims,
    handmade_token,
    issuers_with,
    make_key,
    settings,
    sign,
)

FHIR = "https://fhir.example.org/r4"


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: make_key(alg) for alg in ("ES256", "ES384", "RS384")}


@pytest.fixture
def authenticator(keys: dict[str, SigningKey]) -> Authenticator:
    issuers = issuers_with(
        {
            "iss": ISS,
            "jwks": {"keys": [key.public_jwk for key in keys.values()]},
            "fhir_servers": [FHIR],
            "tenant": "hospital-1",
        }
    )
    return Authenticator(settings(), issuers, MemoryReplayCache())


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refused(authenticator: Authenticator, token: str, audience: str = AUDIENCE) -> AuthError:
    with pytest.raises(AuthError) as caught:
        authenticator.authenticate(bearer(token), audience)
    return caught.value


# --- good tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS384"])
def test_good_token_is_accepted(authenticator: Authenticator, keys: dict[str, SigningKey], alg: str) -> None:
    payload = claims(sub="practitioner-7")
    caller = authenticator.authenticate(bearer(sign(keys[alg], payload)), AUDIENCE)
    assert caller == Caller(
        issuer=ISS, tenant="hospital-1", subject="practitioner-7", jti=payload["jti"], fhir_servers=(FHIR,)
    )
    assert not caller.is_anonymous


def test_typ_is_case_insensitive_and_optional(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    authenticator.authenticate(bearer(sign(keys["ES384"], claims(), typ="jwt")), AUDIENCE)
    authenticator.authenticate(bearer(sign(keys["ES384"], claims(), typ=None)), AUDIENCE)


def test_exp_inside_leeway_is_accepted(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    now = int(time.time())
    authenticator.authenticate(bearer(sign(keys["ES384"], claims(exp=now - 20, iat=now - 320))), AUDIENCE)


def test_aud_array_holding_only_this_endpoint_is_accepted(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    # CDS Hooks 2.0: aud is "string or array of string" and MUST be the endpoint's URL.
    authenticator.authenticate(bearer(sign(keys["ES384"], claims(aud=[AUDIENCE]))), AUDIENCE)


# --- the bad cases ---------------------------------------------------------------------------------


def test_alg_none_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    token = handmade_token({"alg": "none", "typ": "JWT", "kid": keys["ES256"].kid}, claims())
    assert "alg 'none' is not allowed" in refused(authenticator, token).diagnostics


def test_hs256_signed_with_the_public_key_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    # The classic confusion attack: HMAC keyed with the (public) PEM, hoping the verifier feeds its
    # RSA/EC public key to HMAC.
    for key in (keys["RS384"], keys["ES256"]):
        token = handmade_token({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(), hmac_secret=key.public_pem)
        assert "HS256 (HMAC) is not allowed" in refused(authenticator, token).diagnostics


def test_hmac_is_refused_even_if_settings_were_built_to_allow_it(keys: dict[str, SigningKey]) -> None:
    # load_settings refuses HS*, but a Settings built directly could carry it: verify still refuses.
    unsafe = Settings(jwt_algorithms=("HS256", "RS384"))
    issuers = issuers_with({"iss": ISS, "jwks": {"keys": [keys["RS384"].public_jwk]}, "fhir_servers": []})
    authenticator = Authenticator(unsafe, issuers, MemoryReplayCache())
    key = keys["RS384"]
    token = handmade_token({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(), hmac_secret=key.public_pem)
    assert "HMAC" in refused(authenticator, token).diagnostics


def test_header_alg_that_does_not_fit_the_kid_key_is_refused(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    # Signed by the ES384 key but presented under the ES256 key's kid.
    token = sign(keys["ES384"], claims(), kid=keys["ES256"].kid)
    assert "is for ES256, the token says ES384" in refused(authenticator, token).diagnostics


def test_bad_signature_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    impostor = make_key("ES384", kid=keys["ES384"].kid)
    assert "signature does not verify" in refused(authenticator, sign(impostor, claims())).diagnostics


def test_tampered_payload_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    header, _, signature = sign(keys["ES384"], claims()).split(".")
    other_payload = sign(keys["ES384"], claims(sub="someone-else")).split(".")[1]
    token = f"{header}.{other_payload}.{signature}"
    assert "signature does not verify" in refused(authenticator, token).diagnostics


def test_expired_token_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    now = int(time.time())
    token = sign(keys["ES384"], claims(exp=now - 120, iat=now - 420))
    assert "expired (exp)" in refused(authenticator, token).diagnostics


def test_nbf_in_the_future_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    token = sign(keys["ES384"], claims(nbf=int(time.time()) + 600))
    assert "not valid yet (nbf)" in refused(authenticator, token).diagnostics


def test_iat_in_the_future_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    now = int(time.time())
    token = sign(keys["ES384"], claims(iat=now + 600, exp=now + 900))
    assert "issued in the future (iat)" in refused(authenticator, token).diagnostics


@pytest.mark.parametrize(
    "aud",
    [
        "https://cds.example.org/cds-services/other-service",
        AUDIENCE + "/",
        "https://cds.example.org/cds-services",
    ],
)
def test_wrong_aud_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey], aud: str) -> None:
    assert "is not this endpoint" in refused(authenticator, sign(keys["ES384"], claims(aud=aud))).diagnostics


@pytest.mark.parametrize(
    ("aud", "reason"),
    [
        ([AUDIENCE, "https://other.example.org/cds-services/x"], "array of 2 audiences"),
        (["https://other.example.org/cds-services/x"], "is not this endpoint"),
        ([], "array of 0 audiences"),
    ],
)
def test_aud_array_naming_anything_else_is_refused(
    authenticator: Authenticator, keys: dict[str, SigningKey], aud: list[str], reason: str
) -> None:
    assert reason in refused(authenticator, sign(keys["ES384"], claims(aud=aud))).diagnostics


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud", "iss"])
def test_missing_required_claim_is_refused(
    authenticator: Authenticator, keys: dict[str, SigningKey], claim: str
) -> None:
    dropped: dict[str, Any] = {claim: None}
    diagnostics = refused(authenticator, sign(keys["ES384"], claims(**dropped))).diagnostics
    assert claim in diagnostics
    assert "lacks the required claim" in diagnostics or "has no iss" in diagnostics


def test_replayed_jti_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    token = sign(keys["ES384"], claims())
    authenticator.authenticate(bearer(token), AUDIENCE)
    error = refused(authenticator, token)
    assert "already used" in error.diagnostics
    assert error.code == "security"


def test_replay_is_per_issuer(keys: dict[str, SigningKey]) -> None:
    other_iss = "https://other-ehr.example.org"
    issuers = issuers_with(
        {"iss": ISS, "jwks": {"keys": [keys["ES384"].public_jwk]}, "fhir_servers": []},
        {"iss": other_iss, "jwks": {"keys": [keys["ES256"].public_jwk]}, "fhir_servers": []},
    )
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache())
    authenticator.authenticate(bearer(sign(keys["ES384"], claims(jti="shared-jti"))), AUDIENCE)
    authenticator.authenticate(bearer(sign(keys["ES256"], claims(iss=other_iss, jti="shared-jti"))), AUDIENCE)


def test_unknown_issuer_is_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    token = sign(keys["ES384"], claims(iss="https://evil.example.org"))
    assert "is not a trusted issuer" in refused(authenticator, token).diagnostics


def test_alg_outside_the_issuers_list_is_refused(keys: dict[str, SigningKey]) -> None:
    issuers = issuers_with(
        {
            "iss": ISS,
            "jwks": {"keys": [k.public_jwk for k in keys.values()]},
            "algorithms": ["ES384"],
            "fhir_servers": [],
        }
    )
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache())
    assert "not accepted for issuer" in refused(authenticator, sign(keys["ES256"], claims())).diagnostics


def test_missing_kid_and_wrong_typ_are_refused(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    assert "no kid" in refused(authenticator, sign(keys["ES384"], claims(), kid=None)).diagnostics
    assert "typ 'at+jwt'" in refused(authenticator, sign(keys["ES384"], claims(), typ="at+jwt")).diagnostics


def test_unknown_kid_with_inline_keys_is_refused(authenticator: Authenticator) -> None:
    stranger = make_key("ES384")
    assert "not among the issuer's configured keys" in refused(authenticator, sign(stranger, claims())).diagnostics


def test_tenant_claim_must_match_the_configured_tenant(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    assert "tenant" in refused(authenticator, sign(keys["ES384"], claims(tenant="hospital-2"))).diagnostics
    caller = authenticator.authenticate(bearer(sign(keys["ES384"], claims(tenant="hospital-1"))), AUDIENCE)
    assert caller.tenant == "hospital-1"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "Authorization header missing"),
        ("", "Authorization header missing"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <JWT>'"),
        ("Bearer", "must be 'Bearer <JWT>'"),
        ("Bearer not-a-jwt", "not a JWT"),
    ],
)
def test_malformed_authorization_header_is_refused(
    authenticator: Authenticator, header: str | None, reason: str
) -> None:
    with pytest.raises(AuthError) as caught:
        authenticator.authenticate(header, AUDIENCE)
    assert reason in caught.value.diagnostics


# --- keys fetched over HTTP (jwks_url, jku) ---------------------------------------------------------


def jwks_of(*signing_keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in signing_keys]}


def fetches(httpserver: HTTPServer, path: str) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


def test_unknown_kid_triggers_one_refresh_that_finds_it(httpserver: HTTPServer) -> None:
    old_key, new_key = make_key("ES384"), make_key("ES384")
    httpserver.expect_ordered_request("/jwks.json").respond_with_json(jwks_of(old_key))
    httpserver.expect_ordered_request("/jwks.json").respond_with_json(jwks_of(old_key, new_key))
    issuers = issuers_with({"iss": ISS, "jwks_url": httpserver.url_for("/jwks.json"), "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())

    caller = authenticator.authenticate(bearer(sign(new_key, claims())), AUDIENCE)

    assert caller.issuer == ISS
    assert fetches(httpserver, "/jwks.json") == 2
    httpserver.check_assertions()


def test_unknown_kid_missing_after_refresh_is_refused_after_exactly_two_fetches(httpserver: HTTPServer) -> None:
    published, stranger = make_key("ES384"), make_key("ES384")
    httpserver.expect_request("/jwks.json").respond_with_json(jwks_of(published))
    issuers = issuers_with({"iss": ISS, "jwks_url": httpserver.url_for("/jwks.json"), "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())

    error = refused(authenticator, sign(stranger, claims()))
    assert "checked again after a refresh" in error.diagnostics
    assert fetches(httpserver, "/jwks.json") == 2

    # More made-up kids right away cause no more fetches (no fetch amplification)...
    refused(authenticator, sign(make_key("ES384"), claims()))
    assert fetches(httpserver, "/jwks.json") == 2
    # ...and a known kid is served from the cache.
    authenticator.authenticate(bearer(sign(published, claims())), AUDIENCE)
    assert fetches(httpserver, "/jwks.json") == 2


def test_fetched_key_set_is_cached_until_its_ttl(httpserver: HTTPServer) -> None:
    key = make_key("RS384")
    httpserver.expect_request("/jwks.json").respond_with_json(jwks_of(key))
    issuers = issuers_with({"iss": ISS, "jwks_url": httpserver.url_for("/jwks.json"), "fhir_servers": []})
    now = [1000.0]
    jwks = JwksCache(ttl_seconds=300, clock=lambda: now[0])
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), jwks)

    authenticator.authenticate(bearer(sign(key, claims())), AUDIENCE)
    authenticator.authenticate(bearer(sign(key, claims())), AUDIENCE)
    assert fetches(httpserver, "/jwks.json") == 1
    now[0] += 301
    authenticator.authenticate(bearer(sign(key, claims())), AUDIENCE)
    assert fetches(httpserver, "/jwks.json") == 2


def test_jwks_url_failure_is_refused(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/jwks.json").respond_with_data("down", status=503)
    issuers = issuers_with({"iss": ISS, "jwks_url": httpserver.url_for("/jwks.json"), "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())
    assert "answered HTTP 503" in refused(authenticator, sign(make_key("ES384"), claims())).diagnostics


def test_allowlisted_jku_is_used(httpserver: HTTPServer) -> None:
    key = make_key("ES256")
    jku = httpserver.url_for("/.well-known/jwks.json")
    httpserver.expect_request("/.well-known/jwks.json").respond_with_json(jwks_of(key))
    issuers = issuers_with({"iss": ISS, "jku_allowlist": [jku], "algorithms": ["ES256"], "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())

    authenticator.authenticate(bearer(sign(key, claims(), jku=jku)), AUDIENCE)
    assert fetches(httpserver, "/.well-known/jwks.json") == 1


def test_jku_not_allowlisted_is_refused_without_fetching_it(httpserver: HTTPServer) -> None:
    key = make_key("ES256")
    allowed = httpserver.url_for("/.well-known/jwks.json")
    attacker_jku = httpserver.url_for("/attacker/jwks.json")
    httpserver.expect_request("/attacker/jwks.json").respond_with_json(jwks_of(key))
    issuers = issuers_with({"iss": ISS, "jku_allowlist": [allowed], "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())

    error = refused(authenticator, sign(key, claims(), jku=attacker_jku))

    assert "is not an allowed JWK Set URL" in error.diagnostics
    assert len(httpserver.log) == 0


def test_jku_redirect_is_not_followed(httpserver: HTTPServer) -> None:
    key = make_key("ES256")
    allowed = httpserver.url_for("/.well-known/jwks.json")
    httpserver.expect_request("/.well-known/jwks.json").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/attacker/jwks.json")}
    )
    httpserver.expect_request("/attacker/jwks.json").respond_with_json(jwks_of(key))
    issuers = issuers_with({"iss": ISS, "jku_allowlist": [allowed], "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())

    assert "answered HTTP 302" in refused(authenticator, sign(key, claims(), jku=allowed)).diagnostics
    assert fetches(httpserver, "/attacker/jwks.json") == 0


def test_issuer_known_only_by_jku_needs_a_jku(httpserver: HTTPServer) -> None:
    issuers = issuers_with({"iss": ISS, "jku_allowlist": [httpserver.url_for("/jwks.json")], "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())
    assert "no jku header" in refused(authenticator, sign(make_key("ES384"), claims())).diagnostics
    assert len(httpserver.log) == 0


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_base_url", "url_root", "path", "expected"),
    [
        (None, "http://localhost/", "/cds-services/x", "http://localhost/cds-services/x"),
        (
            "https://cds.example.org",
            "http://10.0.0.5:8000/",
            "/cds-services/x",
            "https://cds.example.org/cds-services/x",
        ),
        ("https://cds.example.org/", "http://localhost/", "cds-services", "https://cds.example.org/cds-services"),
        (None, "http://localhost/prefix/", "/cds-services", "http://localhost/prefix/cds-services"),
    ],
)
def test_endpoint_url(public_base_url: str | None, url_root: str, path: str, expected: str) -> None:
    assert endpoint_url(public_base_url, url_root, path) == expected


def test_audience_matches_rule() -> None:
    assert audience_matches(AUDIENCE, AUDIENCE) is None
    assert audience_matches([AUDIENCE], AUDIENCE) is None
    assert audience_matches([AUDIENCE, AUDIENCE + "2"], AUDIENCE) is not None
    assert audience_matches(42, AUDIENCE) is not None


# --- concurrency ----------------------------------------------------------------------------------


def test_concurrent_replays_accept_exactly_one_and_fetch_keys_once(httpserver: HTTPServer) -> None:
    key = make_key("ES384")
    httpserver.expect_request("/jwks.json").respond_with_json(jwks_of(key))
    issuers = issuers_with({"iss": ISS, "jwks_url": httpserver.url_for("/jwks.json"), "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, MemoryReplayCache(), JwksCache())
    token = sign(key, claims())
    start = threading.Barrier(16)

    def attempt() -> bool:
        start.wait()
        try:
            authenticator.authenticate(bearer(token), AUDIENCE)
        except AuthError as error:
            assert "already used" in error.diagnostics
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: attempt(), range(16)))

    assert results.count(True) == 1
    assert fetches(httpserver, "/jwks.json") == 1
