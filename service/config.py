"""Settings: built-in defaults, then ``ISLET_CDS_*`` environment variables, then a mapping.

Like Flask's tutorial app, ``create_app(mapping)`` takes overrides (tests use that); the environment
is the operator's interface. Every variable is documented in README.md's configuration table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PREFIX = "ISLET_CDS_"


class ConfigError(ValueError):
    """A setting has a value the service cannot use; the message names the variable."""


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / 'instance' / 'islet-cds.sqlite'}"


@dataclass(frozen=True)
class Settings:
    # Records: SQLite file by default (created on first start); PostgreSQL by URL.
    database_url: str = field(default_factory=_default_database_url)
    # Replay cache shared by every worker and replica; in-process when unset.
    redis_url: str | None = None
    # Browser origins allowed by CORS (the CDS Hooks sandbox calls from the browser). "*" = any.
    cors_origins: tuple[str, ...] = ()
    # FHIR servers the service may call (base URLs). "*" = any: development only.
    allowed_fhir_servers: tuple[str, ...] = ()
    # Plain-http FHIR servers are refused unless this is false (loopback test servers).
    fhir_require_https: bool = True
    # Trusted JWT issuers: path to a YAML or JSON file.
    trusted_issuers: str | None = None
    # "required" (default) or "disabled" (development only; logs a warning at start).
    auth: str = "required"
    # Discovery may be "open" (default: Inferno and EHRs read it without a JWT) or "protected".
    discovery_auth: str = "open"
    # Accepted JWT algorithms (never none, never HMAC).
    jwt_algorithms: tuple[str, ...] = ("ES256", "ES384", "RS384", "RS256")
    jwt_leeway_seconds: int = 60
    # Public base URL as clients see it (for the JWT aud check behind a proxy), e.g. https://cds.example.org
    public_base_url: str | None = None
    # Largest request body accepted, bytes.
    max_body_bytes: int = 5 * 1024 * 1024
    # FHIR fallback: one deadline per hook call, and per-request timeouts.
    fhir_deadline_seconds: float = 3.0
    fhir_connect_timeout_seconds: float = 1.0
    fhir_page_cap: int = 10
    # Where the documentation card's SMART link launches DTR; default from cards.yaml.
    dtr_launch_url: str | None = None
    # Policy file (YAML); default: the packaged policy.
    policy_path: str | None = None
    log_level: str = "INFO"
    # An endpoint that parses the body and returns a fixed answer: the benchmarks' floor. Off by default.
    bench_endpoints: bool = False

    @property
    def auth_enabled(self) -> bool:
        return self.auth != "disabled"


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{PREFIX}{name.upper()} must be true or false, not {value!r}")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _coerce(name: str, annotation: str, value: Any) -> Any:
    try:
        if annotation == "bool":
            return _as_bool(name, value)
        if annotation == "int":
            return int(value)
        if annotation == "float":
            return float(value)
        if annotation.startswith("tuple"):
            return _as_tuple(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}: {value!r} is not a valid {annotation}") from exc
    if value is None or value == "":
        return None if "None" in annotation else value
    return str(value)


def require_public_base_url(settings: Settings) -> None:
    """With authentication on, the JWT ``aud`` is checked against the configured public URL, never the
    request's Host header (which the caller controls)."""
    if settings.auth_enabled and not settings.public_base_url:
        raise ConfigError(
            f"{PREFIX}PUBLIC_BASE_URL is required when authentication is on: a JWT's aud must equal the URL "
            "clients call, and that URL must not be taken from the request's Host header "
            "(e.g. https://cds.example.org)"
        )


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = PREFIX + f.name.upper()
        if key in env:
            values[f.name] = _coerce(f.name, str(f.type), env[key])
    for name, value in (overrides or {}).items():
        name = name.lower()
        if name.startswith(PREFIX.lower()):
            name = name[len(PREFIX) :]
        match = [f for f in fields(Settings) if f.name == name]
        if not match:
            raise ConfigError(f"Unknown setting {name!r}")
        values[name] = _coerce(name, str(match[0].type), value)
    settings = Settings(**values)
    if settings.auth not in ("required", "disabled"):
        raise ConfigError(f"{PREFIX}AUTH must be 'required' or 'disabled', not {settings.auth!r}")
    if settings.discovery_auth not in ("open", "protected"):
        raise ConfigError(f"{PREFIX}DISCOVERY_AUTH must be 'open' or 'protected'")
    if settings.public_base_url and not settings.public_base_url.startswith(("https://", "http://")):
        raise ConfigError(f"{PREFIX}PUBLIC_BASE_URL must be an absolute http(s) URL")
    bad = {a for a in settings.jwt_algorithms if a.upper() == "NONE" or a.upper().startswith("HS")}
    if bad:
        raise ConfigError(f"{PREFIX}JWT_ALGORITHMS may not include {sorted(bad)}: never none, never HMAC")
    return settings
