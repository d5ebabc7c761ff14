"""A loopback FHIR server (pytest-httpserver) that answers a scenario's prefetch queries as the EHR would."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from service.config import Settings
from service.fhirdata.templates import render

QueryKey = tuple[str, tuple[tuple[str, str], ...]]


def fhir_json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/fhir+json")


def _not_found() -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found", "diagnostics": "no such query"}]}


def serve_prefetch(httpserver: HTTPServer, prefetch: Mapping[str, Any], templates: Mapping[str, str],
                   context: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """Answer each template's URL with that key's prefetch value; return the FHIR base URL.

    ``null`` (no data) is answered with an empty searchset; an OperationOutcome (the EHR could not
    read it) with a 500, as a failing EHR would. ``extra`` maps further relative URLs to bodies.
    """
    base = httpserver.url_for("/fhir")
    answers: dict[QueryKey, tuple[Any, int]] = {}

    def key_of(relative: str) -> QueryKey:
        target = urlsplit(f"{base}/{relative}")
        return target.path, tuple(sorted(parse_qsl(target.query)))

    for key, template in templates.items():
        if key not in prefetch:
            continue
        value = prefetch[key]
        if value is None:
            value = {"resourceType": "Bundle", "type": "searchset", "total": 0}
        status = 500 if value.get("resourceType") == "OperationOutcome" else 200
        answers[key_of(render(template, context).relative_url)] = (value, status)
    for relative, body in (extra or {}).items():
        answers[key_of(relative)] = (body, 200)

    def answer(request: Request) -> Response:
        found = answers.get((request.path, tuple(sorted(parse_qsl(request.query_string.decode())))))
        return fhir_json(*found) if found is not None else fhir_json(_not_found(), 404)

    httpserver.expect_request(re.compile(r"^/fhir/")).respond_with_handler(answer)
    return base


def settings_for(base: str, **overrides: Any) -> Settings:
    """Settings that let the service call the loopback FHIR server at ``base`` (plain http allowed)."""
    values: dict[str, Any] = {
        "fhir_require_https": False,
        "allowed_fhir_servers": (base,),
        "fhir_deadline_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)
