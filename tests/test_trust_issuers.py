"""Loading the trusted-issuers file: valid files load; broken ones raise TrustConfigError naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.trust.issuers import TrustConfigError, load_trusted_issuers
from service.trust.verify import build_authenticator
from tests.trust_tokens import make_key, settings

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = ("ES256", "ES384", "RS384", "RS256")


def write(tmp_path: Path, document: Any, name: str = "issuers.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document)
    path.write_text(text, encoding="utf-8")
    return path


def valid_issuer(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "iss": "https://ehr.example.org",
        "jwks": {"keys": [make_key("ES384").public_jwk]},
        "algorithms": ["ES384"],
        "fhir_servers": ["https://fhir.example.org/r4"],
        "tenant": "t-1",
    }
    entry.update(overrides)
    return {name: value for name, value in entry.items() if value is not None}


@pytest.mark.parametrize("name", ["issuers.yaml", "issuers.json"])
def test_valid_file_loads(tmp_path: Path, name: str) -> None:
    second = valid_issuer(
        iss="https://inferno.example.org",
        jwks=None,
        algorithms=None,
        tenant=None,
        jku_allowlist=["https://inferno.example.org/jwks.json"],
        fhir_servers=["*"],
    )
    issuers = load_trusted_issuers(write(tmp_path, {"issuers": [valid_issuer(), second]}, name), ALGORITHMS)

    first = issuers["https://ehr.example.org"]
    assert first.algorithms == ("ES384",)
    assert first.fhir_servers == ("https://fhir.example.org/r4",)
    assert first.tenant == "t-1"
    [inline_key] = first.inline_keys
    assert inline_key["kty"] == "EC" and inline_key["crv"] == "P-384"
    inferno = issuers["https://inferno.example.org"]
    assert inferno.algorithms == ALGORITHMS  # default: every algorithm the service accepts
    assert inferno.jku_allowlist == ("https://inferno.example.org/jwks.json",)
    assert len(issuers) == 2


def test_documented_example_loads_and_lists_the_sandbox() -> None:
    issuers = load_trusted_issuers(ROOT / "docs" / "trusted-issuers.example.yaml", ALGORITHMS)
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    assert sandbox.algorithms == ("ES256",)
    assert sandbox.jku_allowlist == ("https://sandbox.cds-hooks.org/.well-known/jwks.json",)


@pytest.mark.parametrize(
    ("entry", "field", "reason"),
    [
        (valid_issuer(iss=None), "issuers[0]", "'iss' is a required property"),
        (valid_issuer(fhir_servers=None), "issuers[0]", "'fhir_servers' is a required property"),
        (valid_issuer(algorithms=["HS256"]), "issuers[0].algorithms[0]", "HS256"),
        (valid_issuer(algorithms=["none"]), "issuers[0].algorithms[0]", "none"),
        (valid_issuer(algorithms=["ES512"]), "issuers[0].algorithms", "not in the service's accepted algorithms"),
        (valid_issuer(jwks=None), "issuers[0]", "needs a key source"),
        (valid_issuer(jwks_url="https://ehr.example.org/jwks"), "issuers[0]", "either jwks or jwks_url"),
        (valid_issuer(jwks_url="not a url", jwks=None), "issuers[0].jwks_url", "does not match"),
        (valid_issuer(fhir_servers="https://fhir.example.org"), "issuers[0].fhir_servers", "not of type 'array'"),
        (valid_issuer(colour="blue"), "issuers[0]", "'colour' was unexpected"),
        (
            valid_issuer(jwks={"keys": [{"kty": "EC", "kid": "k", "crv": "P-256", "x": "AA", "y": "AA"}]}),
            "issuers[0].jwks.keys[0]",
            "not a usable public key",
        ),
        (
            valid_issuer(jwks={"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}),
            "issuers[0].jwks.keys[0].kty",
            "is not one of",
        ),
    ],
)
def test_broken_entry_names_the_field(tmp_path: Path, entry: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(TrustConfigError) as caught:
        load_trusted_issuers(write(tmp_path, {"issuers": [entry]}), ALGORITHMS)
    message = str(caught.value)
    assert f": {field}: " in message
    assert reason in message


def test_duplicate_issuer_and_private_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrustConfigError, match=r"issuers\[1\]\.iss: .* listed twice"):
        load_trusted_issuers(write(tmp_path, {"issuers": [valid_issuer(), valid_issuer()]}), ALGORITHMS)
    private = dict(make_key("ES384").public_jwk, d="c2VjcmV0")
    with pytest.raises(TrustConfigError, match=r"issuers\[0\]\.jwks\.keys\[0\]\.d: a private key"):
        load_trusted_issuers(write(tmp_path, {"issuers": [valid_issuer(jwks={"keys": [private]})]}), ALGORITHMS)


def test_unreadable_or_unparsable_file(tmp_path: Path) -> None:
    with pytest.raises(TrustConfigError, match="cannot read"):
        load_trusted_issuers(tmp_path / "missing.yaml", ALGORITHMS)
    broken = tmp_path / "broken.yaml"
    broken.write_text("issuers: [unclosed", encoding="utf-8")
    with pytest.raises(TrustConfigError, match="not valid YAML/JSON"):
        load_trusted_issuers(broken, ALGORITHMS)
    with pytest.raises(TrustConfigError, match=r"\(document root\): 'issuers' is a required property"):
        load_trusted_issuers(write(tmp_path, {"issuer": []}), ALGORITHMS)


def test_build_authenticator(tmp_path: Path) -> None:
    with pytest.raises(TrustConfigError, match="ISLET_CDS_TRUSTED_ISSUERS"):
        build_authenticator(settings())
    path = write(tmp_path, {"issuers": [valid_issuer()]})
    authenticator = build_authenticator(settings(trusted_issuers=str(path)))
    assert authenticator.replay_cache.health()
