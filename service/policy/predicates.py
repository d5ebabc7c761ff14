"""The predicate library: small pure functions named by the policy file's criteria.

Each predicate takes the evaluation context (facts, the order, the date of service, the value sets)
and the criterion's parameters from the policy file, and returns a Finding: a status, the key of the
reason template to use (``met``/``not_met``/``unknown`` or a variant the file defines), the values for
the template's placeholders, and the evidence. No I/O, no clock: dates come from the context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from service.decision import CriterionStatus, Evidence
from service.facts import (
    Concept,
    ConditionFact,
    MedicationFact,
    ObservationFact,
    OrderFacts,
    PatientFacts,
    ProcedureFact,
    glucose_mg_dl,
    hba1c_percent,
)
from service.terminology import ValueSet, display_code

# predicate name -> parameters the policy file must give it (checked at load).
PREDICATE_PARAMS: dict[str, tuple[str, ...]] = {
    "age_at_least": ("years",),
    "diagnosis_established": ("valueset",),
    "count_events": ("valueset", "min_events", "window_days"),
    "latest_observation_at_least": ("valueset", "window_days", "target_percent"),
    "intensive_management": (
        "pump_valueset",
        "cgm_valueset",
        "basal_valueset",
        "bolus_valueset",
        "education_valueset",
        "window_days",
    ),
    "has_order": ("valueset", "statuses"),
    "no_evidence_of": ("valueset",),
    "count_prior_events_below": ("valueset", "max_prior"),
    "repeat_interval": ("valueset", "wait_days", "insulin_valueset"),
    "procedure_in_order_set_or_recent": ("valueset", "window_days"),
    "diagnosis_with_severity": ("valueset", "severity_valueset"),
    "documentation_only": (),
    "order_mentions": ("keywords", "negation_cues"),
}


@dataclass(frozen=True)
class Context:
    facts: PatientFacts
    order: OrderFacts
    order_set: tuple[OrderFacts, ...]  # the other orders of the same hook call
    order_set_medications: tuple[MedicationFact, ...]  # MedicationRequests of the order set
    date_of_service: date
    valuesets: Mapping[str, ValueSet]
    is_lantidra: Callable[[Concept], bool]

    def vs(self, params: Mapping[str, Any], name: str) -> ValueSet:
        return self.valuesets[params[name]]

    def in_window(self, when: date | None, days: int) -> bool:
        return when is not None and shift_date(self.date_of_service, -days) <= when <= self.date_of_service


def shift_date(when: date, days: int) -> date:
    """``when`` plus ``days``, clamped to date.min/date.max (extreme dates must not raise OverflowError)."""
    try:
        return when + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


@dataclass(frozen=True)
class Finding:
    status: CriterionStatus
    reason_key: str
    values: Mapping[str, Any] = field(default_factory=dict)
    evidence: tuple[Evidence, ...] = ()
    earliest_eligible: date | None = None


Predicate = Callable[[Context, Mapping[str, Any]], Finding]


# --------------------------------------------------------------------------------------------------
# Helpers


def _iso(when: date | None) -> str | None:
    return when.isoformat() if when else None


def _label(vs: ValueSet, concept: Concept, coding: tuple[str, str]) -> str:
    """Human label of a matched code: its display (policy value set first), then the code."""
    display = vs.displays.get(coding) or concept.text
    code = display_code(*coding)
    return f"{display} ({code})" if display else code


def _evidence(
    reference: str,
    vs: ValueSet,
    concept: Concept,
    coding: tuple[str, str],
    when: date | None,
    value: str | None = None,
    note: str | None = None,
) -> Evidence:
    return Evidence(
        reference=reference,
        system=coding[0],
        code=display_code(*coding),
        display=vs.displays.get(coding) or concept.text or None,
        date=_iso(when),
        value=value,
        note=note,
    )


def matching_conditions(ctx: Context, vs: ValueSet) -> list[tuple[ConditionFact, tuple[str, str]]]:
    """Conditions in ``vs``, entered-in-error and refuted ones ignored."""
    out = []
    for cond in ctx.facts.conditions:
        if cond.void:
            continue
        coding = vs.first_match(cond.concept.codings)
        if coding is not None:
            out.append((cond, coding))
    return out


def matching_procedures(
    ctx: Context, vs: ValueSet, done_only: bool = True
) -> list[tuple[ProcedureFact, tuple[str, str]]]:
    out = []
    for proc in ctx.facts.procedures:
        if done_only and not proc.done:
            continue
        coding = vs.first_match(proc.concept.codings)
        if coding is not None:
            out.append((proc, coding))
    return out


def _keyword_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return _compiled_keywords(tuple(w.lower() for w in words))


@lru_cache(maxsize=64)
def _compiled_keywords(words: tuple[str, ...]) -> re.Pattern[str]:
    # Whole words/phrases only: "lifestyle" must not hit inside another word; longest phrase first.
    ordered = sorted(words, key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(w) for w in ordered) + r")(?![a-z0-9])")


# A clause ends at punctuation, a line break (each order field is its own line) or "but".
_CLAUSE_BREAK = re.compile(r"[.;:!?,\n]|(?<![a-z0-9])but(?![a-z0-9])")


def _clause_before(text: str, position: int) -> str:
    """The part of ``text``'s clause that precedes ``position``."""
    start = 0
    for found in _CLAUSE_BREAK.finditer(text, 0, position):
        start = found.end()
    return text[start:position]


def find_keyword(text: str, words: Iterable[str], negation_cues: Iterable[str] = ()) -> str | None:
    """The first listed phrase in ``text`` that no negation cue precedes in the same clause.

    "NOT for lifestyle reasons", "despite lifestyle modification", "no machine perfusion used":
    a cue (no, not, despite, …) before the phrase in its clause cancels that hit.
    """
    lowered = text.lower()
    cues = tuple(negation_cues)
    negation = _keyword_pattern(cues) if cues else None
    for found in _keyword_pattern(tuple(words)).finditer(lowered):
        if negation is not None and negation.search(_clause_before(lowered, found.start())):
            continue
        return found.group(1)
    return None


# --------------------------------------------------------------------------------------------------
# Predicates


def birth_date_range(birth: str) -> tuple[date, date]:
    """(earliest, latest) possible birth day of a FHIR date YYYY, YYYY-MM or YYYY-MM-DD."""
    parts = [int(p) for p in birth.split("-")]
    if len(parts) == 3:
        exact = date(parts[0], parts[1], parts[2])
        return exact, exact
    if len(parts) == 2:
        first = date(parts[0], parts[1], 1)
        last = date(parts[0], 12, 31) if parts[1] == 12 else shift_date(date(parts[0], parts[1] + 1, 1), -1)
        return first, last
    return date(parts[0], 1, 1), date(parts[0], 12, 31)


def age_on(born: date, on: date) -> int:
    """Whole years; a 29 February birthday is reached on 1 March in common years."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_finding(birth: str, dos: date, years: int, values: dict[str, Any], evidence: tuple[Evidence, ...]) -> Finding:
    """A1 from a birth date (the record's or an attested one)."""
    earliest, latest = birth_date_range(birth)
    values["birth_date"] = birth
    if earliest > dos:
        # A birth date after the date of service is a data error, not evidence of youth.
        return Finding("unknown", "birth_after_service", values, evidence)
    youngest, oldest = age_on(latest, dos), age_on(earliest, dos)
    values["age"] = youngest if youngest == oldest else f"{max(youngest, 0)}–{oldest}"
    if youngest >= years:
        return Finding("met", "met", values, evidence)
    if oldest < years:
        return Finding("not_met", "not_met", values, evidence)
    return Finding("unknown", "partial_birth_date", values, evidence)


def age_at_least(ctx: Context, params: Mapping[str, Any]) -> Finding:
    years = int(params["years"])
    dos = ctx.date_of_service
    values: dict[str, Any] = {"years": years, "date_of_service": dos.isoformat()}
    patient = ctx.facts.patient
    if patient is None or not patient.birth_date:
        return Finding("unknown", "unknown", values)
    evidence = (Evidence(reference=patient.reference, date=patient.birth_date, note="birthDate"),)
    return age_finding(patient.birth_date, dos, years, values, evidence)


def diagnosis_established(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    found = matching_conditions(ctx, vs)
    active_confirmed = [(c, k) for c, k in found if c.active and c.confirmed]
    if active_confirmed:
        cond, coding = min(active_confirmed, key=lambda ck: (ck[0].event_date or date.max, ck[0].reference))
        ev = _evidence(cond.reference, vs, cond.concept, coding, cond.event_date)
        values = {"code": _label(vs, cond.concept, coding), "date": _iso(cond.event_date) or "an unrecorded date"}
        return Finding("met", "met", values, (ev,))
    if found:
        cond, coding = found[0]
        ev = _evidence(cond.reference, vs, cond.concept, coding, cond.event_date)
        values = {
            "code": _label(vs, cond.concept, coding),
            "clinical_status": cond.clinical_status or "",
            "verification_status": cond.verification_status or "",
        }
        key = "unconfirmed" if cond.active else "only_inactive"
        return Finding("unknown", key, values, (ev,))
    if "contrary_valueset" in params:
        contrary = ctx.vs(params, "contrary_valueset")
        others = [(c, k) for c, k in matching_conditions(ctx, contrary) if c.active and c.confirmed]
        if others:
            evidence = tuple(_evidence(c.reference, contrary, c.concept, k, c.event_date) for c, k in others)
            values = {"code": ", ".join(_label(contrary, c.concept, k) for c, k in others)}
            return Finding("not_met", "not_met", values, evidence)
    return Finding("unknown", "unknown", {})


def count_events(ctx: Context, params: Mapping[str, Any]) -> Finding:
    """Severe events on distinct days in the window: Conditions by onset (any clinical status) and
    emergency/inpatient encounters for hypoglycemia."""
    vs = ctx.vs(params, "valueset")
    window = int(params["window_days"])
    minimum = int(params["min_events"])
    days: dict[date, Evidence] = {}
    for cond, coding in matching_conditions(ctx, vs):
        when = cond.event_date
        if ctx.in_window(when, window) and when not in days:
            assert when is not None
            days[when] = _evidence(cond.reference, vs, cond.concept, coding, when)
    if "encounter_reason_valueset" in params:
        reason_vs = ctx.vs(params, "encounter_reason_valueset")
        classes = set(params.get("encounter_classes") or ())
        for enc in ctx.facts.encounters:
            if enc.status in ("cancelled", "entered-in-error", "planned") or enc.class_code not in classes:
                continue
            if not ctx.in_window(enc.start, window) or enc.start in days:
                continue
            hit: tuple[Concept, tuple[str, str]] | None = None
            for reason in enc.reasons:
                reason_coding = reason_vs.first_match(reason.codings) or vs.first_match(reason.codings)
                if reason_coding is not None:
                    hit = (reason, reason_coding)
                    break
            if hit is None:
                for ref in enc.diagnosis_refs:
                    diagnosis = ctx.facts.condition_by_ref(ref)
                    if diagnosis is None or diagnosis.void:
                        continue
                    codings = diagnosis.concept.codings
                    diag_coding = reason_vs.first_match(codings) or vs.first_match(codings)
                    if diag_coding is not None:
                        hit = (diagnosis.concept, diag_coding)
                        break
            if hit is not None and enc.start is not None:
                ev = _evidence(enc.reference, reason_vs, hit[0], hit[1], enc.start, note=f"{enc.class_code} encounter")
                days[enc.start] = ev
    count = len(days)
    values: dict[str, Any] = {"count": count, "window_days": window, "min_events": minimum}
    evidence = tuple(days[d] for d in sorted(days))
    if count >= minimum:
        return Finding("met", "met", values, evidence)
    supporting = _level2_evidence(ctx, params, window)
    if supporting:
        values["level2"] = "; ".join(
            f"{e.display or e.code}{' ' + e.value if e.value else ''} on {e.date}" for e in supporting[:3]
        )
        return Finding("unknown", "level2_only", values, evidence + supporting)
    return Finding("unknown", "unknown", values, evidence)


def _level2_evidence(ctx: Context, params: Mapping[str, Any], window: int) -> tuple[Evidence, ...]:
    note = "level 2: supporting evidence only"
    out: list[Evidence] = []
    if "level2_valueset" in params:
        vs2 = ctx.vs(params, "level2_valueset")
        for cond, coding in matching_conditions(ctx, vs2):
            if ctx.in_window(cond.event_date, window):
                out.append(_evidence(cond.reference, vs2, cond.concept, coding, cond.event_date, note=note))
    if "glucose_valueset" in params:
        gvs = ctx.vs(params, "glucose_valueset")
        threshold = float(params.get("glucose_threshold_mg_dl", 54.0))
        for obs in ctx.facts.observations:
            glucose_coding = gvs.first_match(obs.concept.codings)
            if glucose_coding is None or not obs.usable or not ctx.in_window(obs.effective, window):
                continue
            mg_dl = glucose_mg_dl(obs)
            if mg_dl is not None and mg_dl < threshold:
                value = f"{mg_dl:g} mg/dL" + (f" ({obs.value:g} {obs.unit})" if obs.unit != "mg/dL" else "")
                out.append(_evidence(obs.reference, gvs, obs.concept, glucose_coding, obs.effective, value, note))
    if "cgm_valueset" in params:
        cvs = ctx.vs(params, "cgm_valueset")
        threshold = float(params.get("cgm_threshold_percent", 1.0))
        for obs in ctx.facts.observations:
            cgm_coding = cvs.first_match(obs.concept.codings)
            if cgm_coding is None or not obs.usable or obs.value is None:
                continue
            if ctx.in_window(obs.effective, window) and obs.value > threshold:
                out.append(
                    _evidence(obs.reference, cvs, obs.concept, cgm_coding, obs.effective, f"{obs.value:g} %", note)
                )
    return tuple(out)


def latest_observation_at_least(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    window = int(params["window_days"])
    target = float(params["target_percent"])
    values: dict[str, Any] = {"window_days": window, "target_percent": f"{target:g}"}
    best: tuple[date, str, ObservationFact, tuple[str, str], float] | None = None
    unreadable: list[tuple[date, str, ObservationFact, tuple[str, str]]] = []
    for obs in ctx.facts.observations:
        coding = vs.first_match(obs.concept.codings)
        if coding is None or not obs.usable or not ctx.in_window(obs.effective, window) or obs.effective is None:
            continue
        percent = hba1c_percent(obs)
        if percent is None:
            if obs.value is not None:
                unreadable.append((obs.effective, obs.reference, obs, coding))
            continue
        key = (obs.effective, obs.reference)
        if best is None or key > (best[0], best[1]):
            best = (obs.effective, obs.reference, obs, coding, percent)
    if best is None:
        if unreadable:
            # A result exists but its unit cannot be used: say so rather than "no result".
            when, _ref, obs, coding = max(unreadable, key=lambda u: (u[0], u[1]))
            shown = f"{obs.value:g} {obs.unit or '(no unit)'}"
            values.update({"value": shown, "date": when.isoformat()})
            ev = _evidence(obs.reference, vs, obs.concept, coding, when, shown, note="unit not usable")
            return Finding("unknown", "unit_unusable", values, (ev,))
        return Finding("unknown", "unknown", values)
    when, _ref, obs, coding, percent = best
    shown = f"{percent:g} %" + (f" ({obs.value:g} {obs.unit})" if obs.unit and obs.unit.strip() != "%" else "")
    values.update({"value": shown, "date": when.isoformat()})
    ev = _evidence(obs.reference, vs, obs.concept, coding, when, shown)
    if percent >= target:
        return Finding("met", "met", values, (ev,))
    return Finding("unknown", "below_target", values, (ev,))


def _current_medication(med: MedicationFact, ctx: Context, window: int) -> bool:
    if med.status in ("active", "on-hold", "draft", "intended"):
        return True
    return med.status == "completed" and ctx.in_window(med.when, window)


def intensive_management(ctx: Context, params: Mapping[str, Any]) -> Finding:
    window = int(params["window_days"])
    pump, cgm = ctx.vs(params, "pump_valueset"), ctx.vs(params, "cgm_valueset")
    basal, bolus = ctx.vs(params, "basal_valueset"), ctx.vs(params, "bolus_valueset")
    education = ctx.vs(params, "education_valueset")
    therapy: list[tuple[str, Evidence]] = []
    for device in ctx.facts.devices:
        if device.status in ("entered-in-error", "inactive"):
            continue
        for vs, label in ((pump, "insulin pump"), (cgm, "CGM")):
            device_coding = vs.first_match(device.concept.codings)
            if device_coding is not None:
                therapy.append((label, _evidence(device.reference, vs, device.concept, device_coding, None)))
    for cond, coding in matching_conditions(ctx, pump):
        if cond.active:
            therapy.append(("insulin pump", _evidence(cond.reference, pump, cond.concept, coding, cond.event_date)))
    for vs, label in ((pump, "insulin pump"), (cgm, "CGM")):
        for proc, coding in matching_procedures(ctx, vs):
            if ctx.in_window(proc.performed, window):
                therapy.append((label, _evidence(proc.reference, vs, proc.concept, coding, proc.performed)))
    for obs in ctx.facts.observations:
        obs_coding = cgm.first_match(obs.concept.codings)
        if obs_coding is not None and obs.usable and ctx.in_window(obs.effective, window):
            therapy.append(("CGM", _evidence(obs.reference, cgm, obs.concept, obs_coding, obs.effective)))
            break
    basal_hits: list[Evidence] = []
    bolus_hits: list[Evidence] = []
    for med in ctx.facts.medications:
        if not _current_medication(med, ctx, window):
            continue
        for vs, hits in ((basal, basal_hits), (bolus, bolus_hits)):
            med_coding = vs.first_match(med.concept.codings)
            if med_coding is not None:
                hits.append(_evidence(med.reference, vs, med.concept, med_coding, med.when))
    if basal_hits and bolus_hits:
        therapy.append(("basal plus bolus insulin", basal_hits[0]))
        therapy.append(("basal plus bolus insulin", bolus_hits[0]))
    taught: list[Evidence] = []
    for proc, coding in matching_procedures(ctx, education):
        if ctx.in_window(proc.performed, window):
            taught.append(_evidence(proc.reference, education, proc.concept, coding, proc.performed))
    for enc in ctx.facts.encounters:
        if enc.status in ("cancelled", "entered-in-error", "planned") or not ctx.in_window(enc.start, window):
            continue
        for concept in (*enc.types, *enc.reasons):
            edu_coding = education.first_match(concept.codings)
            if edu_coding is not None:
                taught.append(_evidence(enc.reference, education, concept, edu_coding, enc.start))
                break
    labels = sorted({label for label, _ in therapy})
    values: dict[str, Any] = {"window_days": window, "therapy": ", ".join(labels)}
    evidence = tuple(e for _, e in therapy) + tuple(taught)
    if taught:
        latest = max((e.date or "" for e in taught), default="")
        values["education"] = f"latest {latest}" if latest else "on record"
    missing = [name for name, ok in (("intensive therapy", therapy), ("diabetes education", taught)) if not ok]
    if not missing:
        return Finding("met", "met", values, evidence)
    values["missing"] = " and ".join(missing)
    return Finding("unknown", "unknown", values, evidence)


def has_order(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    statuses = set(params["statuses"])
    for med in (*ctx.order_set_medications, *ctx.facts.medications):
        if med.resource_type == "MedicationAdministration":
            continue  # a dose given is not an order for the regimen
        ok = med.status in statuses or (med.resource_type == "MedicationStatement" and med.status in ("active",))
        if not ok:
            continue
        coding = vs.first_match(med.concept.codings)
        if coding is not None:
            values = {"medication": _label(vs, med.concept, coding), "status": med.status}
            return Finding("met", "met", values, (_evidence(med.reference, vs, med.concept, coding, med.when),))
    return Finding("unknown", "unknown", {})


def no_evidence_of(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    hits: list[Evidence] = []
    doubtful: list[tuple[Evidence, str]] = []
    for cond, coding in matching_conditions(ctx, vs):
        ev = _evidence(cond.reference, vs, cond.concept, coding, cond.event_date)
        if cond.confirmed:
            hits.append(ev)
        else:
            # Provisional / unconfirmed / differential: not evidence enough to deny (DESIGN §2).
            doubtful.append((ev, cond.verification_status or ""))
    for proc, coding in matching_procedures(ctx, vs):
        hits.append(_evidence(proc.reference, vs, proc.concept, coding, proc.performed))
    if hits:
        first = hits[0]
        values = {"code": f"{first.display or first.code} ({first.code})", "date": first.date or "date not recorded"}
        return Finding("not_met", "not_met", values, tuple(hits))
    if doubtful:
        ev, verification = doubtful[0]
        values = {
            "code": f"{ev.display or ev.code} ({ev.code})",
            "date": ev.date or "date not recorded",
            "verification_status": verification,
        }
        return Finding("unknown", "unconfirmed", values, tuple(e for e, _ in doubtful))
    if "review_valueset" in params:
        review = ctx.vs(params, "review_valueset")
        for proc, coding in matching_procedures(ctx, review):
            ev = _evidence(proc.reference, review, proc.concept, coding, proc.performed, note="review")
            values = {"code": f"{ev.display or ev.code} ({ev.code})", "date": ev.date or "date not recorded"}
            return Finding("unknown", "review", values, (ev,))
    if any(key in ctx.facts.gaps for key in ("procedures", "conditions")):
        return Finding("unknown", "unknown", {})
    return Finding("met", "met", {})


UNDATED = "undated"


def prior_infusions(ctx: Context, vs: ValueSet) -> list[Evidence]:
    """Completed islet infusions before the date of service, one per day (procedure + drug line = one).

    Undated records count as at most one infusion together: they may all describe the same event.
    """
    by_day: dict[Any, Evidence] = {}
    for proc, coding in matching_procedures(ctx, vs):
        if proc.performed is not None and proc.performed >= ctx.date_of_service:
            continue
        key = proc.performed or UNDATED
        by_day.setdefault(key, _evidence(proc.reference, vs, proc.concept, coding, proc.performed))
    for med in ctx.facts.medications:
        given = (
            (med.resource_type == "MedicationStatement" and med.status in ("completed", "active"))
            or (med.resource_type == "MedicationRequest" and med.status == "completed")
            or (med.resource_type == "MedicationAdministration" and med.status == "completed")
        )
        if not given or not ctx.is_lantidra(med.concept):
            continue
        if med.when is not None and med.when >= ctx.date_of_service:
            continue
        key = med.when or UNDATED
        coding = med.concept.codings[0] if med.concept.codings else ("", "")
        by_day.setdefault(
            key,
            Evidence(
                reference=med.reference,
                system=coding[0] or None,
                code=coding[1] or None,
                display=med.concept.text or "Lantidra",
                date=_iso(med.when),
            ),
        )
    return sorted(by_day.values(), key=lambda e: (e.date or "", e.reference or ""))


def count_prior_events_below(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    maximum = int(params["max_prior"])
    infusions = prior_infusions(ctx, vs)
    values: dict[str, Any] = {
        "count": len(infusions),
        "max_prior": maximum,
        "max_prior_minus_one": maximum - 1,
        "dates": ", ".join(e.date or "undated" for e in infusions),
    }
    if len(infusions) >= maximum:
        if sum(1 for e in infusions if e.date) < maximum:
            # The limit is reached only by counting an undated record: not proof enough to deny.
            return Finding("unknown", "undated_review", values, tuple(infusions))
        return Finding("not_met", "not_met", values, tuple(infusions))
    # Never unknown (DESIGN §3 A8 has no unknown cell): prior infusions are counted on what is on
    # record; a procedure data gap already keeps A7 unknown and the outcome indeterminate.
    return Finding("met", "met", values, tuple(infusions))


def _insulin_evidence(ctx: Context, vs: ValueSet, since: date, window: int) -> list[Evidence]:
    out: list[Evidence] = []
    for med in ctx.facts.medications:
        coding = vs.first_match(med.concept.codings)
        if coding is None:
            continue
        current = med.status in ("active", "on-hold") or (
            med.status in ("completed", "stopped") and ctx.in_window(med.when, window)
        )
        if current and (med.when is None or med.when >= since or med.status in ("active", "on-hold")):
            out.append(_evidence(med.reference, vs, med.concept, coding, med.when))
    for cond, coding in matching_conditions(ctx, vs):
        if cond.active:
            out.append(_evidence(cond.reference, vs, cond.concept, coding, cond.event_date))
    return out


def repeat_interval(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    wait = int(params["wait_days"])
    insulin_vs = ctx.vs(params, "insulin_valueset")
    insulin_window = int(params.get("insulin_window_days", 180))
    infusions = prior_infusions(ctx, vs)
    if not infusions:
        return Finding("met", "met", {})  # a first infusion: the repeat rule does not apply
    dated = [date.fromisoformat(e.date) for e in infusions if e.date]
    if not dated:
        return Finding("unknown", "unknown", {"last_infusion": "an unrecorded date"}, tuple(infusions))
    last = max(dated)
    last_ev = [e for e in infusions if e.date == last.isoformat()]
    values: dict[str, Any] = {"last_infusion": last.isoformat()}
    achieved: date | None = None
    lost: date | None = None
    independence_ev: list[Evidence] = []
    if "independence_valueset" in params:
        ivs = ctx.vs(params, "independence_valueset")
        for obs in ctx.facts.observations:
            coding = ivs.first_match(obs.concept.codings)
            if coding is None or not obs.usable or obs.effective is None or obs.effective < last:
                continue
            if achieved is None or obs.effective > achieved:
                achieved, lost = obs.effective, obs.effective_end
                independence_ev = [
                    _evidence(
                        obs.reference,
                        ivs,
                        obs.concept,
                        coding,
                        obs.effective,
                        f"lost {obs.effective_end}" if obs.effective_end else "not lost",
                    )
                ]
    dos = ctx.date_of_service
    if achieved is not None and (lost is None or lost > dos):
        values["achieved"] = achieved.isoformat()
        return Finding("not_met", "still_independent", values, tuple(last_ev + independence_ev))
    start = lost if lost is not None else last
    days = (dos - start).days
    earliest = shift_date(start, wait)
    values.update({"days": days, "earliest": earliest.isoformat(), "lost": _iso(lost)})
    evidence = tuple(last_ev + independence_ev)
    if days < wait:
        key = "lost_too_early" if lost is not None else "not_met"
        return Finding("not_met", key, values, evidence, earliest_eligible=earliest)
    insulin = _insulin_evidence(ctx, insulin_vs, start, insulin_window)
    if not insulin:
        return Finding("unknown", "unknown", values, evidence)
    values["insulin"] = insulin[0].display or insulin[0].code
    return Finding("met", "lost_met" if lost is not None else "repeat_met", values, evidence + tuple(insulin[:2]))


def procedure_in_order_set_or_recent(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    window = int(params["window_days"])
    values: dict[str, Any] = {"window_days": window}

    def search(target: ValueSet) -> tuple[str, Evidence] | None:
        coding = target.first_match(ctx.order.concept.codings)
        if coding is not None:
            return "in this order", _evidence(
                ctx.order.reference, target, ctx.order.concept, coding, ctx.order.occurrence or ctx.date_of_service
            )
        for other in ctx.order_set:
            coding = target.first_match(other.concept.codings)
            if coding is not None:
                return "in the same order set", _evidence(
                    other.reference, target, other.concept, coding, other.occurrence or other.authored
                )
        for proc, coding in matching_procedures(ctx, target):
            if ctx.in_window(proc.performed, window):
                return "completed recently", _evidence(proc.reference, target, proc.concept, coding, proc.performed)
        return None

    found = search(vs)
    if found is not None:
        where, ev = found
        values.update({"where": where, "code": f"{ev.display or ev.code} ({ev.code})", "date": ev.date or "planned"})
        return Finding("met", "met", values, (ev,))
    if "partial_valueset" in params:
        partial = search(ctx.vs(params, "partial_valueset"))
        if partial is not None:
            where, ev = partial
            values.update(
                {"where": where, "code": f"{ev.display or ev.code} ({ev.code})", "date": ev.date or "planned"}
            )
            return Finding("unknown", "partial_only", values, (ev,))
    return Finding("unknown", "unknown", values)


def diagnosis_with_severity(ctx: Context, params: Mapping[str, Any]) -> Finding:
    vs = ctx.vs(params, "valueset")
    severe = ctx.vs(params, "severity_valueset")
    found = [(c, k) for c, k in matching_conditions(ctx, vs) if c.active]
    for cond, coding in found:
        sev = severe.first_match(cond.severity.codings)
        if sev is not None:
            values = {"code": _label(vs, cond.concept, coding), "date": _iso(cond.event_date) or "an unrecorded date"}
            ev = _evidence(cond.reference, vs, cond.concept, coding, cond.event_date, value="severity: severe")
            return Finding("met", "met", values, (ev,))
    if found:
        cond, coding = found[0]
        ev = _evidence(cond.reference, vs, cond.concept, coding, cond.event_date)
        return Finding("unknown", "severity_missing", {"code": _label(vs, cond.concept, coding)}, (ev,))
    if "acute_valueset" in params:
        acute = ctx.vs(params, "acute_valueset")
        hits = matching_conditions(ctx, acute)
        if hits:
            cond, coding = hits[0]
            ev = _evidence(cond.reference, acute, cond.concept, coding, cond.event_date)
            return Finding("unknown", "acute_only", {"code": _label(acute, cond.concept, coding)}, (ev,))
    return Finding("unknown", "unknown", {})


def documentation_only(ctx: Context, params: Mapping[str, Any]) -> Finding:
    """Narrative criteria: always unknown from coded data; related data is shown as support."""
    support: list[Evidence] = []
    note = "supporting evidence only"
    if "procedure_valueset" in params:
        pvs = ctx.vs(params, "procedure_valueset")
        for proc, coding in matching_procedures(ctx, pvs):
            support.append(_evidence(proc.reference, pvs, proc.concept, coding, proc.performed, note=note))
    if "medication_valueset" in params:
        mvs = ctx.vs(params, "medication_valueset")
        for med in ctx.facts.medications:
            med_coding = mvs.first_match(med.concept.codings)
            if med_coding is not None and med.status != "entered-in-error":
                support.append(_evidence(med.reference, mvs, med.concept, med_coding, med.when, note=note))
    text = f" (supporting evidence on record: {len(support)} item(s))" if support else ""
    return Finding("unknown", "unknown", {"supporting": text}, tuple(support))


def order_mentions(ctx: Context, params: Mapping[str, Any]) -> Finding:
    """An exclusion: not_met (= applies) when the order's code, text, reason or notes name it."""
    if "valueset" in params:
        vs = ctx.vs(params, "valueset")
        order_coding = vs.first_match(ctx.order.concept.codings)
        if order_coding is not None:
            ev = _evidence(ctx.order.reference, vs, ctx.order.concept, order_coding, ctx.order.occurrence)
            return Finding("not_met", "not_met", {"match": _label(vs, ctx.order.concept, order_coding)}, (ev,))
    match = find_keyword(ctx.order.search_text, params["keywords"], params["negation_cues"])
    if match is not None:
        ev = Evidence(
            reference=ctx.order.reference, display=ctx.order.concept.text or None, value=f'"{match}"', note="order text"
        )
        return Finding("not_met", "not_met", {"match": match}, (ev,))
    return Finding("met", "met", {})


PREDICATES: dict[str, Predicate] = {
    "age_at_least": age_at_least,
    "diagnosis_established": diagnosis_established,
    "count_events": count_events,
    "latest_observation_at_least": latest_observation_at_least,
    "intensive_management": intensive_management,
    "has_order": has_order,
    "no_evidence_of": no_evidence_of,
    "count_prior_events_below": count_prior_events_below,
    "repeat_interval": repeat_interval,
    "procedure_in_order_set_or_recent": procedure_in_order_set_or_recent,
    "diagnosis_with_severity": diagnosis_with_severity,
    "documentation_only": documentation_only,
    "order_mentions": order_mentions,
}
assert set(PREDICATES) == set(PREDICATE_PARAMS)
