"""The policy engine: policy loader, predicates, evaluate() and scope.

``decide`` is the entry point of the hook pipeline: facts are read once per call, then one Decision
per in-scope order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from service.decision import Decision
from service.facts import read_facts
from service.policy.engine import date_of_service_for, evaluate, implausible_date_of_service
from service.policy.loader import CriterionSpec, Policy, PolicyError, load_policy


def decide(
    policy: Policy,
    record: Mapping[str, Sequence[Mapping[str, Any]] | None],
    orders: Sequence[Mapping[str, Any]],
    all_orders: Sequence[Mapping[str, Any]],
    today: date,
    gaps: Mapping[str, str] | None = None,
) -> list[Decision]:
    """One Decision per order. ``record``: prefetch key -> resources; ``gaps``: keys not obtained.

    Date of service per order: occurrence[x] (dateTime / Period.start / Timing.event[0]), else
    authoredOn, else ``today`` (a parameter: the engine never reads the clock).
    """
    facts = read_facts(record, gaps)
    return [evaluate(policy, facts, order, date_of_service_for(order, today), all_orders) for order in orders]


__all__ = [
    "CriterionSpec",
    "Decision",
    "Policy",
    "PolicyError",
    "decide",
    "evaluate",
    "implausible_date_of_service",
    "load_policy",
]
