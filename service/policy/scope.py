"""Which draft orders does this policy cover? (the trigger codes of the policy file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from service.facts import Concept, OrderFacts, order_concept
from service.policy.loader import Policy
from service.terminology import NDC

OrderKind = Literal["allogeneic", "autologous", "route", "lantidra"]


def concept_is_lantidra(policy: Policy, concept: Concept) -> bool:
    """J3590/C9399 with donislecel/Lantidra in the code text, or an NDC the policy file lists."""
    if any(system == NDC and code in policy.lantidra_ndc for system, code in concept.codings):
        return True
    billing = policy.valueset(policy.triggers["lantidra_billing"])
    if billing.first_match(concept.codings) is None:
        return False
    return any(word in concept.search_text for word in policy.lantidra_keywords)


def is_lantidra(policy: Policy, order: OrderFacts) -> bool:
    return concept_is_lantidra(policy, order.concept)


def order_kinds(policy: Policy, order: OrderFacts) -> set[OrderKind]:
    """What the order's codes say: allogeneic, autologous, a route code, or a Lantidra order."""
    return concept_kinds(policy, order.concept)


def concept_kinds(policy: Policy, concept: Concept) -> set[OrderKind]:
    kinds: set[OrderKind] = set()
    roles: tuple[OrderKind, ...] = ("allogeneic", "autologous", "route")
    for role in roles:
        if policy.valueset(policy.triggers[role]).first_match(concept.codings) is not None:
            kinds.add(role)
    if concept_is_lantidra(policy, concept):
        kinds.add("lantidra")
    return kinds


def in_scope_orders(policy: Policy, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The draft orders (resource dicts, unchanged) whose code is one of the policy's trigger codes.

    Decided on the codes alone: an unreadable date or note must not drop a covered order (the
    pipeline reports it with facts.order_read_problem).
    """
    out = []
    for order in orders:
        if not isinstance(order, Mapping):
            continue
        concept = order_concept(order)
        if concept is not None and concept_kinds(policy, concept):
            out.append(order)
    return out
