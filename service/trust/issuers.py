"""Trusted JWT issuers, read once at start-up from a YAML or JSON file (``settings.trusted_issuers``).

The file format is documented, with a commented example, in ``docs/trusted-issuers.example.yaml``.
It is validated by ``trusted-issuers.schema.json`` (beside this module) and a few cross-field rules
that JSON Schema cannot say; any problem raises ``TrustConfigError`` naming the field, so a broken
file stops the service at start rather than letting it accept (or refuse) calls unpredictably.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jwt
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match


class TrustConfigError(ValueError):
    """The trusted-issuers file cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class TrustedIssuer:
    """One CDS Client allowed to call the service, and where its public keys come from."""

    iss: str
    # Keys exchanged out of band (CDS Hooks 2.0: "the JWK Set SHALL be exchanged out-of-band" when no jku).
    inline_keys: tuple[Mapping[str, Any], ...] = ()
    jwks_url: str | None = None
    # URLs a token's `jku` header may name; a `jku` outside this list is refused before any fetch.
    jku_allowlist: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    # FHIR base URLs this issuer's requests may name in `fhirServer` ("*" = any the service allows).
    fhir_servers: tuple[str, ...] = ()
    tenant: str | None = None


class TrustedIssuers(Mapping[str, TrustedIssuer]):
    """Issuers keyed by their exact `iss` string (no normalisation: CDS Hooks compares iss exactly)."""

    def __init__(self, issuers: Sequence[TrustedIssuer]) -> None:
        self._by_iss = {issuer.iss: issuer for issuer in issuers}

    def __getitem__(self, iss: str) -> TrustedIssuer:
        return self._by_iss[iss]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_iss)

    def __len__(self) -> int:
        return len(self._by_iss)


def _schema_validator() -> Draft202012Validator:
    text = resources.files("service.trust").joinpath("trusted-issuers.schema.json").read_text("utf-8")
    return Draft202012Validator(json.loads(text))


_VALIDATOR = _schema_validator()


def _field_path(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document root)"


def _describe(error: ValidationError) -> str:
    """A schema error as '<field>: <reason>', with plain reasons for the combinators."""
    path = list(error.absolute_path)
    where = _field_path(path)
    is_issuer_entry = len(path) == 2 and path[0] == "issuers"
    if is_issuer_entry and error.validator == "anyOf":
        return f"{where}: needs a key source: one of jwks, jwks_url or jku_allowlist"
    if is_issuer_entry and error.validator == "not":
        return f"{where}: give either jwks or jwks_url, not both"
    return f"{where}: {error.message}"


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrustConfigError(f"{path}: cannot read the trusted-issuers file ({exc.strerror})") from exc
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TrustConfigError(f"{path}: not valid YAML/JSON: {exc}") from exc


def parse_trusted_issuers(
    document: Any, allowed_algorithms: Sequence[str], source: str = "trusted issuers"
) -> TrustedIssuers:
    """Validate a parsed trusted-issuers document and build the issuer table.

    ``allowed_algorithms`` is ``settings.jwt_algorithms``: an issuer may narrow it, never widen it.
    """
    error = best_match(_VALIDATOR.iter_errors(document))
    if error is not None:
        raise TrustConfigError(f"{source}: {_describe(error)}")

    issuers: list[TrustedIssuer] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["issuers"]):
        where = f"issuers[{index}]"
        iss = entry["iss"]
        if iss in seen:
            raise TrustConfigError(f"{source}: {where}.iss: issuer {iss!r} is listed twice")
        seen.add(iss)

        algorithms = tuple(entry.get("algorithms", allowed_algorithms))
        not_allowed = [alg for alg in algorithms if alg not in allowed_algorithms]
        if not_allowed:
            raise TrustConfigError(
                f"{source}: {where}.algorithms: {not_allowed} not in the service's accepted algorithms "
                f"{list(allowed_algorithms)} (ISLET_CDS_JWT_ALGORITHMS)"
            )

        inline_keys = tuple(entry.get("jwks", {}).get("keys", ()))
        kids: set[str] = set()
        for key_index, key in enumerate(inline_keys):
            key_where = f"{where}.jwks.keys[{key_index}]"
            if key["kid"] in kids:
                raise TrustConfigError(f"{source}: {key_where}.kid: kid {key['kid']!r} is not unique")
            kids.add(key["kid"])
            if "d" in key:
                # A private key in a config file is a leak waiting to happen; refuse it outright.
                raise TrustConfigError(f"{source}: {key_where}.d: a private key does not belong here")
            try:
                jwt.PyJWK(dict(key))
            except jwt.PyJWTError as exc:
                raise TrustConfigError(f"{source}: {key_where}: not a usable public key ({exc})") from exc

        issuers.append(
            TrustedIssuer(
                iss=iss,
                inline_keys=inline_keys,
                jwks_url=entry.get("jwks_url"),
                jku_allowlist=tuple(entry.get("jku_allowlist", ())),
                algorithms=algorithms,
                fhir_servers=tuple(entry["fhir_servers"]),
                tenant=entry.get("tenant"),
            )
        )
    return TrustedIssuers(issuers)


def load_trusted_issuers(path: str | Path, allowed_algorithms: Sequence[str]) -> TrustedIssuers:
    """Read and validate the trusted-issuers file (``.json`` as JSON, anything else as YAML)."""
    file_path = Path(path)
    return parse_trusted_issuers(_read_document(file_path), allowed_algorithms, source=str(file_path))
