"""The JWT matrix through the real app: every bad token is a 401 with an OperationOutcome, and the call
leaves no decision in the log; a fhirServer the issuer may not name is refused without a connection."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask import Flask
from pytest_httpserver import HTTPServer

from tests.conftest import islet_order, order_sign_request
from tests.test_api_hooks import full_prefetch
from tests.trust_tokens import claims, handmade_token, make_key, sign

SIGN_PATH = "/cds-services/islet-transplant-order-sign"
AUD = f"http://localhost{SIGN_PATH}"
ISS = "https://ehr.example.org/cds-client"
KEYS = {alg: make_key(alg) for alg in ("ES256", "ES384", "RS384")}
AUTH = {"auth": "required", "public_base_url": "http://localhost"}
OTHER_KEY = make_key("ES256", kid=KEYS["ES256"].kid)  # same kid, different key: a forged signature


def issuers_file(tmp_path: Path, fhir_servers: list[str] | None = None) -> str:
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": [{
        "iss": ISS,
        "jwks": {"keys": [k.public_jwk for k in KEYS.values()]},
        "fhir_servers": fhir_servers if fhir_servers is not None else ["https://ehr.example.org/fhir"],
    }]}))
    return str(path)


@pytest.fixture
def auth_app(make_app: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_app({**AUTH, "trusted_issuers": issuers_file(tmp_path)})


def call(app: Flask, token: str | None, body: dict[str, Any] | None = None) -> Any:
    body = body or order_sign_request(islet_order(), prefetch=full_prefetch())
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return app.test_client().post(SIGN_PATH, data=json.dumps(body), content_type="application/json",
                                  headers=headers), body


def now() -> int:
    return int(time.time())


ES256 = KEYS["ES256"]
BAD_TOKENS: dict[str, Callable[[], str | None]] = {
    "no token": lambda: None,
    "alg none": lambda: handmade_token({"alg": "none", "typ": "JWT", "kid": ES256.kid}, claims(ISS, AUD)),
    "HS256 signed with the public key": lambda: handmade_token(
        {"alg": "HS256", "typ": "JWT", "kid": ES256.kid}, claims(ISS, AUD), hmac_secret=ES256.public_pem),
    "bad signature": lambda: sign(OTHER_KEY, claims(ISS, AUD)),
    "expired": lambda: sign(ES256, claims(ISS, AUD, iat=now() - 4000, exp=now() - 3600)),
    "nbf in the future": lambda: sign(ES256, claims(ISS, AUD, nbf=now() + 3600)),
    "wrong aud": lambda: sign(ES256, claims(ISS, "http://localhost/cds-services/islet-transplant-order-select")),
    "aud array with another audience": lambda: sign(ES256, claims(ISS, [AUD, "https://other.example/x"])),
    "missing jti": lambda: sign(ES256, claims(ISS, AUD, jti=None)),
    "unknown issuer": lambda: sign(ES256, claims("https://unknown.example/cds", AUD)),
    "unknown kid": lambda: sign(make_key("ES256", kid="nobody-knows"), claims(ISS, AUD)),
}


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_good_tokens_are_accepted(auth_app: Flask, alg: str) -> None:
    response, _ = call(auth_app, sign(KEYS[alg], claims(ISS, AUD)))
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_401_and_nothing_is_recorded(auth_app: Flask, case: str) -> None:
    response, body = call(auth_app, BAD_TOKENS[case]())
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    outcome = response.get_json(force=True)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] in ("login", "security") and outcome["issue"][0]["diagnostics"]
    records = auth_app.extensions["islet_cds"]["records"]
    assert records.invocations(body["hookInstance"]) == []
    assert records.get(body["hookInstance"]) == []


def test_replayed_jti_is_401_and_recorded_once(auth_app: Flask) -> None:
    token = sign(ES256, claims(ISS, AUD))
    first, body = call(auth_app, token)
    assert first.status_code == 200
    again, _ = call(auth_app, token, body)
    assert again.status_code == 401
    assert "replay" in again.get_json(force=True)["issue"][0]["diagnostics"]
    assert len(auth_app.extensions["islet_cds"]["records"].invocations(body["hookInstance"])) == 1


def test_protected_discovery_needs_a_token(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app({**AUTH, "trusted_issuers": issuers_file(tmp_path), "discovery_auth": "protected"})
    client = app.test_client()
    assert client.get("/cds-services").status_code == 401
    token = sign(ES256, claims(ISS, "http://localhost/cds-services"))
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_open_discovery_needs_none(auth_app: Flask) -> None:
    assert auth_app.test_client().get("/cds-services").status_code == 200


@pytest.mark.parametrize("issuer_may_name_it", [False, True])
def test_fhir_server_not_allowed_for_the_issuer_is_refused_without_a_connection(
        make_app: Callable[..., Flask], tmp_path: Path, httpserver: HTTPServer, issuer_may_name_it: bool) -> None:
    base = httpserver.url_for("/fhir")
    # The service-wide list allows the loopback server; the issuer may name it only in the control case.
    issuer_servers = [base] if issuer_may_name_it else ["https://ehr.example.org/fhir"]
    app = make_app({**AUTH, "trusted_issuers": issuers_file(tmp_path, issuer_servers),
                    "allowed_fhir_servers": base, "fhir_require_https": False})
    body = order_sign_request(islet_order())
    body["fhirServer"] = base
    body["fhirAuthorization"] = {"access_token": "secret-token", "token_type": "Bearer", "expires_in": 30,
                                 "scope": "patient/*.read", "subject": "islet-cds"}
    response, _ = call(app, sign(ES256, claims(ISS, AUD)), body)
    assert response.status_code == 412, response.get_data(as_text=True)  # the server has no data either way
    if issuer_may_name_it:
        assert httpserver.log  # the control: the same request does reach an allowed server
        assert all(r.headers.get("Authorization") == "Bearer secret-token" for r, _ in httpserver.log)
    else:
        assert httpserver.log == []


def test_replay_is_refused_across_two_app_instances_sharing_redis(make_app: Callable[..., Flask],
                                                                  tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    config = {**AUTH, "trusted_issuers": issuers_file(tmp_path), "redis_url": url}
    first_instance, second_instance = make_app(config), make_app(config)
    token = sign(ES256, claims(ISS, AUD, jti=f"shared-{uuid.uuid4()}"))
    accepted, body = call(first_instance, token)
    assert accepted.status_code == 200
    replayed, _ = call(second_instance, token, body)
    assert replayed.status_code == 401
    assert "replay" in replayed.get_json(force=True)["issue"][0]["diagnostics"]
