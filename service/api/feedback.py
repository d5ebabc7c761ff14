"""POST /cds-services/{id}/feedback: CDS Hooks 2.0 feedback on cards, stored in the decision log.

The body is validated once against ``service/schemas/feedback.schema.json`` (built at import).
Repeats are idempotent (200 again); feedback for a card the log does not know is kept, unlinked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from flask import Blueprint, Response, current_app, g
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from service.api.common import json_body
from service.envelope import describe_validation_error
from service.errors import ApiError
from service.records.store import FeedbackItem, OverrideReason

bp = Blueprint("feedback", __name__)

ANONYMOUS_ISSUER = "anonymous"


def _load_validator() -> Draft202012Validator:
    text = resources.files("service.schemas").joinpath("feedback.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


_FEEDBACK = _load_validator()


def _expression(error: ValidationError) -> str:
    parts = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        # Point at the missing field itself, not at the object that lacks it.
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            parts.append(missing[0])
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return path.lstrip(".") or "$"


def first_error(body: Any) -> ValidationError | None:
    """The shallowest schema violation (it names the field a client must fix), or None."""
    errors = sorted(_FEEDBACK.iter_errors(body), key=lambda e: (len(e.absolute_path), e.message))
    return errors[0] if errors else None


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 date-time (the schema checked the shape) -> aware UTC datetime; ValueError if impossible."""
    parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return parsed.astimezone(UTC)


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """Validate a feedback request body; raise ApiError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "The feedback body must be a JSON object.", "$")
    error = first_error(body)
    if error is not None:
        where = _expression(error)
        raise ApiError(400, "invalid", f"Invalid feedback at {where}: {describe_validation_error(error)}", where)
    items = []
    for index, entry in enumerate(body["feedback"]):
        try:
            timestamp = parse_timestamp(entry["outcomeTimestamp"])
        except ValueError:
            where = f"feedback[{index}].outcomeTimestamp"
            raise ApiError(
                400, "invalid", f"Invalid feedback at {where}: {entry['outcomeTimestamp']!r} is not a date-time", where
            ) from None
        override = entry.get("overrideReason") or {}
        reason = override.get("reason")
        items.append(
            FeedbackItem(
                card_uuid=entry["card"],
                outcome=entry["outcome"],
                outcome_timestamp=timestamp,
                accepted_suggestions=tuple(s["id"] for s in entry.get("acceptedSuggestions") or []),
                override_reason=(
                    OverrideReason(system=reason["system"], code=reason["code"], display=reason.get("display"))
                    if reason
                    else None
                ),
                user_comment=override.get("userComment"),
            )
        )
    return items


def _caller_issuer() -> str:
    caller = g.get("caller")
    issuer = getattr(caller, "issuer", None)
    return issuer if isinstance(issuer, str) and issuer else ANONYMOUS_ISSUER


@bp.post("/cds-services/<service_id>/feedback")
def receive_feedback(service_id: str) -> Response:
    extensions = current_app.extensions["islet_cds"]
    g.service_id = service_id
    if service_id not in extensions["service_ids"]:
        raise ApiError(404, "not-found", f"No CDS Service with id '{service_id}'.", "id")
    if "state" in extensions:
        # Inside the full app: the same JWT check as hook calls (sets g.caller).
        from service.api.common import authenticate

        authenticate()
    items = parse_feedback(json_body())
    extensions["records"].record_feedback(service_id, _caller_issuer(), items)
    # CDS Hooks 2.0 specifies no response body for feedback.
    return Response(status=200)
