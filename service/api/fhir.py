"""A read-only FHIR endpoint for the policy's documentation Questionnaire (DTR fetches it by canonical)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from service.api.common import state
from service.errors import ApiError

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

FHIR_JSON = "application/fhir+json"


def _fhir(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=200, mimetype=FHIR_JSON)


@bp.get("/Questionnaire/<questionnaire_id>")
def read_questionnaire(questionnaire_id: str) -> Response:
    questionnaire: dict[str, Any] = state().policy.questionnaire
    if questionnaire.get("id") != questionnaire_id:
        raise ApiError(404, "not-found", f"No Questionnaire with id '{questionnaire_id}'.", "id")
    return _fhir(questionnaire)


@bp.get("/Questionnaire")
def search_questionnaire() -> Response:
    """Search by ``url`` (canonical, optionally ``|version``) or ``_id``; returns a searchset Bundle."""
    questionnaire: dict[str, Any] = state().policy.questionnaire
    url = request.args.get("url")
    wanted_id = request.args.get("_id")
    match = True
    if url is not None:
        canonical, _, version = url.partition("|")
        match = canonical == questionnaire.get("url") and (not version or version == questionnaire.get("version"))
    if wanted_id is not None:
        match = match and wanted_id == questionnaire.get("id")
    entries = [{"fullUrl": f"{request.url_root}fhir/Questionnaire/{questionnaire['id']}", "resource": questionnaire}]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1 if match else 0,
        "entry": entries if match else [],
    }
    if not match:
        del bundle["entry"]
    return _fhir(bundle)
