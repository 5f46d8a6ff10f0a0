"""The calibration section of the evidence: calibration of the analysed population and
the optional recalibration fitted on the calibration split."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens._errors import InputDataError

from ._calibration import RECALIBRATORS, CalibrationResult, calibration
from ._inputs import CaseInputs, select_rows
from ._plan import AnalysisPlan
from ._population import Population

__all__ = ["calibration_section", "class_calibration", "recalibration_section"]

NO_CALIBRATION_ROWS = (
    "recalibration {method!r} needs a calibration split ({col!r} == {want!r}); none found."
)


def _calibration(
    y: np.ndarray, s: np.ndarray, pop: Population, plan: AnalysisPlan
) -> CalibrationResult:
    cal_set = plan.analysis.calibration
    return calibration(
        y,
        s,
        n_bins=cal_set.n_bins,
        clusters=pop.clusters if pop.clustered else None,
        alpha=plan.analysis.alpha,
        n_simulations=cal_set.null_simulations,
        seed=plan.analysis.bootstrap.seed,
    )


def calibration_section(pop: Population, plan: AnalysisPlan) -> CalibrationResult | None:
    """Calibration of a binary task's analysed population (None with one class present)."""
    if plan.task != "binary" or np.unique(pop.y).size != 2:
        return None
    return _calibration(pop.y, pop.s, pop, plan)


def class_calibration(
    pop: Population, plan: AnalysisPlan, classes: tuple[str, ...]
) -> dict[str, CalibrationResult | None]:
    """Calibration of every class one-vs-rest (the class as positive, its probability as
    score) in the analysed population; None for a class whose one-vs-rest labels have
    one value only (every case, or no case, of that class)."""
    out: dict[str, CalibrationResult | None] = {}
    for j, c in enumerate(classes):
        y = pop.y[:, j]
        out[c] = None if np.unique(y).size != 2 else _calibration(y, pop.s[:, j], pop, plan)
    return out


def recalibration_section(
    inputs: CaseInputs, pop: Population, plan: AnalysisPlan, before: CalibrationResult | None
) -> dict[str, Any] | None:
    """The plan's recalibration map fitted on the calibration split and the calibration of
    the analysed population after it (None when the plan asks for none)."""
    cal_set = plan.analysis.calibration
    if cal_set.recalibration == "none":
        return None
    split = inputs.cols["split"]
    cmask = (
        select_rows(inputs.frame, split, cal_set.calibration_split) & inputs.ok
        if split
        else np.zeros(len(inputs.frame), bool)
    )
    if not cmask.any():
        raise InputDataError(
            NO_CALIBRATION_ROWS.format(
                method=cal_set.recalibration, col=split, want=cal_set.calibration_split
            ),
            source=inputs.source,
        )
    model = RECALIBRATORS[cal_set.recalibration]().fit(inputs.y[cmask], inputs.s[cmask])
    params = {k: v for k, v in vars(model).items() if k.endswith("_") and isinstance(v, float)}
    return {
        "method": cal_set.recalibration,
        "fitted_on": f"split {cal_set.calibration_split!r} ({int(cmask.sum())} cases)",
        "params": params,
        "before": before,
        "after": _calibration(pop.y, model.transform(pop.s), pop, plan),
    }
