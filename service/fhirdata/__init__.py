"""Patient data for a hook call: prefetch per CDS Hooks 2.0, else the EHR's FHIR server, in parallel.

``gather(request, templates, settings, allowed_servers=None, session=None) -> PatientRecord`` resolves
each prefetch key: present with data -> used; present as null -> no data, not queried; absent (or an
OperationOutcome) -> queried on ``request.fhir_server`` (allowed servers only) under one deadline.
It raises ``DataUnavailable`` (-> HTTP 412) only when a key in ``REQUIRED_KEYS``, or every key, could
not be read; any other failure is a gap in the record.
"""

from service.fhirdata.client import fhir_executor, fhir_session
from service.fhirdata.gather import REQUIRED_KEYS, gather
from service.fhirdata.record import DataUnavailable, FhirServerRefused, PatientRecord

__all__ = [
    "REQUIRED_KEYS",
    "DataUnavailable",
    "FhirServerRefused",
    "PatientRecord",
    "fhir_executor",
    "fhir_session",
    "gather",
]
