"""A throw-away EHR identity for trying islet-cds with authentication on.

    python docs/examples/demo_issuer.py init DIR          # key pair + trusted-issuers.yaml in DIR
    python docs/examples/demo_issuer.py token DIR URL     # a fresh ES384 JWT whose aud is URL

The issuers file trusts the demo EHR's public key (inline JWKS, exchanged "out of band"); the token
is what the EHR would send as ``Authorization: Bearer <JWT>`` on each call (CDS Hooks 2.0).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://ehr.demo.example/cds-client"
KID = "demo-ehr-key-1"


def init(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP384R1())
    (directory / "ehr-private-key.pem").write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
    public_jwk.update({"kid": KID, "use": "sig", "alg": "ES384"})
    issuers = {"issuers": [{"iss": ISSUER, "jwks": {"keys": [public_jwk]}, "algorithms": ["ES384"],
                            "fhir_servers": []}]}
    path = directory / "trusted-issuers.yaml"
    path.write_text(yaml.safe_dump(issuers, sort_keys=False), encoding="utf-8")
    return path


def token(directory: Path, audience: str) -> str:
    key = serialization.load_pem_private_key((directory / "ehr-private-key.pem").read_bytes(), password=None)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": audience, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "init":
        print(init(Path(argv[1])))
        return 0
    if len(argv) == 3 and argv[0] == "token":
        print(token(Path(argv[1]), argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
