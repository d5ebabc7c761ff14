"""CRD configuration: the options advertised in discovery and the request's choices among them.

Discovery advertises ``davinci-crd.configuration-options`` (one boolean per card type returned, plus
``coverage-info`` and ``max-cards``); a request's ``davinci-crd.configuration`` switches them.
Unknown options are ignored (CRD dev-17) and values of the wrong type fall back to the default rather
than failing the call (dev-6: handle nonsensical combinations gracefully).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cards.wording import CARD_KINDS, Wording, default_wording

COVERAGE_INFO = "coverage-info"
MAX_CARDS = "max-cards"
_DEFAULT_MAX_CARDS = 10
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class EffectiveConfiguration:
    """What this call may return, after applying the request's configuration to the defaults."""

    enabled: frozenset[str]  # option codes switched on (card topics and coverage-info)
    max_cards: int

    def allows(self, code: str) -> bool:
        return code in self.enabled


def _boolean_codes(wording: Wording) -> list[str]:
    codes = [COVERAGE_INFO]
    for kind in CARD_KINDS:
        topic = wording.card_kinds[kind].topic
        if topic not in codes:
            codes.append(topic)
    return codes


def _default_max_cards(wording: Wording) -> int:
    value = wording.configuration_options.get(MAX_CARDS, {}).get("default", _DEFAULT_MAX_CARDS)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else _DEFAULT_MAX_CARDS


def configuration_options(wording: Wording | None = None) -> list[dict[str, Any]]:
    """The ``davinci-crd.configuration-options`` array for discovery (same for every hook: dev-9)."""
    w = wording or default_wording()
    options: list[dict[str, Any]] = []
    for code in _boolean_codes(w):
        text = w.configuration_options[code]
        options.append(
            {
                "code": code,
                "type": "boolean",
                "name": str(text["name"]),
                "description": " ".join(str(text["description"]).split()),
                "default": True,
            }
        )
    text = w.configuration_options[MAX_CARDS]
    options.append(
        {
            "code": MAX_CARDS,
            "type": "integer",
            "name": str(text["name"]),
            "description": " ".join(str(text["description"]).split()),
            "default": _default_max_cards(w),
        }
    )
    return options


def _as_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None  # nonsense: keep the default


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None  # true/false is not a number of cards
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def effective_configuration(
    requested: Mapping[str, Any] | None, wording: Wording | None = None
) -> EffectiveConfiguration:
    """Apply a request's ``davinci-crd.configuration`` to the advertised defaults."""
    w = wording or default_wording()
    enabled = set(_boolean_codes(w))
    max_cards = _default_max_cards(w)
    if isinstance(requested, Mapping):
        for code in _boolean_codes(w):
            if code in requested:
                flag = _as_boolean(requested[code])
                if flag is False:
                    enabled.discard(code)
                elif flag is True:
                    enabled.add(code)
        if MAX_CARDS in requested:
            count = _as_count(requested[MAX_CARDS])
            if count is not None:
                max_cards = count
    return EffectiveConfiguration(enabled=frozenset(enabled), max_cards=max_cards)
