"""The scenario fixtures are valid FHIR R4 and well-formed CDS Hooks 2.0 requests, and up to date.

Every resource parses with ``fhir.resources.R4B``; every request has the shape an EHR sends (hook,
hookInstance, fhirServer, context.userId/patientId, a draftOrders collection Bundle, all eleven
prefetch keys); the files on disk are exactly what ``python fhir_fixtures/build.py`` writes.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from datetime import date
from types import ModuleType
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.scenarios import (
    BUILD_SCRIPT,
    ORDER_TYPES,
    PREFETCH_KEYS,
    SCENARIO_DIR,
    Resource,
    Scenario,
    bundle_resources,
    hook_orders,
    load_scenarios,
    reference_of,
)

SCENARIOS = load_scenarios()
IDS = [s.name for s in SCENARIOS]
UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
HOOKS_WITH_DRAFT_ORDERS = ("order-sign", "order-select")
KNOWN_HOOKS = (*HOOKS_WITH_DRAFT_ORDERS, "appointment-book")
HCPCS_SYSTEMS = frozenset(
    {
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "http://www.nlm.nih.gov/research/umls/hcpcs",
        "https://www.cms.gov/research/umls/hcpccs",
    }
)
QUESTIONNAIRE = "https://healthplan.org/fhir/Questionnaire/islet-transplant-documentation|2026.1.0"
SUBJECT_MEMBER = {"Coverage": "beneficiary", "Device": "patient", "Appointment": None}


def load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fhir_fixtures_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass/typing machinery looks the module up by name
    spec.loader.exec_module(module)
    return module


def all_resources(scenario: Scenario) -> Iterator[Resource]:
    """Every FHIR resource of the request: prefetch values (Bundles and their entries) and context."""
    for key in PREFETCH_KEYS:
        value = scenario.prefetch.get(key)
        if value is None:
            continue
        yield value
        if value.get("resourceType") == "Bundle":
            yield from bundle_resources(value)
    for member in ("draftOrders", "appointments"):
        bundle = scenario.request["context"].get(member)
        if bundle is not None:
            yield bundle
            yield from bundle_resources(bundle)


# -- FHIR R4 validity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_every_resource_parses_as_fhir_r4(scenario: Scenario) -> None:
    for resource in all_resources(scenario):
        model = get_fhir_model_class(resource["resourceType"])
        model.model_validate(resource)  # raises on any invalid or unknown element


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_ids_are_valid_and_unique(scenario: Scenario) -> None:
    seen: set[str] = set()
    for resource in all_resources(scenario):
        if resource["resourceType"] in ("Bundle", "OperationOutcome"):
            continue
        assert FHIR_ID.match(resource["id"]), resource["id"]
        ref = reference_of(resource)
        assert ref not in seen, f"duplicate {ref}"
        seen.add(ref)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_every_resource_is_about_the_patient(scenario: Scenario) -> None:
    patient_ref = f"Patient/{scenario.request['context']['patientId']}"
    for resource in all_resources(scenario):
        kind = resource["resourceType"]
        if kind in ("Bundle", "OperationOutcome", "Patient"):
            continue
        if kind == "Appointment":
            actors = [p["actor"]["reference"] for p in resource["participant"]]
            assert patient_ref in actors
            continue
        member = SUBJECT_MEMBER.get(kind, "subject")
        assert member is not None
        assert resource[member]["reference"] == patient_ref, f"{reference_of(resource)}.{member}"


# -- CDS Hooks 2.0 request shape ----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_request_has_the_cds_hooks_shape(scenario: Scenario) -> None:
    req = scenario.request
    assert set(req) <= {"hook", "hookInstance", "fhirServer", "fhirAuthorization", "context", "prefetch"}
    assert req["hook"] in KNOWN_HOOKS
    assert UUID_SHAPE.match(req["hookInstance"])
    assert req["fhirServer"] == "https://ehr.example.org/fhir"
    context = req["context"]
    assert re.match(r"^(Practitioner|PractitionerRole)/[A-Za-z0-9\-.]+$", context["userId"])
    assert context["patientId"] == req["prefetch"]["patient"]["id"]
    if req["hook"] in HOOKS_WITH_DRAFT_ORDERS:
        bundle = context["draftOrders"]
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
        orders = bundle_resources(bundle)
        assert orders and all(o["resourceType"] in ORDER_TYPES for o in orders)
        assert all(o["status"] == "draft" and o["intent"] == "order" for o in orders)
    if req["hook"] == "order-select":
        drafts = {reference_of(o) for o in bundle_resources(context["draftOrders"])}
        assert context["selections"] and set(context["selections"]) <= drafts
    if req["hook"] == "appointment-book":
        bundle = context["appointments"]
        assert bundle["resourceType"] == "Bundle" and bundle_resources(bundle)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_prefetch_has_all_eleven_keys_each_a_patient_bundle_or_null(scenario: Scenario) -> None:
    prefetch = scenario.prefetch
    assert set(prefetch) == set(PREFETCH_KEYS)
    assert prefetch["patient"]["resourceType"] == "Patient"
    for key in PREFETCH_KEYS[1:]:
        value = prefetch[key]
        if value is None:
            continue
        if value["resourceType"] == "OperationOutcome":  # a failed prefetch (DESIGN.md §5: absent)
            continue
        assert value["resourceType"] == "Bundle" and value["type"] == "searchset", key
        assert value["total"] == len(value["entry"]) > 0, key


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_active_coverage_with_the_plan(scenario: Scenario) -> None:
    coverages = bundle_resources(scenario.prefetch["coverage"])
    assert [c["status"] for c in coverages] == ["active"]
    assert coverages[0]["payor"][0]["display"] == "THP Health Plan"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_orders_are_realistic_crd_orders(scenario: Scenario) -> None:
    _, orders = hook_orders(scenario.request)
    for order in orders:
        if order["resourceType"] == "Appointment":
            assert order["start"] and order["serviceType"][0]["coding"]
            continue
        assert order["subject"]["reference"].startswith("Patient/")
        assert order["authoredOn"] and order["requester"]["reference"]
        if order["resourceType"] == "ServiceRequest":
            assert order["code"]["coding"][0]["system"] and order["code"]["coding"][0]["code"]
        if order["resourceType"] == "MedicationRequest" and "donislecel" in str(order):
            med = order["medicationCodeableConcept"]
            assert med["text"] == "donislecel-jujn (Lantidra)"
            assert {(c["system"] in HCPCS_SYSTEMS, c["code"]) for c in med["coding"]} & {
                (True, "J3590"),
                (True, "C9399"),
            }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_questionnaire_responses_answer_our_questionnaire(scenario: Scenario) -> None:
    for qr in bundle_resources(scenario.prefetch["questionnaireResponses"]):
        assert qr["questionnaire"] == QUESTIONNAIRE
        assert qr["status"] == "completed"
        for item in qr["item"]:
            link_id = item["linkId"]
            assert re.match(r"^[AB]\d(\.(date|detail))?$", link_id), link_id
            (answer,) = item["answer"]
            if "." in link_id:
                assert "valueDate" in answer or "valueString" in answer
            else:
                assert "valueBoolean" in answer


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_scenario_header(scenario: Scenario) -> None:
    assert scenario.path.stem == scenario.name
    assert scenario.title and scenario.covers
    assert isinstance(scenario.today, date)
    assert set(scenario.policy_overrides) <= {"lantidra_note"}
    orders = {reference_of(o) for o in hook_orders(scenario.request)[0]}
    assert set(scenario.expected) <= orders, "an expected decision names an order the hook is not about"


# -- the generator ------------------------------------------------------------------------------------


def test_files_on_disk_are_what_build_py_writes() -> None:
    build = load_build_module()
    built: dict[str, Any] = build.build_all()
    on_disk = {p.stem: p.read_text(encoding="utf-8") for p in SCENARIO_DIR.glob("*.json")}
    assert sorted(on_disk) == sorted(built), "run: python fhir_fixtures/build.py"
    for name, doc in built.items():
        assert on_disk[name] == build.render(doc), f"{name}.json is stale: run python fhir_fixtures/build.py"


def test_build_is_deterministic() -> None:
    build = load_build_module()
    first = {n: build.render(d) for n, d in build.build_all().items()}
    second = {n: build.render(d) for n, d in build.build_all().items()}
    assert first == second


def test_readme_lists_every_scenario() -> None:
    readme = (SCENARIO_DIR.parent / "README.md").read_text(encoding="utf-8")
    for s in SCENARIOS:
        assert f"`{s.name}`" in readme, s.name


def test_normalisation_is_exercised() -> None:
    """At least one fixture uses a HCPCS alias system and one an ICD-10-PCS code."""
    systems = {
        coding.get("system")
        for s in SCENARIOS
        for resource in all_resources(s)
        for member in ("code", "medicationCodeableConcept")
        for coding in (resource.get(member) or {}).get("coding", [])
    }
    assert systems & (HCPCS_SYSTEMS - {"http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"})
    assert "http://www.cms.gov/Medicare/Coding/ICD10" in systems
    assert "http://hl7.org/fhir/sid/icd-10-cm" in systems


def test_example_requests_are_the_scenarios_requests() -> None:
    import fhir_fixtures.build as build_module

    built = build_module.build_all()
    for file_name, scenario_name in build_module.EXAMPLE_REQUESTS.items():
        on_disk = (build_module.REQUEST_DIR / f"{file_name}.json").read_text(encoding="utf-8")
        assert on_disk == build_module.render(built[scenario_name]["request"])


def test_fixture_prefetch_keys_are_the_policy_files() -> None:
    from service.policy import load_policy

    assert set(PREFETCH_KEYS) == set(load_policy().prefetch)
