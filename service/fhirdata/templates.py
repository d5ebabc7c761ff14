"""CDS Hooks 2.0 prefetch templates: root-level context tokens substituted and URL-encoded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from service.fhirdata.messages import message

_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# CDS Hooks 2.0 user tokens: the id part of context.userId when it names a resource of this type.
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class TemplateError(ValueError):
    """The template cannot be turned into a query; the message is a safe gap reason."""


@dataclass(frozen=True)
class Query:
    """A rendered template: a relative URL, and the answer it expects."""

    relative_url: str  # e.g. "Condition?patient=123"
    resource_type: str  # the type read or searched
    is_read: bool  # True: one resource (type/id); False: a searchset Bundle


def _token_value(token: str, context: Mapping[str, Any]) -> str:
    if token in _USER_TOKENS:
        user = context.get("userId")
        prefix = _USER_TOKENS[token] + "/"
        if not isinstance(user, str) or not user.startswith(prefix):
            raise TemplateError(message("gap", "token_missing", token=token))
        return user[len(prefix) :]
    name = token.removeprefix("context.")
    if name == token or not name or "." in name:
        raise TemplateError(message("gap", "token_unsupported", token=token))
    value = context.get(name)
    if value is None:
        raise TemplateError(message("gap", "token_missing", token=token))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(message("gap", "token_unsupported", token=token))


def render(template: str, context: Mapping[str, Any]) -> Query:
    """Substitute the template's tokens from ``context``; TemplateError names what is missing."""

    def substitute(match: re.Match[str]) -> str:
        value = _token_value(match.group(1), context)
        if value in ("", ".", ".."):
            raise TemplateError(message("gap", "token_missing", token=match.group(1)))
        return quote(value, safe="")  # encodes "/", "?", "&", "#": a value cannot change the URL's shape

    rendered = _TOKEN.sub(substitute, template.strip())
    path = rendered.split("?", 1)[0]
    segments = path.split("/")
    if ":" in path or path.startswith("/") or not _RESOURCE_TYPE.fullmatch(segments[0]):
        raise TemplateError(message("gap", "template_invalid"))
    if len(segments) == 1:
        return Query(rendered, segments[0], is_read=False)
    if len(segments) == 2 and _FHIR_ID.fullmatch(segments[1]) and segments[1] not in (".", ".."):
        return Query(rendered, segments[0], is_read=True)
    raise TemplateError(message("gap", "template_invalid"))
