"""Test helpers for service.trust: signing keys made with `cryptography`, and CDS Hooks JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from service.config import Settings, load_settings
from service.trust.issuers import TrustedIssuers, parse_trusted_issuers

ISS = "https://ehr.example.org/cds-client"
AUDIENCE = "https://cds.example.org/cds-services/islet-order-sign"

_CURVES: dict[str, ec.EllipticCurve] = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}


@dataclass(frozen=True)
class SigningKey:
    alg: str
    kid: str
    private_key: PrivateKeyTypes

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        elif isinstance(public, rsa.RSAPublicKey):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        else:
            raise TypeError(f"unexpected key type {type(public).__name__}")
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        return jwk

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(alg: str, kid: str | None = None) -> SigningKey:
    private_key: PrivateKeyTypes
    if alg in _CURVES:
        private_key = ec.generate_private_key(_CURVES[alg])
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(alg=alg, kid=kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", private_key=private_key)


def claims(iss: str = ISS, aud: Any = AUDIENCE, **overrides: Any) -> dict[str, Any]:
    """CDS Hooks 2.0 claims, valid now; pass name=None to drop a claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    payload.update(overrides)
    return {name: value for name, value in payload.items() if value is not None}


def sign(key: SigningKey, payload: dict[str, Any], **header_overrides: Any) -> str:
    """A JWS signed by ``key``; header typ JWT + kid, overridable (None drops a field)."""
    headers: dict[str, Any] = {"typ": "JWT", "kid": key.kid}
    headers.update(header_overrides)
    headers = {name: value for name, value in headers.items() if value is not None}
    return jwt.encode(payload, key.private_key, algorithm=key.alg, headers=headers)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def handmade_token(header: dict[str, Any], payload: dict[str, Any], hmac_secret: bytes | None = None) -> str:
    """A token PyJWT refuses to make: alg none (empty signature) or HMAC keyed with a public key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_secret is not None:
        signature = hmac.new(hmac_secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def settings(**overrides: Any) -> Settings:
    return load_settings(environ={}, overrides=overrides)


def issuers_with(*entries: dict[str, Any], allowed: tuple[str, ...] | None = None) -> TrustedIssuers:
    algorithms = allowed or settings().jwt_algorithms
    return parse_trusted_issuers({"issuers": list(entries)}, algorithms)
