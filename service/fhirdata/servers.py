"""Which FHIR servers may be contacted: base URLs normalised and compared on segment boundaries.

A request names its own ``fhirServer``; without this check the service could be made to send requests
(with a bearer token) anywhere (SSRF). Everything here runs before any connection is opened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

ANY_SERVER = "*"  # allows every server: development only
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class ServerBase:
    """A FHIR base URL reduced to what identifies it: scheme, host, port and path prefix."""

    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash; "" for the root

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{host}{'' if default else f':{self.port}'}{self.path}"

    def contains(self, other: ServerBase) -> bool:
        """True when ``other`` is this base or lies under it (path prefix on a segment boundary)."""
        if (self.scheme, self.host, self.port) != (other.scheme, other.host, other.port):
            return False
        return other.path == self.path or other.path.startswith(self.path + "/")


def _split(url: str, *, allow_query: bool) -> ServerBase:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not accepted")
    if parts.fragment or (parts.query and not allow_query):
        raise ValueError("a base URL has no query or fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("no host")
    port = parts.port or _DEFAULT_PORTS[scheme]  # .port raises ValueError when out of range
    # Dot segments (also percent-encoded) could climb out of an allowed path prefix.
    segments = unquote(parts.path).split("/")
    if any(seg in (".", "..") for seg in segments):
        raise ValueError("dot segments are not accepted")
    return ServerBase(scheme, host, port, parts.path.rstrip("/"))


def parse_base(url: str) -> ServerBase:
    """Normalise a FHIR base URL; ValueError if it is not a plain http(s) base URL."""
    return _split(url, allow_query=False)


def within(base: ServerBase, url: str) -> bool:
    """True when the full request ``url`` (query allowed) lies under ``base``."""
    try:
        target = _split(url, allow_query=True)
    except ValueError:
        return False
    return base.contains(target)


def is_allowed(base: ServerBase, allowed: Iterable[str]) -> bool:
    """True when ``base`` lies under one of the ``allowed`` base URLs (``*`` allows any)."""
    for entry in allowed:
        if entry.strip() == ANY_SERVER:
            return True
        try:
            if parse_base(entry).contains(base):
                return True
        except ValueError:
            continue  # a malformed allowlist entry allows nothing
    return False
