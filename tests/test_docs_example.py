"""The README's worked example for authentication (docs/examples/demo_issuer.py) works as written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

SIGN_URL = "http://localhost/cds-services/islet-transplant-order-sign"


def _demo() -> Any:
    spec = importlib.util.spec_from_file_location("demo_issuer", ROOT / "docs" / "examples" / "demo_issuer.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_issuer_signs_calls_the_service_accepts_once(make_app: Any, tmp_path: Path) -> None:
    demo = _demo()
    issuers = demo.init(tmp_path / "demo")
    app = make_app({"auth": "required", "public_base_url": "http://localhost", "trusted_issuers": str(issuers)})
    client = app.test_client()
    body = json.loads((ROOT / "fhir_fixtures" / "requests" / "order-sign-allogeneic-met.json").read_text())
    token = demo.token(tmp_path / "demo", SIGN_URL)

    def call(auth: str | None) -> Any:
        headers = {"Authorization": auth} if auth else {}
        return client.post("/cds-services/islet-transplant-order-sign", json=body, headers=headers)

    assert call(None).status_code == 401
    accepted = call(f"Bearer {token}")
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    replayed = call(f"Bearer {token}")
    assert replayed.status_code == 401
    assert "replay" in replayed.get_json(force=True)["issue"][0]["diagnostics"]
    other_audience = demo.token(tmp_path / "demo", "http://localhost/cds-services/islet-transplant-order-select")
    assert call(f"Bearer {other_audience}").status_code == 401


def test_auth_required_without_issuers_refuses_to_start(make_app: Any) -> None:
    import pytest

    with pytest.raises(Exception, match="TRUSTED_ISSUERS"):
        make_app({"auth": "required", "public_base_url": "http://localhost"})


def test_auth_required_without_public_base_url_refuses_to_start(make_app: Any) -> None:
    import pytest

    from service.config import ConfigError

    # The aud check must not trust the Host header: the public URL is configuration.
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        make_app({"auth": "required"})
