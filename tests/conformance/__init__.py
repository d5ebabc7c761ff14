"""Conformance checks for CDS Hooks 2.0 / Da Vinci CRD responses (schemas, invariants, Inferno checks)."""

from tests.conformance.checks import (
    card_kinds,
    check_coverage_information,
    check_response,
    check_update_echo,
    demonstrated_card_kinds,
    requested_version,
)
from tests.conformance.invariants import check_invariants

__all__ = [
    "card_kinds",
    "check_coverage_information",
    "check_invariants",
    "check_response",
    "check_update_echo",
    "demonstrated_card_kinds",
    "requested_version",
]
