"""Pure presentation: Decision -> CDS Hooks cards + Da Vinci CRD coverage-information system actions."""

from cards.configuration import EffectiveConfiguration, configuration_options, effective_configuration
from cards.coverage_information import (
    EXT_COVERAGE_INFORMATION,
    CoverageProblem,
    normalise_crd_version,
    requested_crd_version,
    select_coverage,
)
from cards.render import RenderContext, render_response
from cards.wording import Wording, WordingError, default_wording, load_wording

__all__ = [
    "EXT_COVERAGE_INFORMATION",
    "CoverageProblem",
    "EffectiveConfiguration",
    "RenderContext",
    "Wording",
    "WordingError",
    "configuration_options",
    "default_wording",
    "effective_configuration",
    "load_wording",
    "normalise_crd_version",
    "render_response",
    "requested_crd_version",
    "select_coverage",
]
