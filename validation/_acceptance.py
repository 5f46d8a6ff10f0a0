"""Acceptance: endpoints judged on the relevant confidence bound, and the verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ._cohorts import cohort_codes
from ._failed_cases import N_ERRORS, worst_case_metrics
from ._inputs import CaseInputs, patient_codes
from ._multiclass import predict_classes
from ._plan import AnalysisPlan, Endpoint
from ._population import Population
from ._proportions import MetricEstimate
from ._results import CriterionResult, GroupResult

__all__ = ["RULE", "acceptance_section", "judge", "judge_endpoints", "worst_case_entry"]

NO_MACRO_WORST_CASE = (
    "worst-case analysis of failed/indeterminate cases not available for the macro-average "
    "endpoints {names} of this {task} task (it is done for endpoints with a 'class'); "
    "failed and indeterminate cases are counted in failed_cases"
)

RULE = "an endpoint 'metric >= goal' passes when the lower bound of the two-sided CI is >= goal ('<=': upper bound <= goal); the verdict passes when every primary endpoint passes in the main analysis"


def judge(ep: Endpoint, est: MetricEstimate, primary: bool) -> CriterionResult:
    """Pass when the lower (">=") or upper ("<=") CI bound meets the goal; a NaN bound
    is not evaluable."""
    bound = est.ci_low if ep.operator == ">=" else est.ci_high
    if bound is None or math.isnan(bound):
        outcome = "not_evaluable"
    elif ep.operator == ">=":
        outcome = "pass" if bound >= ep.goal else "fail"
    else:
        outcome = "pass" if bound <= ep.goal else "fail"
    target = "" if ep.class_ is None else f" ({ep.class_})"
    name = ep.name or f"{ep.metric}{target} {ep.operator} {ep.goal:g}"
    return CriterionResult(
        name,
        ep.metric,
        ep.operator,
        float(ep.goal),
        primary,
        est.estimate,
        est.ci_low,
        est.ci_high,
        est.method,
        bound,
        outcome,
        target_class=ep.class_,
    )


def worst_case_entry(ep: Endpoint, est: MetricEstimate, n_errors: int) -> dict[str, Any]:
    """The worst-case judgement of a primary endpoint (``CriterionResult.worst_case``)."""
    crit = judge(ep, est, True)
    return {
        "estimate": est.estimate,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "method": est.method,
        "bound": crit.bound,
        "outcome": crit.outcome,
        "n_counted_as_errors": n_errors,
    }


def _worst_case_verdict(primaries: Sequence[CriterionResult]) -> str | None:
    """pass when every primary endpoint passes its worst case; fail when one fails it;
    not_evaluable when some have no worst-case analysis (macro averages) and none fails."""
    if not primaries:
        return None
    outcomes = [(c.worst_case or {}).get("outcome") for c in primaries]
    if all(o == "pass" for o in outcomes):
        return "pass"
    if any(o is None for o in outcomes) and "fail" not in outcomes:
        return "not_evaluable"
    return "fail"


def acceptance_section(
    criteria: Sequence[CriterionResult],
    *,
    alpha: float,
    deviations: list[str],
    worst_cohort: Mapping[str, Any],
) -> dict[str, Any]:
    """Verdict (every primary endpoint passes), worst-case verdict, deviations and the
    worst cohort per metric."""
    primaries = [c for c in criteria if c.primary]
    if not primaries:
        verdict = "no_primary_endpoints"
    elif all(c.outcome == "pass" for c in primaries):
        verdict = "pass"
    else:
        verdict = "fail"
    return {
        "verdict": verdict,
        "rule": RULE,
        "confidence_level": 1 - alpha,
        "worst_case_verdict": _worst_case_verdict(primaries),
        "deviations": deviations,
        "worst_cohort": worst_cohort,
    }


def _estimate(overall: GroupResult, ep: Endpoint) -> MetricEstimate:
    """The overall estimate an endpoint is about: its class one-vs-rest, or the main
    (binary or macro-average) metric."""
    group = overall if ep.class_ is None else overall.per_class[ep.class_]
    return group.metrics[ep.metric]


def _test_clusters(inputs: CaseInputs, pop: Population) -> np.ndarray:
    """Patient codes of the test population (failed cases included), in the sorted order
    of the patient ids as the main analysis codes them."""
    col = inputs.cols["patient"]
    if not col:
        return np.arange(pop.test_idx.size)
    ids = inputs.frame[col].iloc[pop.test_idx].astype(object)
    missing = ids.isna().to_numpy()
    # a failed/indeterminate case without a patient id is its own patient (sorted last)
    ids[missing] = [f"\U0010ffffmissing-{i}" for i in np.flatnonzero(missing)]
    return patient_codes(ids)


def _test_strata(inputs: CaseInputs, pop: Population) -> np.ndarray | None:
    """Site codes of the test population when the main bootstrap is stratified by site."""
    if pop.strata is None:
        return None
    return cohort_codes(inputs.frame[inputs.cols["site"]].iloc[pop.test_idx])[0]


def _worst_cases(
    inputs: CaseInputs,
    pop: Population,
    plan: AnalysisPlan,
    endpoints: list[Endpoint],
    overall: GroupResult,
) -> dict[str | None, dict[str, Any]]:
    """Worst-case metrics of the test population per target (None: binary task; else the
    class), for the metrics of ``endpoints``; the bootstrap is that of the main analysis
    (patients, site strata, seed) and a metric with no failed case counted is the main
    result itself."""
    test = pop.test_idx
    bad = inputs.status[test] != "ok"
    cl = _test_clusters(inputs, pop)
    kw = {
        "clustered": pop.clustered,
        "threshold": pop.threshold,
        "plan": plan,
        "strata": _test_strata(inputs, pop),
    }
    if plan.task == "binary":
        metrics = {ep.metric for ep in endpoints}
        return {
            None: worst_case_metrics(
                inputs.y[test],
                inputs.s[test],
                bad,
                cl,
                metrics=metrics,
                main=overall.metrics,
                **kw,
            )
        }
    classes = list(inputs.classes or ())
    s_test = inputs.s[test]
    pred = predict_classes(np.nan_to_num(s_test, nan=0.0), task=plan.task, threshold=pop.threshold)
    out: dict[str | None, dict[str, Any]] = {}
    for c in dict.fromkeys(ep.class_ for ep in endpoints):
        j = classes.index(c)
        metrics = {ep.metric for ep in endpoints if ep.class_ == c}
        out[c] = worst_case_metrics(
            inputs.y[test, j],
            s_test[:, j],
            bad,
            cl,
            metrics=metrics,
            pred=pred[:, j],
            main=overall.per_class[c].metrics,
            **kw,
        )
    return out


def judge_endpoints(
    inputs: CaseInputs,
    pop: Population,
    plan: AnalysisPlan,
    overall: GroupResult,
    deviations: list[str],
) -> list[CriterionResult]:
    """Primary and secondary endpoints judged on their CI bound; primary endpoints also in
    the worst-case analysis where failed/indeterminate cases count as errors (binary and
    class endpoints; for macro-average endpoints, which have none, a deviation is
    appended to ``deviations``)."""
    primary = [judge(ep, _estimate(overall, ep), True) for ep in plan.primary_endpoints]
    secondary = [judge(ep, _estimate(overall, ep), False) for ep in plan.secondary_endpoints]
    pairs = list(zip(plan.primary_endpoints, primary, strict=True))
    has_worst = [plan.task == "binary" or ep.class_ is not None for ep, _ in pairs]
    macro = [c.name for (_, c), w in zip(pairs, has_worst, strict=True) if not w]
    if macro:
        deviations.append(NO_MACRO_WORST_CASE.format(names=macro, task=plan.task))
    if any(has_worst):
        targeted = [ep for (ep, _), w in zip(pairs, has_worst, strict=True) if w]
        worst = _worst_cases(inputs, pop, plan, targeted, overall)
        primary = [
            replace(c, worst_case=worst_case_entry(ep, *_worst_of(worst, ep))) if w else c
            for (ep, c), w in zip(pairs, has_worst, strict=True)
        ]
    return primary + secondary


def _worst_of(worst: dict[str | None, dict[str, Any]], ep: Endpoint) -> tuple[MetricEstimate, int]:
    target = worst[ep.class_]
    return target[ep.metric], target[N_ERRORS][ep.metric]
