"""The only module that reads FHIR: R4 resources -> typed, immutable facts.

How resources are validated (and why): every resource of a type the policy reads is checked, field by
field, for the elements the policy reads (types, FHIR date/dateTime syntax, required-binding status
codes, numbers). Only when that check finds a problem is the resource validated with its
``fhir.resources.R4B`` model, whose message then names the fault (e.g. ``Observation/9:
effectiveDateTime: DateTime value string does not match spec regex``); the resource is skipped and
named in the Decision, never raised. Validating every resource with the R4B model costs 50–60 µs per
resource (measured: 300 resources ≈ 17 ms), over the 5 ms budget for a 300-resource patient, and the
policy reads a dozen fields; the R4B model stays the arbiter of what is wrong, on the rare bad resource.
Resources of types the policy does not read are not parsed at all, so an unrelated bad field cannot sink
a request. Nothing is cached across requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.terminology import normalize

Coding = tuple[str, str]  # (normalised system, normalised code)

# Required-binding status codes (FHIR R4). A value outside them makes the resource invalid.
_CONDITION_CLINICAL = frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"})
_CONDITION_VERIFICATION = frozenset(
    {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
)
_STATUSES: dict[str, frozenset[str]] = {
    "Observation": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
    ),
    "Procedure": frozenset(
        {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
    ),
    "MedicationRequest": frozenset(
        {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
    ),
    "MedicationStatement": frozenset(
        {"active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"}
    ),
    "MedicationAdministration": frozenset(
        {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
    ),
    "Encounter": frozenset(
        {
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    "Device": frozenset({"active", "inactive", "entered-in-error", "unknown"}),
    "QuestionnaireResponse": frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"}),
    "ServiceRequest": frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}),
}
_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class Invalid(ValueError):
    """A read element breaks FHIR R4; the message names the element."""


# --------------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True, slots=True)
class Concept:
    codings: tuple[Coding, ...] = ()
    text: str = ""  # CodeableConcept.text, else the first display
    search_text: str = ""  # text and every display, lower case (for keyword rules, never for matching)


@dataclass(frozen=True, slots=True)
class PatientInfo:
    reference: str
    birth_date: str | None  # as recorded: YYYY, YYYY-MM or YYYY-MM-DD


@dataclass(frozen=True, slots=True)
class ConditionFact:
    reference: str
    concept: Concept
    clinical_status: str | None
    verification_status: str | None
    onset: date | None
    abatement: date | None
    recorded: date | None
    severity: Concept

    @property
    def void(self) -> bool:
        """Entered in error or refuted: not evidence of anything."""
        return self.verification_status in ("entered-in-error", "refuted")

    @property
    def active(self) -> bool:
        # A Condition without clinicalStatus is taken as current (problem-list entries often omit it).
        return self.clinical_status in (None, "active", "recurrence", "relapse")

    @property
    def confirmed(self) -> bool:
        return self.verification_status in (None, "confirmed")

    @property
    def event_date(self) -> date | None:
        """When the condition happened: onset, else the date it was recorded."""
        return self.onset or self.recorded


@dataclass(frozen=True, slots=True)
class ObservationFact:
    reference: str
    concept: Concept
    status: str
    effective: date | None  # effectiveDateTime / Period.start / instant / issued
    effective_end: date | None  # effectivePeriod.end
    value: float | None
    unit: str | None  # UCUM code, else unit text
    value_concept: Concept

    @property
    def usable(self) -> bool:
        return self.status in ("final", "amended", "corrected", "preliminary")


@dataclass(frozen=True, slots=True)
class ProcedureFact:
    reference: str
    concept: Concept
    status: str
    performed: date | None

    @property
    def done(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class MedicationFact:
    reference: str
    resource_type: str  # MedicationRequest, MedicationStatement or MedicationAdministration
    concept: Concept
    status: str
    intent: str | None
    when: date | None  # authoredOn, or effective[x] (start) for statements and administrations
    in_order_set: bool = False  # a draft order of this hook call


@dataclass(frozen=True, slots=True)
class EncounterFact:
    reference: str
    status: str
    class_code: str | None
    types: tuple[Concept, ...]
    reasons: tuple[Concept, ...]
    diagnosis_refs: tuple[str, ...]
    start: date | None


@dataclass(frozen=True, slots=True)
class DeviceFact:
    reference: str
    concept: Concept
    status: str | None


@dataclass(frozen=True, slots=True)
class QuestionnaireAnswers:
    reference: str
    questionnaire: str  # canonical URL without |version
    status: str
    authored: date | None
    answers: Mapping[str, tuple[Any, ...]]  # linkId -> answer values (bool, str, date, float)


@dataclass(frozen=True, slots=True)
class OrderFacts:
    reference: str
    resource_type: str
    id: str
    concept: Concept  # the order's code (ServiceRequest.code, medicationCodeableConcept, …)
    search_text: str  # code text, reasons and notes, lower case: for exclusion keywords
    status: str | None
    occurrence: date | None
    authored: date | None


@dataclass(frozen=True)
class PatientFacts:
    patient: PatientInfo | None
    conditions: tuple[ConditionFact, ...] = ()
    observations: tuple[ObservationFact, ...] = ()
    procedures: tuple[ProcedureFact, ...] = ()
    medications: tuple[MedicationFact, ...] = ()
    encounters: tuple[EncounterFact, ...] = ()
    devices: tuple[DeviceFact, ...] = ()
    questionnaire_responses: tuple[QuestionnaireAnswers, ...] = ()
    skipped: tuple[str, ...] = ()  # "Observation/9: <reason>"
    gaps: Mapping[str, str] = field(default_factory=dict)  # prefetch key -> why it could not be obtained

    def condition_by_ref(self, reference: str) -> ConditionFact | None:
        for c in self.conditions:
            if c.reference == reference:
                return c
        return None


# --------------------------------------------------------------------------------------------------
# Element readers (raise Invalid naming the element)


def parse_fhir_date(value: Any, where: str) -> date:
    """A FHIR date/dateTime/instant as a date (partial dates: first day of the month/year)."""
    if not isinstance(value, str):
        raise Invalid(f"{where}: not a date string")
    m = _DATE_RE.match(value)
    if not m:
        raise Invalid(f"{where}: {value!r} is not a FHIR date/dateTime")
    try:
        return date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError as exc:
        raise Invalid(f"{where}: {value!r} is not a valid date") from exc


def _opt_date(value: Any, where: str) -> date | None:
    return None if value is None else parse_fhir_date(value, where)


def _str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{where}: must be a string")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{where}: must be a list")
    return value


def _dict(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{where}: must be an object")
    return value


def read_concept(value: Any, where: str) -> Concept:
    cc = _dict(value, where)
    if cc is None:
        return Concept()
    codings: list[Coding] = []
    displays: list[str] = []
    # Hot path (every coded element of every resource): type checks inline, and the location
    # string of an error is built only when there is an error.
    for i, coding in enumerate(_list(cc.get("coding"), f"{where}.coding")):
        if not isinstance(coding, dict):
            raise Invalid(f"{where}.coding[{i}]: must be an object")
        system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
        if not (
            (system is None or type(system) is str)
            and (code is None or type(code) is str)
            and (display is None or type(display) is str)
        ):
            name = next(n for n in ("system", "code", "display") if not isinstance(coding.get(n), str | None))
            raise Invalid(f"{where}.coding[{i}].{name}: must be a string")
        if code:
            codings.append(normalize(system, code))
        if display:
            displays.append(display)
    text = _str(cc.get("text"), f"{where}.text") or ""
    shown = text or (displays[0] if displays else "")
    search = "\n".join([text, *displays]).lower()  # one line per source: a clause never spans two
    return Concept(tuple(codings), shown, search)


def _concepts(value: Any, where: str) -> tuple[Concept, ...]:
    return tuple(read_concept(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _status_code(resource: Mapping[str, Any], rtype: str, required: bool = True) -> str:
    status = resource.get("status")
    if status is None and not required:
        return "unknown"
    if not isinstance(status, str) or status not in _STATUSES[rtype]:
        raise Invalid(f"status: {status!r} is not a {rtype} status code")
    return status


def _single_code(value: Any, where: str, allowed: frozenset[str]) -> str | None:
    concept = read_concept(value, where)
    for _system, code in concept.codings:
        if code in allowed:
            return code
        raise Invalid(f"{where}: {code!r} is not an allowed code")
    return None


def _period_start(period: Any, where: str) -> date | None:
    p = _dict(period, where)
    return None if p is None else _opt_date(p.get("start"), f"{where}.start")


def _period_end(period: Any, where: str) -> date | None:
    p = _dict(period, where)
    return None if p is None else _opt_date(p.get("end"), f"{where}.end")


def _choice_date(resource: Mapping[str, Any], prefix: str) -> date | None:
    """<prefix>DateTime | <prefix>Period.start | <prefix>Instant | <prefix>Timing.event[0]."""
    if f"{prefix}DateTime" in resource:
        return parse_fhir_date(resource[f"{prefix}DateTime"], f"{prefix}DateTime")
    if f"{prefix}Period" in resource:
        return _period_start(resource[f"{prefix}Period"], f"{prefix}Period")
    if f"{prefix}Instant" in resource:
        return parse_fhir_date(resource[f"{prefix}Instant"], f"{prefix}Instant")
    if f"{prefix}Timing" in resource:
        timing = _dict(resource[f"{prefix}Timing"], f"{prefix}Timing") or {}
        events = _list(timing.get("event"), f"{prefix}Timing.event")
        if events:
            return parse_fhir_date(events[0], f"{prefix}Timing.event[0]")
        bounds = _dict(timing.get("repeat"), f"{prefix}Timing.repeat") or {}
        return _period_start(bounds.get("boundsPeriod"), f"{prefix}Timing.repeat.boundsPeriod")
    if f"{prefix}Age" in resource or f"{prefix}String" in resource or f"{prefix}Range" in resource:
        return None
    return None


def _ref(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


# --------------------------------------------------------------------------------------------------
# Resource readers


def _read_patient(r: Mapping[str, Any], ctx: _Context) -> PatientInfo:
    birth = r.get("birthDate")
    if birth is not None:
        if not isinstance(birth, str) or not re.match(r"^\d{4}(-\d{2}(-\d{2})?)?$", birth):
            raise Invalid(f"birthDate: {birth!r} is not a FHIR date")
        parse_fhir_date(birth, "birthDate")
    return PatientInfo(_ref(r), birth)


def _read_condition(r: Mapping[str, Any], ctx: _Context) -> ConditionFact:
    return ConditionFact(
        reference=_ref(r),
        concept=read_concept(r.get("code"), "code"),
        clinical_status=_single_code(r.get("clinicalStatus"), "clinicalStatus", _CONDITION_CLINICAL),
        verification_status=_single_code(r.get("verificationStatus"), "verificationStatus", _CONDITION_VERIFICATION),
        onset=_choice_date(r, "onset"),
        abatement=_choice_date(r, "abatement"),
        recorded=_opt_date(r.get("recordedDate"), "recordedDate"),
        severity=read_concept(r.get("severity"), "severity"),
    )


def _read_observation(r: Mapping[str, Any], ctx: _Context) -> ObservationFact:
    status = _status_code(r, "Observation")
    if "code" not in r:
        raise Invalid("code: required")
    value: float | None = None
    unit: str | None = None
    if "valueQuantity" in r:
        q = _dict(r["valueQuantity"], "valueQuantity") or {}
        raw = q.get("value")
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise Invalid("valueQuantity.value: must be a number")
            value = float(raw)
        unit = _str(q.get("code"), "valueQuantity.code") or _str(q.get("unit"), "valueQuantity.unit")
    effective = _choice_date(r, "effective")
    if effective is None and "issued" in r:
        effective = parse_fhir_date(r["issued"], "issued")
    end = _period_end(r.get("effectivePeriod"), "effectivePeriod") if "effectivePeriod" in r else None
    return ObservationFact(
        reference=_ref(r),
        concept=read_concept(r.get("code"), "code"),
        status=status,
        effective=effective,
        effective_end=end,
        value=value,
        unit=unit,
        value_concept=read_concept(r.get("valueCodeableConcept"), "valueCodeableConcept"),
    )


def _read_procedure(r: Mapping[str, Any], ctx: _Context) -> ProcedureFact:
    return ProcedureFact(
        reference=_ref(r),
        concept=read_concept(r.get("code"), "code"),
        status=_status_code(r, "Procedure"),
        performed=_choice_date(r, "performed"),
    )


def _medication_concept(r: Mapping[str, Any], ctx: _Context) -> Concept:
    if "medicationCodeableConcept" in r:
        return read_concept(r["medicationCodeableConcept"], "medicationCodeableConcept")
    ref = _dict(r.get("medicationReference"), "medicationReference") or {}
    target = _str(ref.get("reference"), "medicationReference.reference") or ""
    display = _str(ref.get("display"), "medicationReference.display") or ""
    med: Any = None
    if target.startswith("#"):
        for contained in _list(r.get("contained"), "contained"):
            if isinstance(contained, dict) and contained.get("id") == target[1:]:
                med = contained
    else:
        med = ctx.medications.get(target)
    if isinstance(med, dict):
        concept = read_concept(med.get("code"), "medicationReference->Medication.code")
        if display and display.lower() not in concept.search_text:
            return Concept(concept.codings, concept.text or display, f"{concept.search_text} {display.lower()}")
        return concept
    return Concept((), display, display.lower())


def _read_medication_request(r: Mapping[str, Any], ctx: _Context) -> MedicationFact:
    return MedicationFact(
        reference=_ref(r),
        resource_type="MedicationRequest",
        concept=_medication_concept(r, ctx),
        status=_status_code(r, "MedicationRequest"),
        intent=_str(r.get("intent"), "intent"),
        when=_opt_date(r.get("authoredOn"), "authoredOn"),
    )


def _read_medication_statement(r: Mapping[str, Any], ctx: _Context) -> MedicationFact:
    when = _choice_date(r, "effective")
    if when is None and "dateAsserted" in r:
        when = parse_fhir_date(r["dateAsserted"], "dateAsserted")
    return MedicationFact(
        reference=_ref(r),
        resource_type="MedicationStatement",
        concept=_medication_concept(r, ctx),
        status=_status_code(r, "MedicationStatement"),
        intent=None,
        when=when,
    )


def _read_medication_administration(r: Mapping[str, Any], ctx: _Context) -> MedicationFact:
    # An administration (completed = given) is how a Lantidra infusion is often recorded (DESIGN §3 A8).
    return MedicationFact(
        reference=_ref(r),
        resource_type="MedicationAdministration",
        concept=_medication_concept(r, ctx),
        status=_status_code(r, "MedicationAdministration"),
        intent=None,
        when=_choice_date(r, "effective"),
    )


def _read_encounter(r: Mapping[str, Any], ctx: _Context) -> EncounterFact:
    klass = _dict(r.get("class"), "class") or {}
    refs: list[str] = []
    for i, diag in enumerate(_list(r.get("diagnosis"), "diagnosis")):
        cond = _dict(diag.get("condition") if isinstance(diag, dict) else None, f"diagnosis[{i}].condition") or {}
        target = _str(cond.get("reference"), f"diagnosis[{i}].condition.reference")
        if target:
            refs.append(target)
    return EncounterFact(
        reference=_ref(r),
        status=_status_code(r, "Encounter"),
        class_code=_str(klass.get("code"), "class.code"),
        types=_concepts(r.get("type"), "type"),
        reasons=_concepts(r.get("reasonCode"), "reasonCode"),
        diagnosis_refs=tuple(refs),
        start=_period_start(r.get("period"), "period"),
    )


def _read_device(r: Mapping[str, Any], ctx: _Context) -> DeviceFact:
    concept = read_concept(r.get("type"), "type")
    names = [n.get("name") for n in _list(r.get("deviceName"), "deviceName") if isinstance(n, dict)]
    extra = " ".join(n for n in names if isinstance(n, str)).lower()
    if extra:
        concept = Concept(concept.codings, concept.text or extra, f"{concept.search_text} {extra}")
    return DeviceFact(_ref(r), concept, _status_code(r, "Device", required=False) if "status" in r else None)


def _answer_values(answers: Any, where: str) -> list[Any]:
    out: list[Any] = []
    for i, answer in enumerate(_list(answers, where)):
        if not isinstance(answer, dict):
            raise Invalid(f"{where}[{i}]: must be an object")
        for key, value in answer.items():
            if not key.startswith("value"):
                continue
            if key == "valueBoolean":
                if not isinstance(value, bool):
                    raise Invalid(f"{where}[{i}].valueBoolean: must be true or false")
                out.append(value)
            elif key in ("valueDate", "valueDateTime"):
                out.append(parse_fhir_date(value, f"{where}[{i}].{key}"))
            elif key == "valueCoding":
                coding = _dict(value, f"{where}[{i}].valueCoding") or {}
                code = str(coding.get("code") or "").lower()
                out.append(
                    {"y": True, "yes": True, "true": True, "n": False, "no": False, "false": False}.get(
                        code, coding.get("display") or code
                    )
                )
            elif isinstance(value, str | int | float):
                out.append(value)
    return out


def _collect_items(items: Any, where: str, into: dict[str, list[Any]]) -> None:
    for i, item in enumerate(_list(items, where)):
        if not isinstance(item, dict):
            raise Invalid(f"{where}[{i}]: must be an object")
        link_id = _str(item.get("linkId"), f"{where}[{i}].linkId")
        values = _answer_values(item.get("answer"), f"{where}[{i}].answer")
        if link_id:
            into.setdefault(link_id, []).extend(values)
        _collect_items(item.get("item"), f"{where}[{i}].item", into)
        for j, answer in enumerate(_list(item.get("answer"), f"{where}[{i}].answer")):
            _collect_items(answer.get("item"), f"{where}[{i}].answer[{j}].item", into)


def _read_questionnaire_response(r: Mapping[str, Any], ctx: _Context) -> QuestionnaireAnswers:
    canonical = (_str(r.get("questionnaire"), "questionnaire") or "").split("|", 1)[0]
    answers: dict[str, list[Any]] = {}
    _collect_items(r.get("item"), "item", answers)
    return QuestionnaireAnswers(
        reference=_ref(r),
        questionnaire=canonical,
        status=_status_code(r, "QuestionnaireResponse"),
        authored=_opt_date(r.get("authored"), "authored"),
        answers={k: tuple(v) for k, v in answers.items()},
    )


@dataclass
class _Context:
    medications: dict[str, Mapping[str, Any]]  # "Medication/x" -> Medication resource (from _include)


_READERS: dict[str, Any] = {
    "Patient": _read_patient,
    "Condition": _read_condition,
    "Observation": _read_observation,
    "Procedure": _read_procedure,
    "MedicationRequest": _read_medication_request,
    "MedicationStatement": _read_medication_statement,
    "MedicationAdministration": _read_medication_administration,
    "Encounter": _read_encounter,
    "Device": _read_device,
    "QuestionnaireResponse": _read_questionnaire_response,
}


def _r4b_reason(resource: Mapping[str, Any]) -> str | None:
    """The R4B model's first complaint about ``resource`` (None if the model accepts it)."""
    from importlib import import_module

    rtype = str(resource.get("resourceType"))
    try:
        module = import_module(f"fhir.resources.R4B.{rtype.lower()}")
        model = getattr(module, rtype)
        model.model_validate(dict(resource))
    except Exception as exc:  # pydantic ValidationError or a construction error: report, never raise
        errors = getattr(exc, "errors", None)
        if callable(errors):
            try:
                first = errors()[0]
                loc = ".".join(str(p) for p in first.get("loc", ()))
                return f"{loc}: {first.get('msg', '')}".strip(": ")
            except Exception:  # pragma: no cover - defensive
                pass
        return str(exc).splitlines()[0][:200]
    return None


def order_problem(order: Mapping[str, Any]) -> str | None:
    """Why a draft order is not a valid FHIR R4 resource ("field: message"), or None if it is.

    Orders are few per call, so they get the full R4B model check: an invalid order is the
    client's error (400), not something to skip quietly.
    """
    return _r4b_reason(order)


def _skip_reason(resource: Mapping[str, Any], problem: str) -> str:
    model_reason = _r4b_reason(resource)
    reason = model_reason or problem
    return f"{_ref(resource)}: {reason[:200]}"


def read_facts(
    record: Mapping[str, Sequence[Mapping[str, Any]] | None], gaps: Mapping[str, str] | None = None
) -> PatientFacts:
    """Typed facts from the patient's record (prefetch key -> resources) and the keys that failed."""
    resources: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    medications: dict[str, Mapping[str, Any]] = {}
    for items in record.values():
        for r in items or ():
            if not isinstance(r, Mapping):
                continue
            rtype = r.get("resourceType")
            if rtype == "Medication" and isinstance(r.get("id"), str):
                medications[f"Medication/{r['id']}"] = r
            if rtype not in _READERS:
                continue  # not read by the policy: not parsed, so it cannot fail the request
            ref = _ref(r)
            if ref in seen and r.get("id") is not None:
                continue
            seen.add(ref)
            resources.append(r)
    ctx = _Context(medications)
    buckets: dict[str, list[Any]] = {t: [] for t in _READERS}
    skipped: list[str] = []
    for r in resources:
        rtype = str(r["resourceType"])
        if not isinstance(r.get("id"), str):
            skipped.append(f"{rtype}/(no id): id: required to cite the resource")
            continue
        try:
            buckets[rtype].append(_READERS[rtype](r, ctx))
        except Invalid as exc:
            skipped.append(_skip_reason(r, str(exc)))
    patients = buckets["Patient"]
    return PatientFacts(
        patient=patients[0] if patients else None,
        conditions=tuple(buckets["Condition"]),
        observations=tuple(buckets["Observation"]),
        procedures=tuple(buckets["Procedure"]),
        medications=tuple(
            buckets["MedicationRequest"] + buckets["MedicationStatement"] + buckets["MedicationAdministration"]
        ),
        encounters=tuple(buckets["Encounter"]),
        devices=tuple(buckets["Device"]),
        questionnaire_responses=tuple(buckets["QuestionnaireResponse"]),
        skipped=tuple(skipped),
        gaps=dict(gaps or {}),
    )


# --------------------------------------------------------------------------------------------------
# Orders (the hook's draft orders; also FHIR, so read here)

_ORDER_CODE_FIELDS = {
    "ServiceRequest": "code",
    "MedicationRequest": "medicationCodeableConcept",
    "DeviceRequest": "codeCodeableConcept",
    "NutritionOrder": None,
    "VisionPrescription": None,
    "CommunicationRequest": None,
}


def _notes_text(resource: Mapping[str, Any]) -> list[str]:
    out = []
    for note in resource.get("note") or []:
        if isinstance(note, dict) and isinstance(note.get("text"), str):
            out.append(note["text"])
    return out


def _order_concept(order: Mapping[str, Any]) -> Concept | None:
    """The code of a draft order (raises Invalid naming the field); None for a type with no code."""
    rtype = order.get("resourceType")
    if rtype == "Appointment":
        # Appointment has no code of its own: serviceType names what is booked.
        concepts = _concepts(order.get("serviceType"), "serviceType")
        codings = tuple(c for concept in concepts for c in concept.codings)
        text = " / ".join(c.text for c in concepts if c.text)
        return Concept(codings, text, "\n".join(c.search_text for c in concepts))
    if rtype in _ORDER_CODE_FIELDS:
        code_field = _ORDER_CODE_FIELDS[str(rtype)]
        if rtype == "MedicationRequest" and "medicationCodeableConcept" not in order:
            return _medication_concept(order, _Context({}))
        return read_concept(order.get(code_field), code_field) if code_field else Concept()
    return None


def order_concept(order: Mapping[str, Any]) -> Concept | None:
    """The draft order's code alone, or None if it cannot be read: scope decides on codes only, so an
    unreadable date or note never hides an order that the policy covers."""
    try:
        return _order_concept(order)
    except Invalid:
        return None


def _occurrence_source(order: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(field path, raw value) of the occurrence the date of service is read from, if any."""
    if order.get("resourceType") == "Appointment":
        return ("start", order["start"]) if "start" in order else None
    if "occurrenceDateTime" in order:
        return "occurrenceDateTime", order["occurrenceDateTime"]
    period = order.get("occurrencePeriod")
    if isinstance(period, dict) and "start" in period:
        return "occurrencePeriod.start", period["start"]
    timing = order.get("occurrenceTiming")
    if isinstance(timing, dict):
        events = timing.get("event")
        if isinstance(events, list) and events:
            return "occurrenceTiming.event[0]", events[0]
        bounds = timing.get("repeat")
        period = bounds.get("boundsPeriod") if isinstance(bounds, dict) else None
        if isinstance(period, dict) and "start" in period:
            return "occurrenceTiming.repeat.boundsPeriod.start", period["start"]
    return None


def date_of_service_source(order: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field path, value as written) that gives the order's date of service, or None (today is used).

    Same rule as ``read_order``: the occurrence, except that a year-only or year-month occurrence
    gives way to a later authoredOn.
    """
    facts = read_order(order)
    if facts is None:
        return None
    source = _occurrence_source(order)
    replaced_by_authored = facts.authored is not None and facts.occurrence == facts.authored
    if facts.occurrence is not None and source is not None and not (replaced_by_authored and _is_partial(source[1])):
        return source[0], str(source[1])
    if facts.authored is not None:
        return "authoredOn", str(order.get("authoredOn"))
    return None


def _is_partial(value: Any) -> bool:
    """A year-only or year-month FHIR date ("2026", "2026-03")."""
    return isinstance(value, str) and len(value) <= 7


def _parse_order(order: Mapping[str, Any]) -> OrderFacts | None:
    """read_order's parser: raises Invalid naming the first unreadable field."""
    rtype = order.get("resourceType")
    concept = _order_concept(order)
    if concept is None:
        return None
    is_appointment = rtype == "Appointment"
    occurrence = _opt_date(order.get("start"), "start") if is_appointment else _choice_date(order, "occurrence")
    authored = _opt_date(order.get("authoredOn"), "authoredOn")
    source = _occurrence_source(order)
    if occurrence is not None and authored is not None and source is not None and _is_partial(source[1]):
        # "2026" reads as 1 January: a later authoredOn is the better estimate of the date of service.
        occurrence = max(occurrence, authored)
    reasons = _concepts(order.get("reasonCode"), "reasonCode")
    parts = [concept.search_text, *(c.search_text for c in reasons), *(t.lower() for t in _notes_text(order))]
    instruction = order.get("patientInstruction")
    if isinstance(instruction, str):
        parts.append(instruction.lower())
    description = order.get("description")
    if isinstance(description, str):
        parts.append(description.lower())
    status = order.get("status") if isinstance(order.get("status"), str) else None
    return OrderFacts(
        reference=_ref(order),
        resource_type=str(rtype),
        id=str(order.get("id")),
        concept=concept,
        search_text="\n".join(p for p in parts if p),
        status=status,
        occurrence=occurrence,
        authored=authored,
    )


def read_order(order: Mapping[str, Any]) -> OrderFacts | None:
    """The codes, text and dates of a draft order; None if it cannot be read (never raises)."""
    try:
        return _parse_order(order)
    except Invalid:
        return None


def order_read_problem(order: Mapping[str, Any]) -> str | None:
    """Why ``read_order`` cannot read a draft order ("field: reason"), or None if it can.

    The pipeline answers 400 naming the field instead of silently dropping the order.
    """
    try:
        _parse_order(order)
    except Invalid as exc:
        return str(exc)
    return None


def order_medication_facts(orders: Iterable[Mapping[str, Any]]) -> tuple[MedicationFact, ...]:
    """MedicationRequests of the order set, as medication facts (A6 reads draft orders too)."""
    out = []
    for order in orders:
        if order.get("resourceType") != "MedicationRequest":
            continue
        try:
            fact = _read_medication_request(order, _Context({}))
        except Invalid:
            continue
        out.append(
            MedicationFact(fact.reference, fact.resource_type, fact.concept, fact.status, fact.intent, fact.when, True)
        )
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Units

GLUCOSE_MMOL_TO_MG_DL = 18.0


_UCUM_ANNOTATION = re.compile(r"\{[^}]*\}")
# Without a unit, a value in this range can only be % (mmol/mol values start near 20).
UNITLESS_HBA1C_PERCENT_RANGE = (3.0, 20.0)


def _unit_key(unit: str) -> str:
    """A unit compared loosely: UCUM {annotations} removed, lower case, no spaces ("%{HbA1c}" -> "%")."""
    return _UCUM_ANNOTATION.sub("", unit).lower().replace(" ", "")


def hba1c_percent(obs: ObservationFact) -> float | None:
    """HbA1c in % (NGSP); mmol/mol (IFCC) converted with the NGSP master equation; None if the unit
    cannot be used."""
    if obs.value is None:
        return None
    if obs.unit is None or not obs.unit.strip():
        low, high = UNITLESS_HBA1C_PERCENT_RANGE
        return obs.value if low <= obs.value <= high else None
    unit = _unit_key(obs.unit)
    if unit in ("%", "percent", "%hb", "%hgb", "%hba1c", "%oftotalhgb", "%oftotalhb", "%hemoglobin"):
        return obs.value
    if unit in ("mmol/mol", "mmol/molhb", "mmol/molhgb"):
        return round(obs.value * 0.09148 + 2.152, 2)
    if unit == "1" and 0.03 <= obs.value <= 0.2:
        return round(obs.value * 100, 2)  # UCUM "1": a fraction of total haemoglobin
    return None


def glucose_mg_dl(obs: ObservationFact) -> float | None:
    if obs.value is None or obs.unit is None:
        return None
    unit = obs.unit.strip().lower()
    if unit in ("mg/dl", "mg/100ml"):
        return obs.value
    if unit in ("mmol/l", "mmol/litre"):
        return round(obs.value * GLUCOSE_MMOL_TO_MG_DL, 1)
    return None
