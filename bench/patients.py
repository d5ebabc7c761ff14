"""Realistic order-sign requests with complete prefetch, for a patient of N resources.

The patient's story is fixed (an adult with type 1 diabetes, severe hypoglycemia, an HbA1c above
target, pump, CGM, basal-bolus insulin, education and an immunosuppressant order), so every request
exercises the whole allogeneic pathway. The rest of the record is routine care — glucose and HbA1c
results, visits, other conditions, refills — spread over ten years, in the proportions of a real
chart, so that N grows the way a real record grows. Output is deterministic for (N, seed, date).

    python -m bench.patients 300 > request.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from service.policy import load_policy

# The policy file's prefetch keys, in its order: a request carries every one (complete prefetch).
PREFETCH_KEYS: tuple[str, ...] = tuple(load_policy().prefetch)
ORDER_CODE = ("http://www.ama-assn.org/go/cpt", "0584T")
SERVICE_ID = "islet-transplant-order-sign"

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# Share of the routine part of the record held by each prefetch key (a chart's usual mix:
# results dominate, then visits, prescriptions, problems and procedures).
FILLER_WEIGHTS: dict[str, float] = {
    "observations": 0.45,
    "encounters": 0.15,
    "medicationRequests": 0.12,
    "conditions": 0.08,
    "procedures": 0.08,
    "medicationStatements": 0.06,
    "devices": 0.03,
    "questionnaireResponses": 0.03,
}

_OTHER_CONDITIONS = (
    ("I10", "Essential (primary) hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("E03.9", "Hypothyroidism, unspecified"),
    ("E10.319", "Type 1 diabetes mellitus with unspecified diabetic retinopathy without macular edema"),
    ("E10.42", "Type 1 diabetes mellitus with diabetic polyneuropathy"),
    ("J30.9", "Allergic rhinitis, unspecified"),
    ("F41.1", "Generalized anxiety disorder"),
    ("M54.50", "Low back pain, unspecified"),
)
_ROUTINE_PROCEDURES = (
    (CPT, "36415", "Collection of venous blood by venipuncture"),
    (CPT, "92250", "Fundus photography with interpretation and report"),
    (CPT, "95251", "Ambulatory continuous glucose monitoring analysis"),
    (CPT, "93000", "Electrocardiogram, routine, with interpretation and report"),
    (CPT, "82947", "Glucose; quantitative, blood"),
)
_ROUTINE_MEDICATIONS = (
    ("29046", "lisinopril 10 MG Oral Tablet"),
    ("83367", "atorvastatin 20 MG Oral Tablet"),
    ("10582", "levothyroxine 0.075 MG Oral Tablet"),
    ("274783", "insulin glargine 100 UNT/ML Injectable Solution"),
    ("86009", "insulin glulisine 100 UNT/ML Injectable Solution"),
    ("1191", "aspirin 81 MG Oral Tablet"),
)
_GLUCOSE_CODES = (
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma"),
    ("2339-0", "Glucose [Mass/volume] in Blood"),
    ("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer"),
)


class _Builder:
    """Builds the resources of one patient; ids are unique per resource type."""

    def __init__(self, rng: random.Random, patient_id: str, date_of_service: date) -> None:
        self.rng = rng
        self.patient_id = patient_id
        self.dos = date_of_service
        self._counters: dict[str, int] = {}

    def next_id(self, resource_type: str) -> str:
        n = self._counters.get(resource_type, 0) + 1
        self._counters[resource_type] = n
        return f"{resource_type.lower()}-{n}"

    def days_ago(self, low: int, high: int) -> date:
        return self.dos - timedelta(days=self.rng.randint(low, high))

    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id}"}

    @staticmethod
    def meta(day: date) -> dict[str, Any]:
        return {"versionId": "1", "lastUpdated": f"{day.isoformat()}T09:30:00Z"}

    def identifier(self, kind: str) -> list[dict[str, str]]:
        return [{"system": f"urn:oid:1.2.840.114350.1.13.0.1.7.2.{kind}", "value": str(self.rng.randint(10**8, 10**9))}]

    # -- resources -----------------------------------------------------------------------------

    def patient(self) -> dict[str, Any]:
        birth = date(self.dos.year - 38, 3, 14)
        return {
            "resourceType": "Patient",
            "id": self.patient_id,
            "meta": self.meta(self.dos - timedelta(days=30)),
            "identifier": self.identifier("698084"),
            "active": True,
            "name": [{"use": "official", "family": "Bench", "given": ["Synthetic", "Patient"]}],
            "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
            "gender": "female",
            "birthDate": birth.isoformat(),
            "address": [{"use": "home", "line": ["1 Example Street"], "city": "Springfield", "state": "IL",
                         "postalCode": "62701", "country": "US"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]},
                               "preferred": True}],
        }

    def coverage(self) -> dict[str, Any]:
        return {
            "resourceType": "Coverage",
            "id": self.next_id("Coverage"),
            "meta": self.meta(self.dos - timedelta(days=200)),
            "identifier": self.identifier("9"),
            "status": "active",
            "type": {"coding": [{"system": ACT_CODE, "code": "EHCPOL", "display": "extended healthcare"}]},
            "subscriber": self.subject(),
            "subscriberId": "THP123456789",
            "beneficiary": self.subject(),
            "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                                         "code": "self"}]},
            "period": {"start": date(self.dos.year, 1, 1).isoformat()},
            "payor": [{"reference": "Organization/thp-health-plan", "display": "THP Health Plan"}],
            "class": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                                            "code": "plan"}]},
                       "value": "THP-GOLD", "name": "THP Gold PPO"}],
        }

    def condition(self, code: str, display: str, onset: date, *, resolved: bool = False,
                  system: str = ICD10CM) -> dict[str, Any]:
        clinical = "resolved" if resolved else "active"
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self.next_id("Condition"),
            "meta": self.meta(onset),
            "identifier": self.identifier("1060"),
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": clinical}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item",
                                      "display": "Problem List Item"}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": self.subject(),
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
        }
        if resolved:
            resource["abatementDateTime"] = (onset + timedelta(days=1)).isoformat()
        return resource

    def observation(self, code: str, display: str, day: date, value: float, unit: str, ucum: str,
                    low: float, high: float) -> dict[str, Any]:
        flag = "H" if value > high else "L" if value < low else "N"
        return {
            "resourceType": "Observation",
            "id": self.next_id("Observation"),
            "meta": self.meta(day),
            "identifier": self.identifier("798268"),
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory",
                                      "display": "Laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": self.subject(),
            "effectiveDateTime": f"{day.isoformat()}T08:15:00Z",
            "issued": f"{day.isoformat()}T11:42:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
            "interpretation": [{"coding": [{"system": INTERPRETATION, "code": flag}]}],
            "referenceRange": [{"low": {"value": low, "unit": unit, "system": UCUM, "code": ucum},
                                "high": {"value": high, "unit": unit, "system": UCUM, "code": ucum}}],
        }

    def hba1c(self, day: date, percent: float) -> dict[str, Any]:
        return self.observation("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", day, percent, "%", "%",
                                4.0, 5.6)

    def glucose(self, day: date) -> dict[str, Any]:
        code, display = self.rng.choice(_GLUCOSE_CODES)
        value = float(self.rng.randint(48, 320))
        return self.observation(code, display, day, value, "mg/dL", "mg/dL", 70.0, 99.0)

    def procedure(self, system: str, code: str, display: str, day: date) -> dict[str, Any]:
        return {
            "resourceType": "Procedure",
            "id": self.next_id("Procedure"),
            "meta": self.meta(day),
            "identifier": self.identifier("1217"),
            "status": "completed",
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": self.subject(),
            "performedDateTime": f"{day.isoformat()}T10:00:00Z",
            "performer": [{"actor": {"reference": "Practitioner/dr-endo", "display": "Endocrinology"}}],
        }

    def medication_request(self, rxnorm: str, display: str, day: date, *, status: str = "active",
                           sig: str = "Use as directed") -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": self.next_id("MedicationRequest"),
            "meta": self.meta(day),
            "identifier": self.identifier("2798"),
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": display}],
                                          "text": display},
            "subject": self.subject(),
            "authoredOn": day.isoformat(),
            "requester": {"reference": "Practitioner/dr-endo", "display": "Endocrinology"},
            "dosageInstruction": [{"text": sig, "timing": {"repeat": {"frequency": 1, "period": 1,
                                                                       "periodUnit": "d"}}}],
            "dispenseRequest": {"numberOfRepeatsAllowed": 3,
                                "validityPeriod": {"start": day.isoformat(),
                                                   "end": (day + timedelta(days=365)).isoformat()}},
        }

    def medication_statement(self, rxnorm: str, display: str, day: date) -> dict[str, Any]:
        return {
            "resourceType": "MedicationStatement",
            "id": self.next_id("MedicationStatement"),
            "meta": self.meta(day),
            "status": self.rng.choice(("active", "completed")),
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": display}],
                                          "text": display},
            "subject": self.subject(),
            "effectivePeriod": {"start": day.isoformat()},
            "dateAsserted": day.isoformat(),
            "dosage": [{"text": "Taken as prescribed"}],
        }

    def encounter(self, day: date, *, emergency: bool = False, reason: str | None = None) -> dict[str, Any]:
        code, display = ("EMER", "emergency") if emergency else ("AMB", "ambulatory")
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": self.next_id("Encounter"),
            "meta": self.meta(day),
            "identifier": self.identifier("3"),
            "status": "finished",
            "class": {"system": ACT_CODE, "code": code, "display": display},
            "type": [{"coding": [{"system": SNOMED, "code": "50849002" if emergency else "185349003",
                                  "display": "Emergency room admission" if emergency
                                  else "Encounter for check up"}]}],
            "subject": self.subject(),
            "participant": [{"individual": {"reference": "Practitioner/dr-endo"}}],
            "period": {"start": f"{day.isoformat()}T09:00:00Z", "end": f"{day.isoformat()}T09:40:00Z"},
            "serviceProvider": {"reference": "Organization/springfield-clinic"},
        }
        if reason is not None:
            resource["reasonCode"] = [{"coding": [{"system": ICD10CM, "code": reason}]}]
        return resource

    def device(self, system: str, code: str, display: str, day: date, *, active: bool = True) -> dict[str, Any]:
        return {
            "resourceType": "Device",
            "id": self.next_id("Device"),
            "meta": self.meta(day),
            "status": "active" if active else "inactive",
            "type": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "manufacturer": "Example Medical",
            "serialNumber": f"SN{self.rng.randint(10**7, 10**8)}",
            "patient": self.subject(),
        }

    def questionnaire_response(self, day: date) -> dict[str, Any]:
        # A routine depression screen (PHQ-2): a questionnaire the policy does not read.
        return {
            "resourceType": "QuestionnaireResponse",
            "id": self.next_id("QuestionnaireResponse"),
            "meta": self.meta(day),
            "questionnaire": "http://loinc.org/q/55757-9",
            "status": "completed",
            "subject": self.subject(),
            "authored": f"{day.isoformat()}T09:10:00Z",
            "item": [
                {"linkId": "44250-9", "text": "Little interest or pleasure in doing things",
                 "answer": [{"valueCoding": {"system": LOINC, "code": "LA6568-5", "display": "Not at all"}}]},
                {"linkId": "44255-8", "text": "Feeling down, depressed, or hopeless",
                 "answer": [{"valueCoding": {"system": LOINC, "code": "LA6568-5", "display": "Not at all"}}]},
            ],
        }

    # -- the clinical story and the routine record -------------------------------------------------

    def story(self) -> dict[str, list[dict[str, Any]]]:
        """The resources the allogeneic criteria read (A1–A9): present whatever N is."""
        return {
            "conditions": [
                self.condition("E10.65", "Type 1 diabetes mellitus with hyperglycemia", date(self.dos.year - 30, 5, 2)),
                self.condition("E16.A3", "Hypoglycemia level 3", self.days_ago(200, 300), resolved=True),
                self.condition("E16.A3", "Hypoglycemia level 3", self.days_ago(20, 120), resolved=True),
            ],
            "observations": [self.hba1c(self.days_ago(20, 60), 8.4)],
            "devices": [
                self.device(SNOMED, "69805005", "Insulin pump", self.days_ago(400, 700)),
                self.device(HCPCS, "E2103", "Continuous glucose monitor", self.days_ago(200, 400)),
            ],
            "medicationRequests": [
                self.medication_request("274783", "insulin glargine 100 UNT/ML Injectable Solution",
                                        self.days_ago(30, 90), sig="18 units at bedtime"),
                self.medication_request("86009", "insulin glulisine 100 UNT/ML Injectable Solution",
                                        self.days_ago(30, 90), sig="Per carbohydrate ratio with meals"),
                self.medication_request("42316", "tacrolimus", self.days_ago(1, 7), sig="Per transplant protocol"),
            ],
            "procedures": [self.procedure(HCPCS, "G0108", "Diabetes self-management training, individual",
                                          self.days_ago(100, 300))],
            "encounters": [self.encounter(self.days_ago(20, 120), emergency=True, reason="E16.A3")],
        }

    def filler(self, key: str) -> dict[str, Any]:
        """One routine resource for ``key``, dated within the last ten years."""
        day = self.days_ago(1, 3650)
        makers: dict[str, Callable[[], dict[str, Any]]] = {
            "observations": lambda: (self.hba1c(day, round(self.rng.uniform(6.8, 9.5), 1))
                                     if self.rng.random() < 0.15 else self.glucose(day)),
            "encounters": lambda: self.encounter(day),
            "medicationRequests": lambda: self.medication_request(
                *self.rng.choice(_ROUTINE_MEDICATIONS), day, status=self.rng.choice(("completed", "stopped"))),
            "conditions": lambda: self.condition(*self.rng.choice(_OTHER_CONDITIONS), day),
            "procedures": lambda: self.procedure(*self.rng.choice(_ROUTINE_PROCEDURES), day),
            "medicationStatements": lambda: self.medication_statement(*self.rng.choice(_ROUTINE_MEDICATIONS), day),
            "devices": lambda: self.device(HCPCS, "A9276", "CGM sensor", day, active=False),
            "questionnaireResponses": lambda: self.questionnaire_response(day),
        }
        return makers[key]()


def _apportion(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``total`` by ``weights`` (largest remainder), so the counts add up exactly."""
    weight_sum = sum(weights.values())
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    leftover = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[:leftover]:
        counts[k] += 1
    return counts


def _searchset(resources: list[dict[str, Any]], base: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def minimum_resource_count() -> int:
    """The smallest N: Patient, Coverage and the clinical story."""
    builder = _Builder(random.Random(0), "p", date(2026, 1, 1))
    return 2 + sum(len(v) for v in builder.story().values())


def draft_order(patient_id: str, date_of_service: date) -> dict[str, Any]:
    """The order being signed: islet infusion by the route code CPT 0584T."""
    system, code = ORDER_CODE
    return {
        "resourceType": "ServiceRequest",
        "id": "islet-order-1",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code,
                             "display": "Islet cell transplant, includes portal vein catheterization and infusion, "
                                        "including all imaging, percutaneous"}],
                 "text": "Islet cell transplant, percutaneous"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": (date_of_service - timedelta(days=14)).isoformat(),
        "requester": {"reference": "Practitioner/dr-endo"},
        "occurrenceDateTime": date_of_service.isoformat(),
    }


def order_sign_request(
    resource_count: int,
    *,
    date_of_service: date,
    seed: int = 0,
    patient_id: str = "bench-patient-1",
    fhir_base: str = "https://ehr.example.org/fhir",
) -> dict[str, Any]:
    """A CDS Hooks order-sign request whose prefetch holds exactly ``resource_count`` resources."""
    floor = minimum_resource_count()
    if resource_count < floor:
        raise ValueError(f"a patient needs at least {floor} resources (Patient, Coverage, the clinical story)")
    rng = random.Random(f"{seed}:{resource_count}")
    builder = _Builder(rng, patient_id, date_of_service)
    patient = builder.patient()
    by_key: dict[str, list[dict[str, Any]]] = {k: [] for k in PREFETCH_KEYS if k != "patient"}
    by_key["coverage"].append(builder.coverage())
    for key, resources in builder.story().items():
        by_key[key].extend(resources)
    story_size = 1 + sum(len(v) for v in by_key.values())
    for key, count in _apportion(resource_count - story_size, FILLER_WEIGHTS).items():
        by_key[key].extend(builder.filler(key) for _ in range(count))
    prefetch: dict[str, Any] = {"patient": patient}
    for key, resources in by_key.items():
        prefetch[key] = _searchset(resources, fhir_base)
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "fhirServer": fhir_base,
        "context": {
            "userId": "Practitioner/dr-endo",
            "patientId": patient_id,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft_order(patient_id, date_of_service)}],
            },
        },
        "prefetch": prefetch,
    }


def prefetch_resources(request: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Resources per prefetch key (the patient key holds one resource, the others Bundles)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, value in (request.get("prefetch") or {}).items():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out[key] = [e["resource"] for e in value.get("entry", [])]
        elif isinstance(value, dict):
            out[key] = [value]
        else:
            out[key] = []
    return out


def prefetch_resource_count(request: dict[str, Any]) -> int:
    return sum(len(v) for v in prefetch_resources(request).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write an order-sign request with complete prefetch.")
    parser.add_argument("resources", type=int, help="resources in the prefetch (the patient's record)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--date-of-service", type=date.fromisoformat, default=None,
                        help="YYYY-MM-DD (default: 14 days from today)")
    args = parser.parse_args(argv)
    when = args.date_of_service or date.today() + timedelta(days=14)
    json.dump(order_sign_request(args.resources, date_of_service=when, seed=args.seed), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
