"""Discovery checked against the rules of CDS Hooks 2.0 (checklist §1.2, §1.4) and CRD (§2.8).

The rules are written out here, not compared with a stored copy of the output, so a change that
breaks a rule fails even if someone regenerates a snapshot.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from flask.testing import FlaskClient

# Root-level context fields usable as prefetch tokens, per hook definition (checklist §1.12, "Tok" = Yes).
TOKEN_FIELDS = {
    "order-sign": {"userId", "patientId", "encounterId"},
    "order-select": {"userId", "patientId", "encounterId"},
    "appointment-book": {"userId", "patientId", "encounterId"},
    "order-dispatch": {"patientId", "performer"},
}
USER_TOKENS = {"userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
TOKEN = re.compile(r"\{\{(.*?)\}\}")
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
# Portable query subset (CDS Hooks 2.0 "Prefetch query restrictions")
ALLOWED_PREFIXES = ("eq", "lt", "gt", "ge", "le")


def discovery_rule_violations(doc: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), list):
        return ["discovery must be an object with a 'services' array"]
    ids: set[tuple[str, str]] = set()
    for i, svc in enumerate(doc["services"]):
        where = f"services[{i}]"
        for key in ("hook", "description", "id"):
            if not isinstance(svc.get(key), str) or not svc[key].strip():
                problems.append(f"{where}.{key} is required and must be a non-empty string")
        for key in ("title", "usageRequirements"):
            if key in svc and not isinstance(svc[key], str):
                problems.append(f"{where}.{key} must be a string")
        for key, value in svc.items():
            if value is None or value in ("", [], {}):
                problems.append(f"{where}.{key} must be omitted rather than empty or null")
        if (svc.get("hook"), svc.get("id")) in ids:
            problems.append(f"{where}: duplicate id {svc.get('id')} for the same hook")
        ids.add((svc.get("hook"), svc.get("id")))
        if isinstance(svc.get("id"), str) and not re.fullmatch(r"[A-Za-z0-9\-._~]+", svc["id"]):
            problems.append(f"{where}.id must be usable as a URL path segment")
        problems += _prefetch_violations(where, svc.get("hook"), svc.get("prefetch", {}))
        problems += _extension_violations(where, svc.get("extension"))
    return problems


def _prefetch_violations(where: str, hook: Any, prefetch: Any) -> list[str]:
    if not isinstance(prefetch, dict):
        return [f"{where}.prefetch must be an object"]
    problems = []
    fields = TOKEN_FIELDS.get(hook, set())
    for key, template in prefetch.items():
        at = f"{where}.prefetch.{key}"
        if not isinstance(template, str):
            problems.append(f"{at} must be a string")
            continue
        for token in TOKEN.findall(template):
            token = token.strip()
            if token in USER_TOKENS:
                continue
            if not token.startswith("context.") or token[len("context."):] not in fields:
                problems.append(f"{at}: token {{{{{token}}}}} is not a root-level prefetch token of {hook}")
        path, _, query = template.partition("?")
        if "://" in path or path.startswith("/"):
            problems.append(f"{at} must be a relative FHIR URL")
        parts = path.split("/")
        if not RESOURCE_TYPE.match(parts[0]) or len(parts) > 2 or (len(parts) == 2 and query != ""):
            problems.append(f"{at} must be a read (Type/id) or a type-level search (Type?params)")
        if len(parts) == 1 and not query:
            problems.append(f"{at}: a search needs parameters (at least the patient)")
        for name, value in parse_qsl(query, keep_blank_values=True):
            base = name.split(":")[0]
            if name.endswith(":in") or ":" not in name or base in ("_count", "_sort"):
                pass
            else:
                problems.append(f"{at}: modifier in {name} is outside the portable subset")
            if base in ("date", "_lastUpdated") and value[:2].isalpha() and value[:2] not in ALLOWED_PREFIXES:
                problems.append(f"{at}: date prefix of {value} is outside eq|lt|gt|ge|le")
    return problems


def _extension_violations(where: str, extension: Any) -> list[str]:
    if not isinstance(extension, dict):
        return [f"{where}.extension must be an object carrying the CRD discovery extensions"]
    problems = []
    options = extension.get("davinci-crd.configuration-options")
    if not isinstance(options, list) or not options:
        problems.append(f"{where}: davinci-crd.configuration-options must be a non-empty array")
        options = []
    codes, names = set(), set()
    for j, opt in enumerate(options):
        at = f"{where}.extension.davinci-crd.configuration-options[{j}]"
        for key in ("code", "type", "name", "description"):
            if not isinstance(opt.get(key), str) or not opt[key].strip():
                problems.append(f"{at}.{key} is required (string)")
        if isinstance(opt.get("code"), str) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", opt["code"]):
            problems.append(f"{at}.code must be a plain JSON property name")
        if opt.get("type") not in ("boolean", "integer"):
            problems.append(f"{at}.type must be boolean or integer")
        default = opt.get("default")
        if "default" not in opt:
            problems.append(f"{at}.default is required by the CRD text")
        elif opt.get("type") == "boolean" and not isinstance(default, bool):
            problems.append(f"{at}.default must be a boolean")
        elif opt.get("type") == "integer" and (isinstance(default, bool) or not isinstance(default, int)):
            problems.append(f"{at}.default must be an integer")
        if opt.get("code") in codes or opt.get("name") in names:
            problems.append(f"{at}: code and name must be unique in the service (dev-8)")
        codes.add(opt.get("code"))
        names.add(opt.get("name"))
    versions = extension.get("davinci-crd.version")
    if not isinstance(versions, list) or not versions or not all(
        isinstance(v, str) and re.fullmatch(r"\d+\.\d+", v) for v in versions
    ):
        problems.append(f"{where}: davinci-crd.version must be a non-empty array of major.minor strings (dev-1)")
    return problems


def test_discovery_follows_cds_hooks_and_crd_rules(client: FlaskClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.is_json
    doc = response.get_json()
    assert discovery_rule_violations(doc) == []


def test_one_service_for_each_crd_order_hook(client: FlaskClient) -> None:
    hooks = sorted(s["hook"] for s in client.get("/cds-services").get_json()["services"])
    assert hooks == ["appointment-book", "order-dispatch", "order-select", "order-sign"]


def test_configuration_options_are_the_same_on_every_hook(client: FlaskClient) -> None:
    # dev-9: options SHOULD be consistent across hooks
    services = client.get("/cds-services").get_json()["services"]
    options = [s["extension"]["davinci-crd.configuration-options"] for s in services]
    assert all(o == options[0] for o in options)


def test_rule_checker_catches_broken_documents() -> None:
    broken = {
        "services": [
            {
                "hook": "order-sign",
                "id": "x y",
                "description": "",
                "prefetch": {
                    "orders": "ServiceRequest?_id={{context.draftOrders.ServiceRequest.id}}",
                    "abs": "https://ehr.example.org/Patient/{{context.patientId}}",
                    "bad": "Observation?patient={{context.patientId}}&date=sa2020",
                },
                "extension": {
                    "davinci-crd.configuration-options": [
                        {"code": "max-cards", "type": "integer", "name": "n", "description": "d", "default": True},
                        {"code": "x", "type": "string", "name": "n", "description": "d", "default": "a"},
                    ],
                    "davinci-crd.version": ["2"],
                },
            }
        ]
    }
    problems = "\n".join(discovery_rule_violations(broken))
    for expected in ("description is required", "URL path segment", "context.draftOrders", "relative FHIR URL",
                     "date prefix", "default must be an integer", "type must be boolean or integer",
                     "unique", "major.minor"):
        assert expected in problems


def test_discovery_can_be_protected(make_app: Any) -> None:
    app = make_app({"discovery_auth": "protected", "auth": "disabled"})
    # With authentication disabled, "protected" has nothing to check: still 200.
    assert app.test_client().get("/cds-services").status_code == 200
