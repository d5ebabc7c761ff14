"""Code sets as FHIR ValueSets, and the (system, code) matcher.

ValueSets are loaded once (at policy load) from JSON files. A ValueSet's ``compose.include`` lists
explicit codes, or a ``filter`` with ``op: is-a`` on a hierarchical code system whose codes nest by
prefix (ICD-10-CM, ICD-10-PCS): there ``is-a E10`` means "E10 and every code below it", which the
matcher implements as a prefix test on the normalised code. ``compose.exclude`` works the same way
(e.g. E10.A* presymptomatic type 1 diabetes is excluded from the type 1 diabetes set).

Matching compares system and code only, never the display. Systems are normalised first: the known
aliases of a code system (HCPCS has four in the wild, CPT and others have urn:oid forms), http vs
https and trailing slashes all map to one canonical URI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
NDC = "http://hl7.org/fhir/sid/ndc"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"

# Alias forms seen in the wild (terminology.md §0.1), keyed by their comparison form (see _alias_key).
_ALIASES: dict[str, str] = {}


def _alias_key(system: str) -> str:
    """Comparison form of a system URI: trimmed, no trailing slash, http for https, lower case."""
    text = system.strip().rstrip("/")
    if text.lower().startswith("https://"):
        text = "http://" + text[len("https://") :]
    return text.lower()


def _register(canonical: str, *aliases: str) -> None:
    for alias in (canonical, *aliases):
        _ALIASES[_alias_key(alias)] = canonical


_register(SNOMED, "urn:oid:2.16.840.1.113883.6.96", "http://www.snomed.org", "SNOMED-CT", "SNOMEDCT")
_register(ICD10CM, "urn:oid:2.16.840.1.113883.6.90", "http://www.cdc.gov/nchs/icd/icd10cm", "ICD-10-CM")
_register(ICD10PCS, "urn:oid:2.16.840.1.113883.6.4", "http://hl7.org/fhir/sid/icd-10-pcs", "ICD-10-PCS")
_register(LOINC, "urn:oid:2.16.840.1.113883.6.1", "LOINC")
_register(RXNORM, "urn:oid:2.16.840.1.113883.6.88", "RXNORM")
_register(CPT, "urn:oid:2.16.840.1.113883.6.12", "http://ama-assn.org/go/cpt", "CPT", "CPT-4")
_register(
    HCPCS,
    # The four HCPCS forms of the VSAC/cqframework exports (terminology.md §0.1), and the OIDs.
    "http://www.nlm.nih.gov/research/umls/hcpcs",
    "http://www.cms.gov/research/umls/hcpccs",
    "urn:oid:2.16.840.1.113883.6.285",
    "urn:oid:2.16.840.1.113883.6.14",
    "http://terminology.hl7.org/CodeSystem/HCPCS",
    "http://terminology.hl7.org/CodeSystem/hcpcs-Level-II",
    "HCPCS",
)
_register(NDC, "urn:oid:2.16.840.1.113883.6.69", "http://hl7.org/fhir/sid/ndc-us", "NDC")
_register(ATC, "urn:oid:2.16.840.1.113883.6.73")
_register(UCUM, "urn:oid:2.16.840.1.113883.6.8")

# Code systems whose codes nest by prefix, so "is-a" can be evaluated without a terminology server.
PREFIX_HIERARCHIES = frozenset({ICD10CM, ICD10PCS})


class ValueSetError(ValueError):
    """A ValueSet file the matcher cannot use; the message names the file and the element."""


@lru_cache(maxsize=512)
def normalize_system(system: str | None) -> str:
    # Memoised: a record repeats a handful of system URIs hundreds of times (bounded; URIs only).
    if not system:
        return ""
    canonical = _ALIASES.get(_alias_key(system))
    if canonical is not None:
        return canonical
    # Unknown systems still compare without scheme/slash noise.
    text = system.strip().rstrip("/")
    if text.lower().startswith("https://"):
        text = "http://" + text[len("https://") :]
    return text


def normalize_code(system: str, code: str | None) -> str:
    """Normalised code for a *normalised* system: ICD codes without dot and upper case."""
    if code is None:
        return ""
    text = code.strip()
    if system in (ICD10CM, ICD10PCS, CPT, HCPCS):
        return text.replace(".", "").upper()
    return text


def display_code(system: str, code: str) -> str:
    """A normalised code as people write it (ICD-10-CM with its dot: E1065 -> E10.65)."""
    if system == ICD10CM and len(code) > 3 and "." not in code:
        return f"{code[:3]}.{code[3:]}"
    return code


def normalize(system: str | None, code: str | None) -> tuple[str, str]:
    sys_norm = normalize_system(system)
    return sys_norm, normalize_code(sys_norm, code)


@dataclass(frozen=True, slots=True)
class _Rule:
    """Codes of one system: explicit codes and is-a prefixes."""

    codes: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, code: str) -> bool:
        return code in self.codes or any(code.startswith(p) for p in self.prefixes)


@dataclass(frozen=True)
class ValueSet:
    id: str
    url: str
    title: str
    include: Mapping[str, _Rule]
    exclude: Mapping[str, _Rule]
    # (system, code) -> display and note, for evidence shown to people (never used to match).
    displays: Mapping[tuple[str, str], str]
    from_memory: frozenset[tuple[str, str]]

    def contains(self, system: str | None, code: str | None) -> bool:
        sys_norm, code_norm = normalize(system, code)
        return self.contains_normalized(sys_norm, code_norm)

    def contains_normalized(self, system: str, code: str) -> bool:
        if not code:
            return False
        rule = self.include.get(system)
        if rule is None or not rule.matches(code):
            return False
        excluded = self.exclude.get(system)
        return excluded is None or not excluded.matches(code)

    def first_match(self, codings: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
        """The first normalised (system, code) of ``codings`` that is in the set."""
        for system, code in codings:
            if self.contains_normalized(system, code):
                return system, code
        return None

    def explicit_codes(self, system: str) -> frozenset[str]:
        rule = self.include.get(normalize_system(system))
        return rule.codes if rule is not None else frozenset()


def _rules(parts: Any, where: str) -> tuple[dict[str, _Rule], dict[tuple[str, str], str], set[tuple[str, str]]]:
    if parts is None:
        return {}, {}, set()
    if not isinstance(parts, list):
        raise ValueSetError(f"{where}: must be a list")
    codes: dict[str, set[str]] = {}
    prefixes: dict[str, list[str]] = {}
    displays: dict[tuple[str, str], str] = {}
    from_memory: set[tuple[str, str]] = set()
    for i, part in enumerate(parts):
        here = f"{where}[{i}]"
        if not isinstance(part, dict) or not isinstance(part.get("system"), str):
            raise ValueSetError(f"{here}.system: a system URI is required")
        if "valueSet" in part:
            raise ValueSetError(f"{here}.valueSet: nested value sets are not supported; list codes")
        system = normalize_system(part["system"])
        for j, concept in enumerate(part.get("concept") or []):
            code = concept.get("code") if isinstance(concept, dict) else None
            if not isinstance(code, str) or not code.strip():
                raise ValueSetError(f"{here}.concept[{j}].code: a code is required")
            norm = normalize_code(system, code)
            codes.setdefault(system, set()).add(norm)
            if isinstance(concept.get("display"), str):
                displays[(system, norm)] = concept["display"]
            for designation in concept.get("designation") or []:
                value = designation.get("value", "") if isinstance(designation, dict) else ""
                if "FROM MEMORY" in str(value):
                    from_memory.add((system, norm))
        filters = part.get("filter") or []
        if len(filters) > 1:
            # FHIR ANDs the filters of one include; the matcher would OR them: refuse, don't guess.
            raise ValueSetError(f"{here}.filter: one is-a filter per include (filters in one include are ANDed)")
        for j, flt in enumerate(filters):
            fhere = f"{here}.filter[{j}]"
            if not isinstance(flt, dict) or flt.get("op") != "is-a" or flt.get("property") != "concept":
                raise ValueSetError(f"{fhere}: only property 'concept' with op 'is-a' is supported")
            if system not in PREFIX_HIERARCHIES:
                raise ValueSetError(f"{fhere}: is-a needs a prefix-hierarchical system, not {system}")
            value = flt.get("value")
            if not isinstance(value, str) or not value.strip():
                raise ValueSetError(f"{fhere}.value: a code is required")
            prefixes.setdefault(system, []).append(normalize_code(system, value))
        if not part.get("concept") and not part.get("filter"):
            raise ValueSetError(f"{here}: list concepts or an is-a filter (a whole code system is too broad)")
    rules = {
        system: _Rule(frozenset(codes.get(system, set())), tuple(prefixes.get(system, [])))
        for system in set(codes) | set(prefixes)
    }
    return rules, displays, from_memory


def parse_valueset(resource: Mapping[str, Any], where: str = "ValueSet") -> ValueSet:
    if resource.get("resourceType") != "ValueSet":
        raise ValueSetError(f"{where}.resourceType: must be 'ValueSet'")
    vs_id = resource.get("id")
    if not isinstance(vs_id, str) or not vs_id:
        raise ValueSetError(f"{where}.id: required")
    compose = resource.get("compose")
    if not isinstance(compose, dict):
        raise ValueSetError(f"{where}.compose: required")
    include, displays, from_memory = _rules(compose.get("include"), f"{where}.compose.include")
    if not include:
        raise ValueSetError(f"{where}.compose.include: at least one include is required")
    exclude, _, _ = _rules(compose.get("exclude"), f"{where}.compose.exclude")
    return ValueSet(
        id=vs_id,
        url=str(resource.get("url", "")),
        title=str(resource.get("title") or resource.get("name") or vs_id),
        include=include,
        exclude=exclude,
        displays=displays,
        from_memory=frozenset(from_memory),
    )


def load_valuesets(directory: str | Path) -> dict[str, ValueSet]:
    """Every ``*.json`` ValueSet in ``directory``, by id (files are read once, at start-up)."""
    out: dict[str, ValueSet] = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueSetError(f"{path.name}: {exc}") from exc
        vs = parse_valueset(resource, path.name)
        if vs.id in out:
            raise ValueSetError(f"{path.name}.id: duplicate ValueSet id {vs.id!r}")
        out[vs.id] = vs
    return out
