"""Decisions -> the CDS Hooks response body ``{"cards": [...], "systemActions": [...]}``.

Pure: no I/O, no clock (the assertion date comes in the context), no globals beyond constants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cards.cards import documentation_card, group_decisions, reference_card, summary_card
from cards.configuration import COVERAGE_INFO, effective_configuration
from cards.coverage_information import (
    PRIMARY_HOOKS,
    CoverageProblem,
    coverage_assertion_id,
    coverage_information_action,
    coverage_information_extension,
    coverage_reference,
    normalise_crd_version,
    select_coverage,
)
from cards.wording import Wording
from service.decision import Decision


@dataclass(frozen=True)
class RenderContext:
    hook: str
    hook_instance: str
    orders_by_ref: Mapping[str, Mapping[str, Any]]  # "Type/id" -> the draft resource as received
    coverages: Sequence[Mapping[str, Any]]  # Coverage resources from the record (prefetch or query)
    configuration: Mapping[str, Any]  # the request's davinci-crd.configuration
    crd_version: str  # davinci-crd.requestedVersion, default "2.0" (see requested_crd_version)
    assertion_date: date  # the coverage-information "date" (today, passed in)
    wording: Wording
    dtr_launch_url: str | None = None  # deployment override of cards.yaml links.dtr_launch_url
    fhir_server: str | None = None  # keeps coverage-assertion-ids of different EHRs apart


def render_response(decisions: Sequence[Decision], ctx: RenderContext) -> dict[str, Any]:
    """The response body for a hook call whose in-scope orders produced ``decisions``.

    Cards come in priority order (summary, documentation, policy link) so ``max-cards`` keeps the
    most useful ones. ``systemActions`` is present on primary hooks even when empty: Inferno's
    response check (item 8) requires it there.
    """
    wording = ctx.wording
    version = normalise_crd_version(ctx.crd_version)
    config = effective_configuration(ctx.configuration, wording)
    selected = select_coverage(ctx.coverages, on=ctx.assertion_date)
    problem = selected if isinstance(selected, CoverageProblem) else None

    actions: list[dict[str, Any]] = []
    assertion_id: str | None = None
    if decisions and not isinstance(selected, CoverageProblem):
        coverage_ref = coverage_reference(selected)
        assertion_id = coverage_assertion_id(decisions, coverage_ref, ctx.fhir_server)
        if config.allows(COVERAGE_INFO):
            done: set[str] = set()
            for decision in decisions:
                ref = decision.order.reference
                draft = ctx.orders_by_ref.get(ref)
                if ref in done or draft is None:
                    continue  # one action per order; an order we cannot echo cannot be updated
                done.add(ref)
                extension = coverage_information_extension(
                    decision,
                    coverage_ref=coverage_ref,
                    assertion_id=assertion_id,
                    assertion_date=ctx.assertion_date,
                    hook=ctx.hook,
                    crd_version=version,
                    wording=wording,
                )
                description = wording.coverage_information["action_description"].format(
                    order=decision.order.description
                )
                action = coverage_information_action(draft, extension, description)
                if action is not None:
                    actions.append(action)

    summaries: list[dict[str, Any]] = []
    documentation: list[dict[str, Any]] = []
    hook_instance = ctx.hook_instance
    kinds = wording.card_kinds
    groups = group_decisions(decisions)
    name_order = len(groups) > 1  # several cards of one kind: each summary names its order
    for group in groups:
        if config.allows(kinds["summary"].topic):
            summaries.append(
                summary_card(
                    group,
                    hook_instance=hook_instance,
                    crd_version=version,
                    wording=wording,
                    coverage_problem=problem,
                    name_order=name_order,
                )
            )
        if config.allows(kinds["documentation"].topic):
            card = documentation_card(
                group,
                hook_instance=hook_instance,
                crd_version=version,
                wording=wording,
                dtr_launch_url=ctx.dtr_launch_url or wording.dtr_launch_url,
                coverage_assertion_id=assertion_id,
                name_order=name_order,
            )
            if card is not None:
                documentation.append(card)
    references: list[dict[str, Any]] = []
    if decisions and config.allows(kinds["reference"].topic):
        by_policy: dict[tuple[str, str], list[Decision]] = {}
        for d in decisions:
            by_policy.setdefault((d.policy_id, d.policy_version), []).append(d)
        references = [
            reference_card(group, hook_instance=hook_instance, crd_version=version, wording=wording)
            for group in by_policy.values()
        ]

    cards = (summaries + documentation + references)[: config.max_cards]
    body: dict[str, Any] = {"cards": cards}
    if actions or ctx.hook in PRIMARY_HOOKS:
        body["systemActions"] = actions
    return body
