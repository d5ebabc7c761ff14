"""Load the policy file (YAML), validate it against its JSON Schema, and build a frozen Policy.

Everything is checked at start-up, so a broken file stops the service with a message naming the
field (``criteria.A3.params.window_days: 'x' is not of type 'integer'``) instead of failing a request.
Besides the schema, the loader checks what a schema cannot: every predicate exists and has its
parameters, every value set a criterion or trigger names exists, and every question names an item
of the Questionnaire.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from service.policy.predicates import PREDICATE_PARAMS
from service.terminology import ValueSet, ValueSetError, load_valuesets

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policies" / "pancreatic-islet-cell-transplantation"

LantidraNote = Literal["review", "investigational"]


class PolicyError(ValueError):
    """The policy file (or a file it names) is unusable; the message names the field."""


@dataclass(frozen=True)
class QuestionRef:
    link_id: str
    requires: Literal["none", "date", "detail"]
    # How an attested date is checked against the criterion's parameters (engine._attested_date_check).
    date_rule: Literal["birth_date", "within_window", "wait_elapsed", "within_window_or_planned"] | None = None


# The criterion parameter each questionnaire date rule checks an answered date against.
DATE_RULE_PARAM = {
    "birth_date": "years",
    "within_window": "window_days",
    "wait_elapsed": "wait_days",
    "within_window_or_planned": "window_days",
}


@dataclass(frozen=True)
class CriterionSpec:
    id: str  # "A1" … "B3", "X1" …
    pathway: Literal["allogeneic", "autologous", "exclusion"]
    title: str
    predicate: str
    params: Mapping[str, Any]
    rationale: str
    needs: tuple[str, ...]  # prefetch keys whose data the criterion reads
    question: QuestionRef | None
    reasons: Mapping[str, str]  # met / not_met / unknown, then variants by key

    def reason_template(self, key: str) -> str:
        return self.reasons.get(key) or self.reasons.get("unknown") or key


@dataclass(frozen=True)
class Policy:
    id: str
    version: str
    title: str
    url: str
    plan_label: str
    status: str
    effective_start: date
    effective_end: date | None
    questionnaire_url: str  # canonical|version
    questionnaire_canonical: str  # canonical without version
    questionnaire: dict[str, Any]  # the FHIR Questionnaire resource (plain JSON; do not mutate)
    prefetch: dict[str, str]  # prefetch key -> CDS Hooks template (plain, for discovery)
    lantidra_note: LantidraNote
    lantidra_keywords: tuple[str, ...]
    lantidra_ndc: frozenset[str]
    triggers: Mapping[str, str]  # role -> ValueSet id
    pathway_choice: Mapping[str, Any]
    notes: Mapping[str, str]
    outcome_reasons: Mapping[str, str]
    questionnaire_reasons: Mapping[str, str]
    criteria: Mapping[str, CriterionSpec]  # A1 … B3, in file order
    exclusions: Mapping[str, CriterionSpec]  # X1 …
    valuesets: Mapping[str, ValueSet]

    def valueset(self, vs_id: str) -> ValueSet:
        return self.valuesets[vs_id]

    def pathway_criteria(self, pathway: str) -> tuple[CriterionSpec, ...]:
        return tuple(c for c in self.criteria.values() if c.pathway == pathway)


@lru_cache(maxsize=1)
def _schema_validator() -> Draft202012Validator:
    text = resources.files("service.policy").joinpath("policy.schema.json").read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _where(error: ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "$"


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_date(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise PolicyError(f"{where}: {text!r} is not a date (YYYY-MM-DD)") from exc


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _questionnaire_link_ids(items: Any) -> set[str]:
    out: set[str] = set()
    for item in items or []:
        if isinstance(item, dict):
            if isinstance(item.get("linkId"), str):
                out.add(item["linkId"])
            out |= _questionnaire_link_ids(item.get("item"))
    return out


def _criterion(
    cid: str, raw: Mapping[str, Any], where: str, valuesets: Mapping[str, ValueSet], link_ids: set[str]
) -> CriterionSpec:
    predicate = raw["predicate"]
    if predicate not in PREDICATE_PARAMS:
        known = ", ".join(sorted(PREDICATE_PARAMS))
        raise PolicyError(f"{where}.predicate: unknown predicate {predicate!r} (known: {known})")
    params = raw["params"]
    for name in PREDICATE_PARAMS[predicate]:
        if name not in params:
            raise PolicyError(f"{where}.params.{name}: required by predicate {predicate!r}")
    for name, value in params.items():
        refs = [value] if name.endswith("valueset") else list(value) if name.endswith("valuesets") else []
        for ref in refs:
            if ref not in valuesets:
                raise PolicyError(f"{where}.params.{name}: no ValueSet with id {ref!r}")
    question = None
    if raw.get("question"):
        q = raw["question"]
        if q["link_id"] not in link_ids:
            raise PolicyError(f"{where}.question.link_id: {q['link_id']!r} is not an item of the Questionnaire")
        question = QuestionRef(link_id=q["link_id"], requires=q["requires"], date_rule=q.get("date_rule"))
        rule = question.date_rule
        if rule is not None and question.requires != "date":
            raise PolicyError(f"{where}.question.date_rule: needs requires: date")
        if rule is not None and DATE_RULE_PARAM[rule] not in params:
            raise PolicyError(f"{where}.question.date_rule: {rule!r} needs params.{DATE_RULE_PARAM[rule]}")
    reasons = {**raw["reasons"], **(raw.get("reason_variants") or {})}
    return CriterionSpec(
        id=cid,
        pathway=raw.get("pathway", "exclusion"),
        title=raw["title"],
        predicate=predicate,
        params=_frozen(params),
        rationale=raw["rationale"],
        needs=tuple(raw["needs"]),
        question=question,
        reasons=MappingProxyType(reasons),
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path.name}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path.name}: the policy file must hold a mapping")
    return data


def load_policy(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Policy:
    """Load and validate the policy. ``path`` is the YAML file or its directory (default: packaged).

    ``overrides`` is deep-merged into the file before validation (tests flip ``lantidra_note``).
    Raises PolicyError naming the offending field.
    """
    policy_path = Path(path) if path is not None else DEFAULT_POLICY_DIR / "policy.yaml"
    if policy_path.is_dir():
        policy_path = policy_path / "policy.yaml"
    base_dir = policy_path.parent
    raw = _read_yaml(policy_path)
    if overrides:
        raw = _deep_merge(raw, overrides)
    errors = sorted(_schema_validator().iter_errors(raw), key=lambda e: (len(e.absolute_path), e.message))
    if errors:
        raise PolicyError(f"{_where(errors[0])}: {errors[0].message}")

    try:
        valuesets = load_valuesets(base_dir / "valuesets")
    except ValueSetError as exc:
        raise PolicyError(f"valuesets/{exc}") from exc
    for role, vs_id in raw["triggers"].items():
        if vs_id not in valuesets:
            raise PolicyError(f"triggers.{role}: no ValueSet with id {vs_id!r}")
    choice = raw["pathway_choice"]
    for name in ("allogeneic_signal_valuesets", "autologous_signal_valuesets"):
        for vs_id in choice[name]:
            if vs_id not in valuesets:
                raise PolicyError(f"pathway_choice.{name}: no ValueSet with id {vs_id!r}")
    if choice["pancreatectomy_valueset"] not in valuesets:
        raise PolicyError(f"pathway_choice.pancreatectomy_valueset: no ValueSet {choice['pancreatectomy_valueset']!r}")

    q_conf = raw["questionnaire"]
    q_path = base_dir / q_conf["file"]
    try:
        questionnaire = json.loads(q_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyError(f"questionnaire.file: cannot read {q_conf['file']} ({exc})") from exc
    if questionnaire.get("resourceType") != "Questionnaire":
        raise PolicyError("questionnaire.file: the file is not a FHIR Questionnaire")
    if questionnaire.get("url") != q_conf["url"] or questionnaire.get("version") != q_conf["version"]:
        raise PolicyError("questionnaire.url: the Questionnaire's url/version differ from the policy file")
    link_ids = _questionnaire_link_ids(questionnaire.get("item"))

    criteria = {
        cid: _criterion(cid, spec, f"criteria.{cid}", valuesets, link_ids) for cid, spec in raw["criteria"].items()
    }
    exclusions = {
        cid: _criterion(cid, spec, f"exclusions.{cid}", valuesets, link_ids) for cid, spec in raw["exclusions"].items()
    }
    effective = raw["effective"]
    return Policy(
        id=raw["id"],
        version=raw["version"],
        title=raw["title"],
        url=raw["url"],
        plan_label=raw["plan_label"],
        status=raw["status"],
        effective_start=_parse_date(effective["start"], "effective.start"),
        effective_end=_parse_date(effective["end"], "effective.end") if effective.get("end") else None,
        questionnaire_url=f"{q_conf['url']}|{q_conf['version']}",
        questionnaire_canonical=q_conf["url"],
        questionnaire=questionnaire,
        prefetch=dict(raw["prefetch"]),
        lantidra_note=raw["lantidra_note"],
        lantidra_keywords=tuple(k.lower() for k in raw["lantidra"]["keywords"]),
        lantidra_ndc=frozenset(raw["lantidra"]["ndc"]),
        triggers=MappingProxyType(dict(raw["triggers"])),
        pathway_choice=_frozen(choice),
        notes=MappingProxyType(dict(raw["notes"])),
        outcome_reasons=MappingProxyType(dict(raw.get("outcome_reasons") or {})),
        questionnaire_reasons=MappingProxyType(dict(raw["questionnaire_reasons"])),
        criteria=MappingProxyType(criteria),
        exclusions=MappingProxyType(exclusions),
        valuesets=MappingProxyType(valuesets),
    )
