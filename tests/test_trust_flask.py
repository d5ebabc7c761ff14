"""require_caller through real Flask requests (test client): the aud is the URL actually called."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from flask import Flask, Response, jsonify

from service.config import Settings
from service.errors import ApiError
from service.trust.flask_auth import require_caller
from service.trust.replay import MemoryReplayCache
from service.trust.verify import Authenticator
from tests.trust_tokens import ISS, SigningKey, claims, issuers_with, make_key, settings, sign

FHIR = "https://fhir.example.org/r4"


def make_app(app_settings: Settings, key: SigningKey) -> Flask:
    """A bare app with the same ApiError -> OperationOutcome mapping as service.app."""
    authenticator = Authenticator(
        app_settings,
        issuers_with({"iss": ISS, "jwks": {"keys": [key.public_jwk]}, "fhir_servers": [FHIR]}),
        MemoryReplayCache(),
    )
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> Response:
        return jsonify(asdict(require_caller(app_settings, authenticator)))

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        response = jsonify(exc.outcome())
        response.status_code = exc.status
        response.headers.update(exc.headers or {})
        return response

    return app


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return make_key("ES384")


def post(app: Flask, token: str | None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().post("/cds-services/islet-order-sign", headers=headers, **kwargs)


def test_valid_token_for_the_called_url_gives_the_caller(key: SigningKey) -> None:
    app = make_app(settings(), key)
    response = post(app, sign(key, claims(aud="http://localhost/cds-services/islet-order-sign")))
    assert response.status_code == 200
    assert response.get_json()["issuer"] == ISS
    assert response.get_json()["fhir_servers"] == [FHIR]


def test_public_base_url_is_the_audience_behind_a_proxy(key: SigningKey) -> None:
    app = make_app(settings(public_base_url="https://cds.example.org"), key)
    local = post(app, sign(key, claims(aud="http://localhost/cds-services/islet-order-sign")))
    assert local.status_code == 401
    public = post(app, sign(key, claims(aud="https://cds.example.org/cds-services/islet-order-sign")))
    assert public.status_code == 200


def test_refusal_is_401_with_operation_outcome_and_www_authenticate(key: SigningKey) -> None:
    app = make_app(settings(), key)
    response = post(app, sign(key, claims(aud="http://localhost/cds-services/another-service")))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    [issue] = response.get_json()["issue"]
    assert issue["code"] == "login"
    assert "is not this endpoint" in issue["diagnostics"]

    missing = post(app, None)
    assert missing.status_code == 401
    assert "Authorization header missing" in missing.get_json()["issue"][0]["diagnostics"]


def test_replay_is_401_security(key: SigningKey) -> None:
    app = make_app(settings(), key)
    token = sign(key, claims(aud="http://localhost/cds-services/islet-order-sign"))
    assert post(app, token).status_code == 200
    replay = post(app, token)
    assert replay.status_code == 401
    assert replay.get_json()["issue"][0]["code"] == "security"


def test_auth_disabled_gives_the_anonymous_caller(key: SigningKey) -> None:
    app = make_app(settings(auth="disabled"), key)
    response = post(app, None)
    assert response.status_code == 200
    assert response.get_json() == {
        "issuer": "anonymous",
        "tenant": None,
        "subject": None,
        "jti": None,
        "fhir_servers": [],
    }


def test_auth_required_without_authenticator_is_a_wiring_error() -> None:
    app = Flask(__name__)
    with app.test_request_context("/cds-services/x", method="POST"), pytest.raises(RuntimeError):
        require_caller(settings(), None)
