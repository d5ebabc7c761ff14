"""The (system, code) matcher: system aliases, ICD dots, is-a families with excludes, never displays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet as R4BValueSet

from service.terminology import (
    CPT,
    HCPCS,
    ICD10CM,
    ValueSet,
    ValueSetError,
    display_code,
    load_valuesets,
    normalize,
    normalize_system,
    parse_valueset,
)

VALUESET_DIR = (
    Path(__file__).resolve().parent.parent
    / "service"
    / "policies"
    / "pancreatic-islet-cell-transplantation"
    / "valuesets"
)


@pytest.fixture(scope="module")
def valuesets() -> dict[str, ValueSet]:
    return load_valuesets(VALUESET_DIR)


@pytest.mark.parametrize(
    "alias",
    [
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "http://www.nlm.nih.gov/research/umls/hcpcs",
        "https://www.cms.gov/research/umls/hcpccs",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets/",
        "urn:oid:2.16.840.1.113883.6.285",
        " HTTP://WWW.CMS.GOV/Medicare/Coding/HCPCSReleaseCodeSets ",
    ],
)
def test_hcpcs_aliases_normalise_to_the_tho_canonical(alias: str, valuesets: dict[str, ValueSet]) -> None:
    assert normalize_system(alias) == HCPCS
    assert valuesets["trigger-route"].contains(alias, "G0341")


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("urn:oid:2.16.840.1.113883.6.12", CPT),
        ("https://www.ama-assn.org/go/cpt/", CPT),
        ("urn:oid:2.16.840.1.113883.6.90", ICD10CM),
        ("https://snomed.info/sct", "http://snomed.info/sct"),
        ("urn:oid:2.16.840.1.113883.6.1", "http://loinc.org"),
        ("urn:oid:2.16.840.1.113883.6.88", "http://www.nlm.nih.gov/research/umls/rxnorm"),
        ("https://example.org/fhir/CodeSystem/x/", "http://example.org/fhir/CodeSystem/x"),
    ],
)
def test_other_aliases(alias: str, canonical: str) -> None:
    assert normalize_system(alias) == canonical


def test_icd10_codes_match_with_or_without_dot_and_display_back_with_it(valuesets: dict[str, ValueSet]) -> None:
    t1d = valuesets["type1-diabetes"]
    assert t1d.contains(ICD10CM, "E10.9") and t1d.contains(ICD10CM, "E109") and t1d.contains(ICD10CM, "e10.65")
    assert normalize(ICD10CM, "e10.65") == (ICD10CM, "E1065")
    assert display_code(ICD10CM, "E1065") == "E10.65"
    assert display_code(CPT, "0584T") == "0584T"


def test_is_a_family_with_exclude(valuesets: dict[str, ValueSet]) -> None:
    t1d = valuesets["type1-diabetes"]
    assert t1d.contains(ICD10CM, "E10")
    assert t1d.contains(ICD10CM, "E10.641")
    assert not t1d.contains(ICD10CM, "E10.A1")  # presymptomatic type 1 diabetes is excluded
    assert not t1d.contains(ICD10CM, "E11.9")
    assert not t1d.contains("http://snomed.info/sct", "E10.9")  # right code, wrong system
    assert not t1d.contains("http://snomed.info/sct", "609562003")  # MODY is not type 1 diabetes


def test_matching_never_uses_the_display(valuesets: dict[str, ValueSet]) -> None:
    t1d = valuesets["type1-diabetes"]
    assert t1d.first_match([("http://snomed.info/sct", "Type 1 diabetes mellitus")]) is None
    assert t1d.first_match([("http://snomed.info/sct", "44054006"), normalize(ICD10CM, "E10.9")]) == (
        ICD10CM,
        "E109",
    )


def test_pcs_families(valuesets: dict[str, ValueSet]) -> None:
    total = valuesets["pancreatectomy-total"]
    partial = valuesets["pancreatectomy-partial"]
    pcs = "http://www.cms.gov/Medicare/Coding/ICD10"
    assert total.contains(pcs, "0FTG4ZG") and not total.contains(pcs, "0FBG0ZZ")
    assert partial.contains(pcs, "0FBG0ZZ")


def test_from_memory_codes_are_marked(valuesets: dict[str, ValueSet]) -> None:
    assert ("http://snomed.info/sct", "267384006") in valuesets["severe-hypoglycemia"].from_memory
    assert (ICD10CM, "E16A3") not in valuesets["severe-hypoglycemia"].from_memory


def test_every_valueset_file_is_valid_fhir_r4(valuesets: dict[str, ValueSet]) -> None:
    files = sorted(VALUESET_DIR.glob("*.json"))
    assert len(files) == len(valuesets) > 20
    for path in files:
        R4BValueSet.model_validate(json.loads(path.read_text(encoding="utf-8")))


def _vs(include: list[dict[str, object]], exclude: list[dict[str, object]] | None = None) -> dict[str, object]:
    compose: dict[str, object] = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "id": "t", "status": "active", "compose": compose}


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        (
            _vs(
                [{"system": "http://snomed.info/sct", "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}]
            ),
            "prefix-hierarchical",
        ),
        (
            _vs(
                [
                    {
                        "system": ICD10CM,
                        "filter": [
                            {"property": "concept", "op": "is-a", "value": "E10"},
                            {"property": "concept", "op": "is-a", "value": "E11"},
                        ],
                    }
                ]
            ),
            "one is-a filter per include",
        ),
        (_vs([{"system": ICD10CM, "filter": [{"property": "concept", "op": "regex", "value": "E1."}]}]), "op 'is-a'"),
        (_vs([{"system": ICD10CM}]), "a whole code system is too broad"),
        (_vs([{"system": ICD10CM, "concept": [{"display": "no code"}]}]), r"concept\[0\]\.code"),
        (_vs([]), "at least one include"),
        ({"resourceType": "CodeSystem", "id": "t"}, "resourceType"),
    ],
)
def test_unusable_valuesets_are_refused_naming_the_element(resource: dict[str, object], message: str) -> None:
    with pytest.raises(ValueSetError, match=message):
        parse_valueset(resource, "t.json")


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    doc = _vs([{"system": CPT, "concept": [{"code": "48160"}]}])
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(ValueSetError, match="duplicate"):
        load_valuesets(tmp_path)
