"""The discovery document (GET /cds-services): built once from data files at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str


@dataclass(frozen=True)
class Catalogue:
    services: tuple[ServiceDefinition, ...]
    crd_versions: tuple[str, ...]

    def by_id(self, service_id: str) -> ServiceDefinition | None:
        return next((s for s in self.services if s.id == service_id), None)

    def for_hook(self, hook: str) -> ServiceDefinition | None:
        return next((s for s in self.services if s.hook == hook), None)


def load_catalogue(policy_id: str = "pancreatic-islet-cell-transplantation") -> Catalogue:
    text = resources.files("service.policies").joinpath(policy_id, "services.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return Catalogue(
        services=tuple(
            ServiceDefinition(
                id=s["id"],
                hook=s["hook"],
                title=s["title"],
                description=" ".join(s["description"].split()),
                usage_requirements=" ".join(s["usageRequirements"].split()),
            )
            for s in data["services"]
        ),
        crd_versions=tuple(data["crd_versions"]),
    )


def discovery_document(
    catalogue: Catalogue, prefetch: dict[str, str], configuration_options: list[dict[str, Any]]
) -> dict[str, Any]:
    services = []
    for s in catalogue.services:
        services.append(
            {
                "hook": s.hook,
                "id": s.id,
                "title": s.title,
                "description": s.description,
                "usageRequirements": s.usage_requirements,
                "prefetch": dict(prefetch),
                "extension": {
                    "davinci-crd.configuration-options": configuration_options,
                    "davinci-crd.version": list(catalogue.crd_versions),
                },
            }
        )
    return {"services": services}
