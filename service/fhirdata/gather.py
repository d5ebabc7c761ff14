"""Prefetch resolution (CDS Hooks 2.0 §Prefetch) and the parallel FHIR fallback under one deadline."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from service.config import Settings
from service.envelope import HookRequest
from service.fhirdata import bundles
from service.fhirdata.client import Deadline, FetchJob, KeyResult, fetch_key, fhir_executor, fhir_session
from service.fhirdata.messages import message
from service.fhirdata.record import DataUnavailable, FhirServerRefused, PatientRecord, Source
from service.fhirdata.servers import ServerBase, is_allowed, parse_base
from service.fhirdata.templates import Query, TemplateError, render
from service.logs import get_logger

log = get_logger("fhirdata")

# Keys without which no usable answer is possible: if one of these (when the templates ask for it) cannot
# be read from prefetch or the FHIR server, gather raises DataUnavailable (HTTP 412).
# - patient: the Patient confirms whose record this is (every other key is checked against its id) and
#   carries the birth date; without it no criterion can be anchored to the patient.
# Every other key is optional: when it cannot be read, the record says so in ``gaps`` and the decision
# becomes indeterminate (technical) for what depended on it, never a 412 (CRD found-32).
# Separately, when the templates ask for nothing in this list, gather raises only if no key at all could
# be read (nothing usable arrived).
REQUIRED_KEYS: frozenset[str] = frozenset({"patient"})


@dataclass(frozen=True)
class _Pending:
    query: Query
    continuation: str | None = None  # next link of a paginated prefetch Bundle (its first page is kept)


@dataclass(frozen=True)
class _ServerChoice:
    base: ServerBase | None
    reason: str | None  # why no query can be sent (a gap text), when base is None
    refused: bool  # the request named a server, and configuration forbids it


def _choose_server(request: HookRequest, settings: Settings, allowed_servers: Sequence[str] | None) -> _ServerChoice:
    """Decide, before any connection is opened, whether the request's fhirServer may be queried."""
    if not request.fhir_server:
        return _ServerChoice(None, message("gap", "no_fhir_server"), refused=False)
    try:
        base = parse_base(request.fhir_server)
    except ValueError:
        return _ServerChoice(None, message("gap", "server_invalid"), refused=True)
    if settings.fhir_require_https and base.scheme != "https":
        return _ServerChoice(None, message("gap", "server_http"), refused=True)
    if not is_allowed(base, settings.allowed_fhir_servers) or (
        allowed_servers is not None and not is_allowed(base, allowed_servers)
    ):
        return _ServerChoice(None, message("gap", "server_not_allowed"), refused=True)
    return _ServerChoice(base, None, refused=False)


def _prefetch_usable(value: Any, query: Query) -> bool:
    kind = value.get("resourceType")
    return kind in ("Bundle", query.resource_type)


def _count_notes(key: str, outcomes: int, wrong_type: int) -> list[str]:
    notes = []
    if outcomes:
        notes.append(message("note", "outcomes", key=key, count=outcomes))
    if wrong_type:
        notes.append(message("note", "wrong_type", key=key, count=wrong_type))
    return notes


def _fetch_all(
    jobs: list[FetchJob], settings: Settings, deadline: Deadline, session: requests.Session
) -> dict[str, KeyResult]:
    """Run every job in parallel; whatever has not finished by the deadline is abandoned, not awaited."""
    executor = fhir_executor()
    futures: dict[Future[KeyResult], FetchJob] = {
        executor.submit(
            fetch_key, session, job, deadline, settings.fhir_page_cap, settings.fhir_connect_timeout_seconds
        ): job
        for job in jobs
    }
    done, not_done = wait(futures, timeout=max(0.0, deadline.remaining()))
    results: dict[str, KeyResult] = {}
    for future in not_done:
        future.cancel()  # not started yet: never starts; running: its result is ignored
        job = futures[future]
        reason = message("gap", "deadline", seconds=settings.fhir_deadline_seconds)
        if job.pages_done:
            reason = message("gap", "incomplete", reason=reason, pages=job.pages_done)
        results[job.key] = KeyResult(gap=reason, pages=job.pages_done)
        log.info("fhir key abandoned at the deadline", extra={"key": job.key})
    for future in done:
        job = futures[future]
        error = future.exception()
        if error is not None:
            log.warning("fhir key failed", extra={"key": job.key, "error": type(error).__name__})
            results[job.key] = KeyResult(gap=message("gap", "internal", error=type(error).__name__))
        else:
            results[job.key] = future.result()
    return results


def _grouped(reasons: Mapping[str, str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        by_reason.setdefault(reason, []).append(key)
    return "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items())


def gather(
    request: HookRequest,
    templates: Mapping[str, str],
    settings: Settings,
    allowed_servers: Sequence[str] | None = None,
    session: requests.Session | None = None,
) -> PatientRecord:
    """The patient's data for ``templates`` (key -> prefetch template): prefetch first, then the FHIR server.

    ``allowed_servers`` (e.g. the calling issuer's) further restricts ``settings.allowed_fhir_servers``.
    Returns within ``settings.fhir_deadline_seconds`` (+ a little bookkeeping) whatever the server does.
    Raises DataUnavailable (FhirServerRefused when the server may not be queried) only when a
    REQUIRED_KEYS key, or every key, could not be read.
    """
    started = time.monotonic()
    deadline = Deadline(settings.fhir_deadline_seconds)
    prefetch = request.prefetch if isinstance(request.prefetch, dict) else {}
    resources: dict[str, list[dict[str, Any]]] = {}
    gaps: dict[str, str] = {}
    sources: dict[str, Source] = {}
    notes: list[str] = []
    pending: dict[str, _Pending] = {}
    queries: dict[str, Query] = {}

    for key, template in templates.items():
        try:
            query = queries[key] = render(template, request.context)
        except TemplateError as exc:
            gaps[key] = str(exc)
            continue
        if key not in prefetch:
            pending[key] = _Pending(query)
            continue
        value = prefetch[key]
        if value is None:  # the EHR says there is no such data: do not query (CDS Hooks 2.0)
            resources[key], sources[key] = [], "null"
            continue
        if bundles.is_resource(value) and bundles.only_outcomes(value):  # the EHR's error report: as if absent
            notes.append(message("note", "prefetch_outcome", key=key))
            pending[key] = _Pending(query)
            continue
        if not bundles.is_resource(value) or not _prefetch_usable(value, query):
            notes.append(message("note", "prefetch_unusable", key=key))
            pending[key] = _Pending(query)
            continue
        found = bundles.entries(value, query.resource_type)
        resources[key], sources[key] = found.resources, "prefetch"
        notes.extend(_count_notes(key, found.outcomes, found.wrong_type))
        link = bundles.next_link(value) if value["resourceType"] == "Bundle" and not query.is_read else None
        if link:  # the EHR paginated its prefetch: the rest is read from its server
            pending[key] = _Pending(query, continuation=link)

    server = _choose_server(request, settings, allowed_servers) if pending else _ServerChoice(None, None, False)
    if pending and server.base is None:
        for key, item in pending.items():
            reason = server.reason or ""
            gaps[key] = message("gap", "incomplete", reason=reason, pages=1) if item.continuation else reason
    elif pending and server.base is not None:
        base = server.base
        headers: dict[str, str] = {}
        if request.fhir_authorization is not None:
            headers["Authorization"] = f"Bearer {request.fhir_authorization.access_token}"
        jobs = [
            FetchJob(
                key=key,
                query=item.query,
                # A relative next link in a prefetch Bundle is relative to the EHR's FHIR base.
                url=urljoin(f"{base.url}/", item.continuation)
                if item.continuation
                else f"{base.url}/{item.query.relative_url}",
                server=base,
                headers=headers,
                pages_done=1 if item.continuation else 0,
            )
            for key, item in pending.items()
        ]
        results = _fetch_all(jobs, settings, deadline, session or fhir_session())
        for key, item in pending.items():
            result = results[key]
            if result.gap is not None:
                gaps[key] = result.gap
            notes.extend(_count_notes(key, result.outcomes, result.wrong_type))
            if item.continuation:
                resources[key].extend(result.resources)
            elif result.pages or result.resources:
                resources[key], sources[key] = result.resources, "fhir"

    try:
        reference_server: ServerBase | None = parse_base(request.fhir_server) if request.fhir_server else None
    except ValueError:
        reference_server = None
    for key, items in resources.items():
        kept = [r for r in items if bundles.belongs_to(r, request.patient_id, reference_server)]
        if len(kept) != len(items):
            notes.append(message("note", "other_patient", key=key, count=len(items) - len(kept)))
            resources[key] = kept
            if not kept and key not in gaps and queries[key].is_read:
                gaps[key] = message("gap", "other_patient")

    log.info(
        "patient data gathered",
        extra={
            "hookInstance": request.hook_instance,
            "keysBySource": {
                kind: sorted(k for k, s in sources.items() if s == kind) for kind in ("prefetch", "null", "fhir")
            },
            "gapKeys": sorted(gaps),
            "durationMs": round((time.monotonic() - started) * 1000, 1),
        },
    )
    missing = {k: gaps[k] for k in templates if k in REQUIRED_KEYS and k in gaps}
    if templates and not any(k in sources for k in templates):
        missing = {k: gaps.get(k, "") for k in templates}
    if missing:
        if server.refused and server.reason in missing.values():
            raise FhirServerRefused(message("diagnostics", "refused", details=_grouped(missing)), gaps)
        raise DataUnavailable(message("diagnostics", "unavailable", details=_grouped(missing)), gaps)
    return PatientRecord(resources=resources, gaps=gaps, notes=tuple(notes), sources=sources)
