"""Everything built once per process at start-up: settings, policy, catalogue, stores, verifiers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.config import Settings
from service.discovery import Catalogue


@dataclass
class AppState:
    settings: Settings
    policy: Any  # service.policy.Policy
    catalogue: Catalogue
    wording: Any  # cards.wording.Wording
    discovery: dict[str, Any]
    records: Any  # service.records.store.DecisionLog
    authenticator: Any | None  # service.trust.verify.Authenticator (None when auth is disabled)
    clock: Callable[[], date]
    extras: dict[str, Any] = field(default_factory=dict)

    def authenticate(self) -> Any:
        from service.trust.flask_auth import require_caller

        return require_caller(self.settings, self.authenticator)
