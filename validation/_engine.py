"""The validation engine: predictions table + analysis plan -> :class:`ValidationReport`.

:func:`evaluate` runs the steps in order; each lives in its own module:

1. ``_inputs``: columns, case ids, status, labels and probabilities checked;
2. ``_population``: test split, threshold locked, patients, site strata, cohorts;
3. ``_cohort_analysis`` (binary) or ``_class_analysis`` (one-vs-rest per class plus
   macro averages): every metric with its CI for all cases and every cohort
   (``_groups`` estimates one group);
4. ``_calibration_analysis``: calibration (per class one-vs-rest for multi-class /
   multi-label), recalibration on the calibration split;
5. ``_secondary``: paired AUC comparisons and fixed operating points;
6. ``_failed_cases``: failed/indeterminate cases counted, worst-case analysis;
7. ``_acceptance``: endpoints (binary, macro or one class) judged on their CI bound,
   the worst case of primary endpoints, the verdict.

The result objects live in ``_results``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ._acceptance import acceptance_section, judge_endpoints
from ._calibration_analysis import (
    calibration_section,
    class_calibration,
    recalibration_section,
)
from ._class_analysis import analyse_classes
from ._cohort_analysis import CohortAnalysis, analyse_binary
from ._data import PredictionTable, load_predictions
from ._failed_cases import failed_case_summary
from ._inputs import CaseInputs, read_inputs
from ._plan import AnalysisPlan, check_endpoint_classes
from ._population import Population, analysis_population
from ._results import CriterionResult, GroupResult, ValidationReport
from ._secondary import secondary_analyses

__all__ = ["CriterionResult", "GroupResult", "ValidationReport", "evaluate"]

CLASS_CALIBRATION_NOTE = (
    "multi-class/multi-label: calibration is reported one-vs-rest per class "
    "(calibration.per_class: reliability curves, ECE with its null band, Brier "
    "decomposition, slope and intercept); the brier, ece and calibration_* metrics of "
    "overall and the cohorts are macro averages over classes"
)


def _analyse(pop: Population, inputs: CaseInputs, plan: AnalysisPlan) -> CohortAnalysis:
    """Overall and cohort results (binary, or one-vs-rest per class plus macro)."""
    args = (pop.partitions, pop.clusters, pop.clustered, pop.strata, pop.threshold, plan)
    if plan.task == "binary":
        return analyse_binary(pop.y, pop.s, pop.pred, *args)
    return analyse_classes(pop.y, pop.s, pop.pred, inputs.classes, *args)


def _plan_info(
    inputs: CaseInputs, pop: Population, plan: AnalysisPlan, n_patients: int, sha: str | None
) -> dict[str, Any]:
    boot = plan.analysis.bootstrap
    return {
        "columns": inputs.cols,
        "threshold": pop.threshold_info,
        "clustered": pop.clustered,
        "n_patients": n_patients,
        "bootstrap": {
            "replicates": boot.replicates,
            "seed": boot.seed,
            "stratified_by": inputs.cols["site"] if pop.strata is not None else None,
            "unit": "patient" if pop.clustered else "case",
            "rank_metrics": boot.rank_metrics,
        },
        "plan_sha256": sha,
        "plan_canonical_sha256": plan.sha256(),
    }


def _provenance(
    data: object,
    table: PredictionTable,
    inputs: CaseInputs,
    pop: Population,
    plan: AnalysisPlan,
    notes: list[str],
) -> dict[str, Any]:
    split = inputs.cols["split"]
    src = table.source
    return {
        "source": Path(src).name if not isinstance(data, pd.DataFrame) else src,
        "input_sha256": table.sha256,
        "n_rows_input": int(len(inputs.frame)),
        "n_rows_population": int(pop.test_idx.size),
        "n_rows_analysed": int(pop.idx.size),
        "split_filter": None
        if not split or plan.analysis.test_split is None
        else {"column": split, "value": plan.analysis.test_split},
        "notes": notes,
    }


def evaluate(
    data: str | Path | pd.DataFrame | PredictionTable,
    plan: AnalysisPlan | None = None,
    *,
    plan_sha256: str | None = None,
    source: str | None = None,
    threshold: float | None = None,
) -> ValidationReport:
    """Validate predictions against an analysis plan.

    Parameters
    ----------
    data : path to CSV/parquet, DataFrame or PredictionTable
        One row per case: case id, label, score, optional patient/site/split/status and
        cohort columns (see :mod:`medlens.validation._plan` for the defaults).
    plan : AnalysisPlan, optional
        The prespecified plan; omitted: defaults (quick analysis, no endpoints).
    plan_sha256 : str, optional
        SHA-256 of the plan file, recorded in the provenance.
    source : str, optional
        Name of the input used in messages and provenance (default: the file name).
    threshold : float, optional
        Overrides a fixed threshold (quick mode).

    Returns
    -------
    ValidationReport

    Raises
    ------
    InputDataError
        Missing columns (naming those present), duplicate case ids, missing labels,
        labels outside {0, 1} or the declared classes, NaN scores in ok cases, scores
        outside [0, 1] for probabilities, unknown status values, empty tables or splits.
    ConfigError
        An endpoint's ``class`` is not one of the classes found in the table.
    """
    table = data if isinstance(data, PredictionTable) else load_predictions(data, source=source)
    plan = plan or AnalysisPlan()
    inputs = read_inputs(table, plan)
    if inputs.classes is not None:
        check_endpoint_classes(plan, inputs.classes)
    deviations = list(plan.deviations)
    notes: list[str] = []
    pop = analysis_population(inputs, plan, threshold=threshold, deviations=deviations, notes=notes)
    overall, cohorts, tables, worst_cohort = _analyse(pop, inputs, plan)
    cal = calibration_section(pop, plan)
    cal_per_class = None
    if inputs.classes is not None:
        cal_per_class = class_calibration(pop, plan, inputs.classes)
        notes.append(CLASS_CALIBRATION_NOTE)
    recal = recalibration_section(inputs, pop, plan, cal)
    secondary = secondary_analyses(inputs, pop, plan)
    failed_cases = failed_case_summary(
        inputs.frame, pop.test_idx, inputs.status, inputs.cols["cohorts"]
    )
    criteria = judge_endpoints(inputs, pop, plan, overall, deviations)
    acceptance = acceptance_section(
        criteria, alpha=plan.analysis.alpha, deviations=deviations, worst_cohort=worst_cohort
    )
    return ValidationReport(
        overall,
        cohorts,
        tables,
        cal,
        recal,
        acceptance,
        tuple(criteria),
        failed_cases,
        plan,
        _plan_info(inputs, pop, plan, overall.n_patients, plan_sha256),
        _provenance(data, table, inputs, pop, plan, notes),
        tuple(notes),
        secondary,
        plan.task,
        inputs.classes,
        cal_per_class,
    )
