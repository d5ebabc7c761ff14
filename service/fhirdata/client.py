"""The FHIR client: one pooled session per process, GETs under a shared deadline, paging, retries.

Never logs URLs (they carry patient ids), bodies or headers (the bearer token): only key names,
status codes, page counts and durations.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from service.fhirdata import bundles
from service.fhirdata.messages import message
from service.fhirdata.servers import ServerBase, within
from service.fhirdata.templates import Query
from service.logs import get_logger

log = get_logger("fhirdata")

# Parallel queries: 10 prefetch keys per hook call, a few hook calls at once per process.
POOL_SIZE = 32
MAX_ATTEMPTS = 3  # first try + 2 retries, on connection errors and 503 only (GET is idempotent)
BACKOFF_SECONDS = 0.05  # doubled per retry
RETRY_AFTER_MAX_SECONDS = 1.0  # a longer Retry-After is not waited for: the hook call cannot afford it
MAX_ANSWER_BYTES = 20 * 1024 * 1024  # one page; a larger answer is a gap, not a memory problem
_CHUNK_BYTES = 64 * 1024


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class Deadline:
    """One point in time (monotonic clock) that every query of a hook call must finish by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()


class _NoCookies(DefaultCookiePolicy):
    """The session is shared by every hook call: a cookie set for one EHR user must not reach another."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


_lock = threading.Lock()
_session: requests.Session | None = None
_executor: ThreadPoolExecutor | None = None


def _forget_after_fork() -> None:
    # gunicorn forks workers: a child must not share its parent's sockets, threads or (held) lock.
    global _lock, _session, _executor
    _lock, _session, _executor = threading.Lock(), None, None


os.register_at_fork(after_in_child=_forget_after_fork)


def fhir_session() -> requests.Session:
    """The process's pooled session (thread-safe to share: per-call headers, no cookies, no env auth)."""
    global _session
    with _lock:
        if _session is None:
            session = requests.Session()
            # No proxy or .netrc credentials from the environment: every request's target is checked here.
            session.trust_env = False
            session.cookies.set_policy(_NoCookies())
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=POOL_SIZE, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers.update({"Accept": "application/fhir+json", "User-Agent": "islet-cds"})
            _session = session
        return _session


def fhir_executor() -> ThreadPoolExecutor:
    """The process's worker pool for parallel FHIR queries."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="fhirdata")
        return _executor


@dataclass
class KeyResult:
    """What one key's query (all its pages) produced."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    gap: str | None = None
    pages: int = 0
    outcomes: int = 0
    wrong_type: int = 0


@dataclass(frozen=True)
class FetchJob:
    key: str
    query: Query
    url: str  # first URL to GET (the rendered template, or a prefetch Bundle's next link)
    server: ServerBase
    headers: dict[str, str] = field(repr=False)  # holds the bearer token: never printed
    pages_done: int = 0  # pages already read (a paginated prefetch Bundle counts as one)


class _Failed(Exception):
    """A GET gave nothing usable; ``reason`` is a safe gap text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _read_body(response: requests.Response, deadline: Deadline) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _Failed(message("gap", "too_large", limit=MAX_ANSWER_BYTES))
        if deadline.remaining() <= 0:
            raise _Failed(message("gap", "deadline", seconds=deadline.seconds))
    return bytes(body)


def _get_json(
    session: requests.Session, job: FetchJob, url: str, deadline: Deadline, connect_timeout: float
) -> dict[str, Any]:
    """GET ``url`` and return the FHIR resource it answers, retrying only what is safe to retry."""
    attempt = 1
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _Failed(message("gap", "deadline", seconds=deadline.seconds))
        started = time.monotonic()
        retry_in: float | None = None
        try:
            with session.get(
                url,
                headers=job.headers,
                timeout=(min(connect_timeout, remaining), remaining),
                allow_redirects=False,  # a redirect could leave the allowed server
                stream=True,
            ) as response:
                status = response.status_code
                log.debug("fhir GET", extra={"key": job.key, "status": status, "durationMs": _ms(started)})
                if status == 503:
                    retry_in = _retry_after(response.headers.get("Retry-After"))
                    retry_in = BACKOFF_SECONDS * 2 ** (attempt - 1) if retry_in is None else retry_in
                    if attempt >= MAX_ATTEMPTS or retry_in > RETRY_AFTER_MAX_SECONDS:
                        raise _Failed(message("gap", "http_status", status=status))
                elif 300 <= status < 400:
                    raise _Failed(message("gap", "redirect", status=status))
                elif status != 200:
                    raise _Failed(message("gap", "http_status", status=status))
                else:
                    body = _read_body(response, deadline)
        except requests.ConnectionError as exc:  # includes ConnectTimeout and a body read that stalled
            log.debug("fhir GET", extra={"key": job.key, "error": type(exc).__name__, "durationMs": _ms(started)})
            if attempt >= MAX_ATTEMPTS:
                raise _Failed(message("gap", "connection")) from None
            retry_in = BACKOFF_SECONDS * 2 ** (attempt - 1)
        except requests.Timeout as exc:  # a read timeout: it was set to the time left, so the deadline is spent
            log.debug("fhir GET", extra={"key": job.key, "error": type(exc).__name__, "durationMs": _ms(started)})
            raise _Failed(message("gap", "deadline", seconds=deadline.seconds)) from None
        except requests.RequestException as exc:
            log.debug("fhir GET", extra={"key": job.key, "error": type(exc).__name__, "durationMs": _ms(started)})
            raise _Failed(message("gap", "request_failed")) from None
        if retry_in is None:
            break
        if retry_in >= deadline.remaining():
            raise _Failed(message("gap", "deadline", seconds=deadline.seconds))
        time.sleep(retry_in)
        attempt += 1
    try:
        answer = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        raise _Failed(message("gap", "not_json")) from None
    if not bundles.is_resource(answer):
        raise _Failed(message("gap", "not_fhir"))
    return dict(answer)


def _add_page(result: KeyResult, job: FetchJob, answer: dict[str, Any]) -> None:
    found = bundles.entries(answer, job.query.resource_type)
    result.resources.extend(found.resources)
    result.outcomes += found.outcomes
    result.wrong_type += found.wrong_type


def fetch_key(
    session: requests.Session, job: FetchJob, deadline: Deadline, page_cap: int, connect_timeout: float
) -> KeyResult:
    """Read one key: the first GET, then ``next`` links (same server only) up to ``page_cap`` pages."""
    result = KeyResult(pages=job.pages_done)
    started = time.monotonic()
    url: str | None = job.url
    try:
        while url is not None:
            if not within(job.server, url):
                raise _Failed(message("gap", "foreign_next"))
            if result.pages >= page_cap:
                raise _Failed(message("gap", "page_cap", cap=page_cap))
            answer = _get_json(session, job, url, deadline, connect_timeout)
            expected = job.query.resource_type if job.query.is_read else "Bundle"
            if answer["resourceType"] != expected:
                raise _Failed(message("gap", "wrong_type", expected=expected, actual=answer["resourceType"]))
            result.pages += 1
            _add_page(result, job, answer)
            link = None if job.query.is_read else bundles.next_link(answer)
            url = urljoin(url, link) if link else None
    except _Failed as failure:
        partial = result.pages > 0 or bool(result.resources)
        result.gap = (
            message("gap", "incomplete", reason=failure.reason, pages=result.pages) if partial else failure.reason
        )
    log.debug(
        "fhir key read",
        extra={
            "key": job.key,
            "pages": result.pages,
            "entries": len(result.resources),
            "gap": result.gap is not None,
            "durationMs": _ms(started),
        },
    )
    return result
