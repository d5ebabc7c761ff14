"""Card wording loaded from the policy's ``cards.yaml``: every sentence a user reads comes from there.

Loaded once at start-up (``load_wording``) and passed to the renderer in ``RenderContext``; a missing
key fails loudly at load time, naming the key, rather than mid-request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_POLICY_DIR = "pancreatic-islet-cell-transplantation"
CARD_KINDS = ("summary", "reference", "documentation")

# Keys every section must hold; checked at load so a typo in cards.yaml cannot reach a clinician.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "summaries": (
        "not_covered",
        "not_covered_no_criterion",
        "covered",
        "documentation_needed",
        "indeterminate",
        "indeterminate_unspecified",
        "multi_order_suffix",
        "single_order_suffix",
        "reference",
        "documentation",
    ),
    "headings": (
        "orders",
        "pathway",
        "both_pathways",
        "criteria",
        "exclusions",
        "no_exclusion",
        "earliest_eligible_date",
        "data_gaps",
        "skipped_resources",
        "policy",
        "policy_version",
        "open_criteria",
        "note",
    ),
    "table_columns": ("criterion", "status", "reason", "evidence"),
    "status_labels": (
        "met",
        "not_met",
        "unknown",
        "exclusion_applies",
        "exclusion_clear",
        "exclusion_unknown",
    ),
    "pathway_labels": ("allogeneic", "autologous"),
    "outcome_lines": ("covered", "not_covered", "documentation_needed", "indeterminate", "coverage_problem"),
    "notes": ("lantidra_conflict",),
    "link_labels": ("policy", "documentation"),
    "links": ("dtr_launch_url",),
    "override_reasons": ("not_covered", "documentation_needed", "indeterminate"),
    "coverage_information": (
        "action_description",
        "not_covered_reason",
        "investigational_reason",
        "covered_reason",
        "documentation_reason",
        "technical_reason",
        "technical_reason_unspecified",
        "lantidra_conflict_reason",
    ),
    "configuration_options": ("coverage-info", "max-cards"),
    "card_kinds": CARD_KINDS,
}


class WordingError(ValueError):
    """cards.yaml is missing a key or has one of the wrong shape; the message names it."""


@dataclass(frozen=True)
class CardKind:
    topic: str  # CRD response-type code: source.topic.code and the configuration option's code
    topic_display: str


@dataclass(frozen=True)
class Wording:
    card_kinds: Mapping[str, CardKind]
    summaries: Mapping[str, Any]  # str, or {"one": str, "other": str} for counted summaries
    headings: Mapping[str, str]
    table_columns: Mapping[str, str]
    status_labels: Mapping[str, str]
    pathway_labels: Mapping[str, str]
    outcome_lines: Mapping[str, str]
    notes: Mapping[str, str]
    reference_detail: str
    documentation_detail_intro: str
    link_labels: Mapping[str, str]
    dtr_launch_url: str
    override_reasons: Mapping[str, tuple[Mapping[str, str], ...]]
    coverage_information: Mapping[str, str]
    configuration_options: Mapping[str, Mapping[str, Any]]

    def summary(self, key: str, **values: Any) -> str:
        template = self.summaries[key]
        if not isinstance(template, str):
            raise WordingError(f"summaries.{key} is counted: use counted_summary()")
        return template.format(**values)

    def counted_summary(self, key: str, count: int, **values: Any) -> str:
        forms = self.summaries[key]
        if isinstance(forms, str):
            return forms.format(count=count, **values)
        return str(forms["one" if count == 1 else "other"]).format(count=count, **values)

    def note(self, key: str) -> str | None:
        """The text of a decision note, or None for a note key this wording does not know."""
        return self.notes.get(key)


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    if not isinstance(value, Mapping):
        raise WordingError(f"cards.yaml: '{name}' must be a mapping")
    for key in _REQUIRED.get(name, ()):
        if key not in value:
            raise WordingError(f"cards.yaml: '{name}.{key}' is missing")
    return value


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise WordingError(f"cards.yaml: '{name}' must be a non-empty string")
    return value.strip()


def _strings(section: Mapping[str, Any], name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in section.items():
        if not isinstance(value, str):
            raise WordingError(f"cards.yaml: '{name}.{key}' must be a string")
        out[str(key)] = value
    return out


def _codings(section: Mapping[str, Any]) -> dict[str, tuple[Mapping[str, str], ...]]:
    out: dict[str, tuple[Mapping[str, str], ...]] = {}
    for key, items in section.items():
        if not isinstance(items, list):
            raise WordingError(f"cards.yaml: 'override_reasons.{key}' must be a list")
        codings = []
        for i, item in enumerate(items):
            # overrideReasons Codings MUST carry system, code and display (CDS Hooks 2.0).
            if not isinstance(item, Mapping) or not all(
                isinstance(item.get(k), str) and item.get(k) for k in ("system", "code", "display")
            ):
                raise WordingError(f"cards.yaml: 'override_reasons.{key}[{i}]' needs system, code, display")
            codings.append({"system": item["system"], "code": item["code"], "display": item["display"]})
        out[str(key)] = tuple(codings)
    return out


def _card_kinds(section: Mapping[str, Any]) -> dict[str, CardKind]:
    out: dict[str, CardKind] = {}
    for kind in CARD_KINDS:
        item = section[kind]
        if not isinstance(item, Mapping) or not isinstance(item.get("topic"), str):
            raise WordingError(f"cards.yaml: 'card_kinds.{kind}.topic' must be a string")
        out[kind] = CardKind(topic=item["topic"], topic_display=str(item.get("topic_display") or item["topic"]))
    return out


def _configuration_options(section: Mapping[str, Any], kinds: Mapping[str, CardKind]) -> dict[str, Any]:
    needed = {k.topic for k in kinds.values()} | {"coverage-info", "max-cards"}
    for code in sorted(needed):
        item = section.get(code)
        if not isinstance(item, Mapping) or not item.get("name") or not item.get("description"):
            raise WordingError(f"cards.yaml: 'configuration_options.{code}' needs a name and a description")
    return {str(k): dict(v) for k, v in section.items()}


def parse_wording(data: Any) -> Wording:
    if not isinstance(data, Mapping):
        raise WordingError("cards.yaml must hold a mapping")
    kinds = _card_kinds(_section(data, "card_kinds"))
    summaries = _section(data, "summaries")
    links = _section(data, "links")
    return Wording(
        card_kinds=kinds,
        summaries=dict(summaries),
        headings=_strings(_section(data, "headings"), "headings"),
        table_columns=_strings(_section(data, "table_columns"), "table_columns"),
        status_labels=_strings(_section(data, "status_labels"), "status_labels"),
        pathway_labels=_strings(_section(data, "pathway_labels"), "pathway_labels"),
        outcome_lines=_strings(_section(data, "outcome_lines"), "outcome_lines"),
        notes={k: " ".join(v.split()) for k, v in _strings(_section(data, "notes"), "notes").items()},
        reference_detail=" ".join(_text(data, "reference_detail").split()),
        documentation_detail_intro=" ".join(_text(data, "documentation_detail_intro").split()),
        link_labels=_strings(_section(data, "link_labels"), "link_labels"),
        dtr_launch_url=_text(links, "dtr_launch_url"),
        override_reasons=_codings(_section(data, "override_reasons")),
        coverage_information=_strings(_section(data, "coverage_information"), "coverage_information"),
        configuration_options=_configuration_options(_section(data, "configuration_options"), kinds),
    )


def load_wording(path: str | Path | None = None) -> Wording:
    """Load and check ``cards.yaml`` (default: the packaged policy's). Raises WordingError naming the key."""
    if path is None:
        text = (
            resources.files("service.policies")
            .joinpath(DEFAULT_POLICY_DIR)
            .joinpath("cards.yaml")
            .read_text(encoding="utf-8")
        )
    else:
        text = Path(path).read_text(encoding="utf-8")
    return parse_wording(yaml.safe_load(text))


@lru_cache(maxsize=1)
def default_wording() -> Wording:
    """The packaged wording, read once per process."""
    return load_wording()
