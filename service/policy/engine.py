"""evaluate(): the policy applied to one order. Pure: no I/O, no clock, no globals.

DESIGN.md §2–§3: three-valued criteria (deny only on evidence, otherwise ask), the pathway choice,
exclusions, the Lantidra conflict, and questionnaire answers closing the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from service.decision import (
    CriterionResult,
    CriterionStatus,
    Decision,
    Evidence,
    OrderRef,
    Outcome,
    Pathway,
    PathwayResult,
)
from service.facts import (
    Concept,
    OrderFacts,
    PatientFacts,
    QuestionnaireAnswers,
    date_of_service_source,
    order_concept,
    order_medication_facts,
    read_order,
)
from service.policy.loader import CriterionSpec, Policy
from service.policy.predicates import (
    PREDICATES,
    Context,
    Finding,
    age_finding,
    matching_conditions,
    matching_procedures,
    shift_date,
)
from service.policy.scope import concept_is_lantidra, is_lantidra, order_kinds

PATHWAYS: tuple[Pathway, ...] = ("allogeneic", "autologous")


class _Blank(dict[str, Any]):
    """Template values: a placeholder without a value stays visible instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _render(template: str, values: Mapping[str, Any]) -> str:
    return template.format_map(_Blank({k: "" if v is None else v for k, v in values.items()}))


def _latest_answers(policy: Policy, facts: PatientFacts, link_id: str) -> QuestionnaireAnswers | None:
    best: QuestionnaireAnswers | None = None
    for qr in facts.questionnaire_responses:
        if qr.questionnaire != policy.questionnaire_canonical or qr.status not in ("completed", "amended"):
            continue
        if link_id not in qr.answers or not qr.answers[link_id]:
            continue
        if best is None or (qr.authored or date.min, qr.reference) > (best.authored or date.min, best.reference):
            best = qr
    return best


def _response_refusal(spec: CriterionSpec, qr: QuestionnaireAnswers, dos: date) -> str | None:
    """Why this response cannot document the criterion at all (a questionnaire_reasons key), or None."""
    if qr.authored is None:
        return "undated_response"
    if qr.authored > dos:
        return "authored_after_service"
    window = spec.params.get("window_days")
    if window is not None and qr.authored < shift_date(dos, -int(window)):
        return "authored_too_early"
    return None


def _attested_date_check(
    spec: CriterionSpec, attested: date, authored: date, dos: date, values: dict[str, Any]
) -> tuple[CriterionStatus, str, bool] | None:
    """Check an answered date against the criterion's parameters (``question.date_rule``).

    None if it fits; else (status, reason key, whether the key is the criterion's own reason rather
    than a questionnaire_reasons key). ``values`` receives the template values.
    """
    assert spec.question is not None
    rule = spec.question.date_rule
    if rule is None:
        return None
    if rule == "birth_date":
        if attested > authored:
            return "unknown", "attested_future", False
        finding = age_finding(attested.isoformat(), dos, int(spec.params["years"]), values, ())
        return None if finding.status == "met" else (finding.status, finding.reason_key, True)
    # A planned pancreatectomy may postdate the response, never the date of service.
    latest = dos if rule == "within_window_or_planned" else min(dos, authored)
    if attested > latest:
        return "unknown", "attested_future", False
    if rule == "wait_elapsed":
        wait = int(spec.params["wait_days"])
        earliest = shift_date(attested, wait)
        values.update({"wait_days": wait, "earliest": earliest.isoformat()})
        # The answered date itself proves the year has not passed: contrary evidence.
        return None if earliest <= dos else ("not_met", "attested_too_recent", False)
    window = int(spec.params["window_days"])
    values["window_days"] = window
    return None if attested >= shift_date(dos, -window) else ("unknown", "attested_outside_window", False)


def _apply_questionnaire(
    policy: Policy, spec: CriterionSpec, facts: PatientFacts, result: CriterionResult, dos: date
) -> CriterionResult:
    """An answer to our Questionnaire settles an unknown criterion: yes (with its date/detail) -> met,
    no -> not_met (DESIGN §2), once the response and the answered date fit the criterion (authored
    on or before the date of service and within its window; the date checked by ``date_rule``).
    Known results are never overridden by an attestation."""
    if result.status != "unknown" or spec.question is None:
        return result
    link_id = spec.question.link_id
    qr = _latest_answers(policy, facts, link_id)
    if qr is None:
        return result
    answer = qr.answers[link_id][0]
    if answer is not True and answer is not False:
        return result
    authored = qr.authored.isoformat() if qr.authored else "an unrecorded date"
    values: dict[str, Any] = {**spec.params, "authored": authored, "date_of_service": dos.isoformat()}

    def settled(status: CriterionStatus, reason: str, shown: str) -> CriterionResult:
        ev = Evidence(
            reference=qr.reference,
            date=qr.authored.isoformat() if qr.authored else None,
            value=shown,
            note=f"questionnaire item {link_id}",
        )
        return CriterionResult(result.id, result.title, status, reason, (ev, *result.evidence), result.question)

    refusal = _response_refusal(spec, qr, dos)
    if refusal is not None:
        shown = "yes" if answer else "no"
        return settled("unknown", _render(policy.questionnaire_reasons[refusal], values), f"{shown} (not used)")
    if answer is False:
        return settled("not_met", _render(policy.questionnaire_reasons["answered_no"], values), "no")
    detail = ""
    if spec.question.requires != "none":
        needed = qr.answers.get(f"{link_id}.{spec.question.requires}", ())
        usable = [v for v in needed if (isinstance(v, date) if spec.question.requires == "date" else str(v).strip())]
        if not usable:
            return result  # "yes" without the required date/detail does not settle it
        first = usable[0]
        if isinstance(first, date):
            assert qr.authored is not None  # refused above otherwise
            values["attested"] = first.isoformat()
            failed = _attested_date_check(spec, first, qr.authored, dos, values)
            if failed is not None:
                status, key, own = failed
                template = spec.reason_template(key) if own else policy.questionnaire_reasons[key]
                return settled(status, _render(template, values), f"yes ({first.isoformat()}, not used)")
        shown = first.isoformat() if isinstance(first, date) else str(first).strip()
        detail = f" ({shown})"
    values["detail"] = detail
    return settled("met", _render(policy.questionnaire_reasons["answered_yes"], values), f"yes{detail}")


def _criterion(policy: Policy, spec: CriterionSpec, ctx: Context) -> tuple[CriterionResult, Finding]:
    finding = PREDICATES[spec.predicate](ctx, spec.params)
    template = spec.reasons.get(finding.reason_key) or spec.reason_template(finding.status)
    values = {**spec.params, **finding.values}
    reason = _render(template, values)
    result = CriterionResult(
        id=spec.id,
        title=spec.title,
        status=finding.status,
        reason=reason,
        evidence=finding.evidence,
        question=spec.question.link_id if spec.question else None,
    )
    return _apply_questionnaire(policy, spec, ctx.facts, result, ctx.date_of_service), finding


def _pathway_status(criteria: Sequence[CriterionResult]) -> CriterionStatus:
    statuses = {c.status for c in criteria}
    if "not_met" in statuses:
        return "not_met"
    if statuses <= {"met"}:
        return "met"
    return "unknown"


def _first_code(policy: Policy, concept: Concept, roles: Sequence[str]) -> str:
    for role in roles:
        coding = policy.valueset(policy.triggers[role]).first_match(concept.codings)
        if coding is not None:
            return coding[1]
    return concept.codings[0][1] if concept.codings else (concept.text or "?")


def _recent_pancreatectomy(policy: Policy, ctx: Context) -> str | None:
    """A total/near-total pancreatectomy in the order set or completed in the window: its label."""
    choice = policy.pathway_choice
    vs = policy.valueset(choice["pancreatectomy_valueset"])
    for other in ctx.order_set:
        coding = vs.first_match(other.concept.codings)
        if coding is not None:
            return f"{other.reference}, {coding[1]}"
    window = int(choice["pancreatectomy_window_days"])
    for proc, coding in matching_procedures(ctx, vs):
        if ctx.in_window(proc.performed, window):
            return f"{proc.reference}, {coding[1]} on {proc.performed}"
    return None


def _lantidra_ordered(policy: Policy, ctx: Context) -> bool:
    if any(is_lantidra(policy, o) for o in ctx.order_set):
        return True
    return any(
        med.resource_type == "MedicationRequest"
        and med.status in ("active", "draft", "on-hold")
        and ctx.is_lantidra(med.concept)
        for med in ctx.facts.medications
    )


def _signals(policy: Policy, ctx: Context, pathway: Pathway) -> bool:
    """Does the record hold anything that points to this pathway (used when both are evaluated)?"""
    for vs_id in policy.pathway_choice[f"{pathway}_signal_valuesets"]:
        vs = policy.valueset(vs_id)
        if matching_conditions(ctx, vs) or matching_procedures(ctx, vs, done_only=False):
            return True
        if any(vs.first_match(o.concept.codings) for o in ctx.order_set):
            return True
    return False


def _choose_pathways(policy: Policy, ctx: Context) -> tuple[tuple[Pathway, ...], str, str | None]:
    """(pathways to evaluate, basis template key, code) per DESIGN §3 "Which pathway"."""
    kinds = order_kinds(policy, ctx.order)
    allo = "allogeneic" in kinds or "lantidra" in kinds
    auto = "autologous" in kinds
    if allo and auto:
        return PATHWAYS, "conflicting_codes", None
    if "lantidra" in kinds and "allogeneic" not in kinds:
        return ("allogeneic",), "lantidra_order", None
    if allo:
        return ("allogeneic",), "allogeneic_code", _first_code(policy, ctx.order.concept, ("allogeneic",))
    if auto:
        return ("autologous",), "autologous_code", _first_code(policy, ctx.order.concept, ("autologous",))
    code = _first_code(policy, ctx.order.concept, ("route",))
    if _recent_pancreatectomy(policy, ctx) is not None:
        return ("autologous",), "route_pancreatectomy", code
    if _lantidra_ordered(policy, ctx):
        return ("allogeneic",), "route_lantidra", code
    return PATHWAYS, "route_both", code


def _gap_blocked(policy: Policy, facts: PatientFacts, result: PathwayResult) -> bool:
    """Is some unknown criterion of this pathway unknown for want of data that could not be obtained?"""
    return any(
        key in facts.gaps for c in result.criteria if c.status == "unknown" for key in policy.criteria[c.id].needs
    )


def _prospect(policy: Policy, facts: PatientFacts, result: PathwayResult) -> int:
    """How far a pathway goes for the patient: covered 3, documentation 2, indeterminate 1, not covered 0."""
    if result.status == "not_met" or (result.pathway == "allogeneic" and policy.lantidra_note == "investigational"):
        return 0
    if result.status == "met":
        return 3
    return 1 if _gap_blocked(policy, facts, result) else 2


def _fit(policy: Policy, ctx: Context, results: Mapping[Pathway, PathwayResult]) -> Pathway | None:
    """When both pathways were evaluated: the one the data fit (DESIGN §3), or None.

    A met pathway wins; then an open (unknown) pathway the record points to (type 1 diabetes for
    allogeneic; pancreatitis or pancreatectomy for autologous), the one that goes furthest if the
    record points to both (so more contrary evidence can never improve the outcome). Otherwise None:
    both are shown, and if one fails on evidence while nothing points to the other (islet transplant
    for type 2 diabetes without pancreatectomy) it is one of "all other situations": not covered.
    """
    for p in PATHWAYS:
        if results[p].status == "met":
            return p
    open_ = [p for p in PATHWAYS if results[p].status == "unknown" and _signals(policy, ctx, p)]
    if not open_:
        return None
    return max(open_, key=lambda p: (_prospect(policy, ctx.facts, results[p]), -PATHWAYS.index(p)))


def _date_of_service(order: OrderFacts | None, today: date) -> date:
    if order is None:
        return today
    return order.occurrence or order.authored or today


def evaluate(
    policy: Policy,
    facts: PatientFacts,
    order: Mapping[str, Any],
    date_of_service: date,
    order_set: Sequence[Mapping[str, Any]] = (),
) -> Decision:
    """Apply the policy to one draft order (resource dict). ``order_set``: every order of the call."""
    order_facts = read_order(order) or OrderFacts(
        reference=f"{order.get('resourceType')}/{order.get('id')}",
        resource_type=str(order.get("resourceType")),
        id=str(order.get("id")),
        concept=order_concept(order) or Concept(),  # an unreadable date must not hide the order's code
        search_text="",
        status=None,
        occurrence=None,
        authored=None,
    )
    others = tuple(
        f
        for f in (read_order(o) for o in order_set if o is not order)
        if f is not None and f.reference != order_facts.reference
    )
    ctx = Context(
        facts=facts,
        order=order_facts,
        order_set=others,
        order_set_medications=order_medication_facts(o for o in order_set if o is not order),
        date_of_service=date_of_service,
        valuesets=policy.valuesets,
        is_lantidra=lambda concept: concept_is_lantidra(policy, concept),
    )

    pathways, basis_key, code = _choose_pathways(policy, ctx)
    results: dict[Pathway, PathwayResult] = {}
    earliest: date | None = None
    for pathway in pathways:
        criteria: list[CriterionResult] = []
        for spec in policy.pathway_criteria(pathway):
            result, finding = _criterion(policy, spec, ctx)
            criteria.append(result)
            if finding.earliest_eligible is not None and result.status == "not_met":
                earliest = finding.earliest_eligible
        results[pathway] = PathwayResult(pathway, _pathway_status(criteria), tuple(criteria))

    chosen: Pathway | None
    chosen = pathways[0] if len(pathways) == 1 else _fit(policy, ctx, results)
    basis_values = {"code": code or "", "fit": chosen or "", "evidence": _recent_pancreatectomy(policy, ctx) or ""}
    if basis_key in ("route_both", "conflicting_codes") and chosen is None:
        basis_key = f"{basis_key}_no_fit"
    basis = _render(policy.pathway_choice["basis"][basis_key], basis_values)

    exclusions = tuple(_criterion(policy, spec, ctx)[0] for spec in policy.exclusions.values())
    excluded_by = tuple(x.id for x in exclusions if x.status == "not_met")

    notes: list[str] = []
    allogeneic_decision = chosen == "allogeneic" or (chosen is None and "allogeneic" in pathways)
    if allogeneic_decision:
        notes.append("lantidra_conflict")

    outcome: Outcome
    considered = [results[chosen]] if chosen is not None else list(results.values())
    if excluded_by:
        outcome = "not_covered"
    elif chosen == "allogeneic" and policy.lantidra_note == "investigational":
        outcome = "not_covered"
        notes.append("lantidra_investigational")
    elif any(r.status == "not_met" for r in considered):
        outcome = "not_covered"
    elif chosen is not None and results[chosen].status == "met":
        outcome = "covered"
    else:
        needed = {
            key for r in considered for c in r.criteria if c.status == "unknown" for key in policy.criteria[c.id].needs
        }
        outcome = "indeterminate" if needed & set(facts.gaps) else "documentation_needed"
    if chosen == "autologous":
        earliest = None  # the repeat rule (A9) is allogeneic only

    ref = OrderRef(
        reference=order_facts.reference,
        resource_type=order_facts.resource_type,
        id=order_facts.id,
        codes=order_facts.concept.codings,
        description=order_facts.concept.text or order_facts.reference,
    )
    return Decision(
        policy_id=policy.id,
        policy_version=policy.version,
        policy_title=policy.title,
        policy_url=policy.url,
        plan_label=policy.plan_label,
        questionnaire_url=policy.questionnaire_url,
        order=ref,
        date_of_service=date_of_service,
        outcome=outcome,
        pathway=chosen,
        pathway_basis=basis,
        pathways=tuple(results[p] for p in pathways),
        exclusions=exclusions,
        earliest_eligible_date=earliest,
        notes=tuple(notes),
        skipped_resources=facts.skipped,
        data_gaps=tuple(f"{key}: {reason}" for key, reason in sorted(facts.gaps.items())),
        excluded_by=excluded_by,
    )


def date_of_service_for(order: Mapping[str, Any], today: date) -> date:
    """occurrence[x] (dateTime / Period.start / Timing.event[0]), else authoredOn, else today."""
    return _date_of_service(read_order(order), today)


# A date of service outside these bounds is a client error (the pipeline answers 422), not a case to evaluate.
EARLIEST_PLAUSIBLE_DATE_OF_SERVICE = date(1900, 1, 1)
PLAUSIBLE_YEARS_AHEAD = 5


def _years_after(when: date, years: int) -> date:
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February in a common year, or past year 9999
        return date.max if when.year + years > date.max.year else when.replace(year=when.year + years, day=28)


def implausible_date_of_service(order: Mapping[str, Any], today: date) -> str | None:
    """A message naming the field if the order's date of service is implausible, else None.

    Before 1900-01-01 or more than 5 years after ``today``: e.g.
    "occurrenceDateTime 0001-01-01 is not a plausible date of service". An unreadable order gives
    None here (facts.order_read_problem reports it).
    """
    source = date_of_service_source(order)
    if source is None:
        return None
    dos = date_of_service_for(order, today)
    if EARLIEST_PLAUSIBLE_DATE_OF_SERVICE <= dos <= _years_after(today, PLAUSIBLE_YEARS_AHEAD):
        return None
    field_name, value = source
    return f"{field_name} {value} is not a plausible date of service"
