"""The evidence contract: ``evidence.json`` (deterministic) and CSV tables.

Top-level keys: ``overall``, ``cohorts``, ``calibration``, ``acceptance``,
``failed_cases``, ``plan``, ``provenance`` (the contract), plus ``secondary`` when the
plan asks for secondary analyses: ``secondary.comparisons[name]`` ({score_a, score_b,
n, n_positive, auc_a, auc_b (metric objects), difference (the reported paired
difference AUC_a - AUC_b: DeLong, or the patient-cluster bootstrap when patients have
several cases), delong {estimate, ci_low, ci_high, z, p_value, covariance, method},
bootstrap {estimate, ci_low, ci_high, p_value, method}, limitations}) and
``secondary.operating_points[name]`` ({metric, target, score, threshold, estimate,
ci_low, ci_high, method}). For ``task`` multiclass / multilabel, ``overall`` and each
cohort group also hold ``decision_rule`` and ``per_class[<class>]`` (a full group
object, one-vs-rest); their ``metrics`` are macro averages over classes and their
``n_positive``, ``n_negative`` and ``confusion`` the one-vs-rest counts summed over
classes (so for multiclass ``n_positive == n``), said in the group's ``note``; multiclass
groups add ``confusion_matrix`` {``classes``, ``rows``: "true", ``columns``: "predicted",
``counts``: K x K}; ``overall`` adds ``task`` and ``classes``; ``threshold`` is null for multiclass (argmax); cohort groups also hold
``difference_to_overall`` of the macro metrics. ``calibration`` is then
{``method``, ``per_class[<class>]``}: one binary calibration object per class,
one-vs-rest (null when the class, or its complement, is absent), and acceptance criteria
of class endpoints carry ``class``. ``overall`` and each
``cohorts[column][value]`` hold ``n``, ``n_positive``, ``confusion`` {tp, fp, tn, fn},
``threshold`` and ``metrics`` (plus ``n_negative``, ``n_patients``, ``design_effect``,
``flags`` and, for cohorts, ``difference_to_overall``). Each metric is
{estimate, ci_low, ci_high, method}; a NaN is written as null and the object then has a
``note`` saying why.

Determinism: keys are sorted, floats are rounded to 12 significant digits (bootstrap
sums may differ in the last bits between BLAS builds) and written with Python's
shortest round-trip repr, there is no timestamp unless asked for
(``write_evidence(..., timestamp=True)`` / ``medlens validate --timestamp`` adds
``provenance.generated_at``), so two runs on the same inputs give identical bytes.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medlens._errors import EvidenceError

from ._calibration import CalibrationResult, ReliabilityCurve
from ._class_analysis import ClassGroupResult
from ._plan import EVIDENCE_METRICS
from ._results import GroupResult, ValidationReport

__all__ = ["EVIDENCE_KEYS", "to_evidence", "write_evidence"]

EVIDENCE_KEYS = (
    "acceptance",
    "calibration",
    "cohorts",
    "failed_cases",
    "overall",
    "plan",
    "provenance",
)
CLASS_CALIBRATION_METHOD = (
    "one-vs-rest per class: the class as positive, its probability as score (null: the "
    "class or its complement is absent from the analysed cases)"
)
SIG_DIGITS = 12
PACKAGES = ("medlens", "numpy", "scipy", "scikit-learn", "statsmodels", "pandas")


SUMMED_COUNTS_NOTE = (
    "n_positive, n_negative and confusion are one-vs-rest counts summed over the {k} "
    "{unit} (each case is counted once per {one}), not a count of cases; the "
    "counts of each {one} are in per_class[<{one}>]{extra}"
)
MULTICLASS_COUNTS_NOTE = (
    ". Multi-class: n_positive equals n, n_negative equals (K - 1) n and confusion.tp "
    "the number of correctly classified cases; the K x K table is confusion_matrix "
    "(rows: reference class, columns: predicted class)"
)
MULTILABEL_COUNTS_NOTE = ". Multi-label: a case can be positive for several labels"


def _num(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x) or math.isinf(x):
            return None
        return 0.0 if x == 0 else float(f"{x:.{SIG_DIGITS}g}")
    return x


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if is_dataclass(obj) and not isinstance(obj, type):
        return _clean(asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    return _num(obj)


def _metric(est: Any) -> dict[str, Any]:
    out = {
        "estimate": _num(est.estimate),
        "ci_low": _num(est.ci_low),
        "ci_high": _num(est.ci_high),
        "method": est.method,
    }
    if any(out[k] is None for k in ("estimate", "ci_low", "ci_high")):
        out["note"] = est.note or (
            "no confidence interval for this metric" if out["estimate"] is not None else "undefined"
        )
    elif est.note:
        out["note"] = est.note
    return out


def _group(g: GroupResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": g.n,
        "n_positive": g.n_positive,
        "n_negative": g.n_negative,
        "n_patients": g.n_patients,
        "confusion": g.confusion.as_dict(),
        "threshold": _num(g.threshold),
        "metrics": {k: _metric(g.metrics[k]) for k in EVIDENCE_METRICS},
        "design_effect": {k: _num(v) for k, v in g.design_effect.items()},
        "flags": dict(g.flags),
    }
    if g.decision_rule is not None:
        out["decision_rule"] = g.decision_rule
    if g.per_class:
        out["per_class"] = {c: _group(pc) for c, pc in g.per_class.items()}
        multiclass = isinstance(g, ClassGroupResult)
        out["note"] = SUMMED_COUNTS_NOTE.format(
            k=len(g.per_class),
            unit="classes" if multiclass else "labels",
            one="class" if multiclass else "label",
            extra=MULTICLASS_COUNTS_NOTE if multiclass else MULTILABEL_COUNTS_NOTE,
        )
        if multiclass:
            out["confusion_matrix"] = {
                "classes": list(g.per_class),
                "rows": "true",
                "columns": "predicted",
                "counts": [list(row) for row in g.confusion_matrix],
            }
    if g.at_prevalence is not None:
        out["at_prevalence"] = {k: _metric(v) for k, v in g.at_prevalence.items()}
    if g.difference:
        diff = {}
        for k, d in g.difference.items():
            e = {key: _num(v) for key, v in d.items() if key != "note"}
            if d.get("note") or e.get("estimate") is None or e.get("ci_low") is None:
                e["note"] = (
                    d.get("note")
                    or "difference undefined (metric undefined in the cohort or overall)"
                )
            diff[k] = e
        out["difference_to_overall"] = diff
    return out


def _curve(c: ReliabilityCurve) -> dict[str, Any]:
    return _clean(
        {
            "strategy": c.strategy,
            "bin_low": c.bin_low,
            "bin_high": c.bin_high,
            "count": c.count,
            "mean_predicted": c.mean_predicted,
            "observed": c.observed,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
        }
    )


def _calibration(c: CalibrationResult | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "n": c.n,
        "brier": _clean(c.brier),
        "ece": _clean(c.ece),
        "reliability": {
            "uniform": _curve(c.reliability_uniform),
            "quantile": _curve(c.reliability_quantile),
        },
        "calibration_slope": _metric(c.slope),
        "calibration_intercept": _metric(c.intercept),
        "calibration_in_the_large": _num(c.calibration_in_the_large),
        "spiegelhalter": {"z": _num(c.spiegelhalter_z), "p_value": _num(c.spiegelhalter_p)},
        "hosmer_lemeshow": {
            "statistic": _num(c.hosmer_lemeshow),
            "df": c.hosmer_lemeshow_df,
            "p_value": _num(c.hosmer_lemeshow_p),
        },
        "params": _clean(c.params),
    }


def _secondary(sec: Mapping[str, Any]) -> dict[str, Any]:
    def entry(d: Mapping[str, Any]) -> dict[str, Any]:
        e = {k: _num(v) for k, v in d.items() if k != "note"}
        if d.get("note") or e.get("estimate") is None or e.get("ci_low") is None:
            e["note"] = d.get("note") or "undefined (see the AUCs of the two scores)"
        return e

    comparisons = {}
    for name, c in sec["comparisons"].items():
        comparisons[name] = {
            **{k: _clean(c[k]) for k in ("score_a", "score_b", "n", "n_positive", "limitations")},
            "auc_a": _metric(c["auc_a"]),
            "auc_b": _metric(c["auc_b"]),
            "difference": entry(c["difference"]),
            "delong": entry(c["delong"]),
            "bootstrap": entry(c["bootstrap"]),
        }
    points = {
        name: {
            "metric": p["metric"],
            "target": _num(p["target"]),
            "score": p["score"],
            "threshold": _num(p["threshold"]),
            **_metric(p["value"]),
        }
        for name, p in sec["operating_points"].items()
    }
    return {
        "comparisons": comparisons,
        "operating_points": points,
        **_clean({k: sec[k] for k in ("unit", "replicates", "seed", "notes")}),
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def to_evidence(report: ValidationReport, *, timestamp: bool = False) -> dict[str, Any]:
    """The evidence contract as a JSON-ready dict (see the module docstring)."""
    cal = _calibration(report.calibration)
    if cal is not None and report.recalibration is not None:
        r = report.recalibration
        cal["recalibration"] = {
            "method": r["method"],
            "fitted_on": r["fitted_on"],
            "params": _clean(r["params"]),
            "after": _calibration(r["after"]),
        }
    if report.calibration_per_class is not None:
        cal = {
            "method": CLASS_CALIBRATION_METHOD,
            "per_class": {c: _calibration(r) for c, r in report.calibration_per_class.items()},
        }
    criteria = []
    for c in report.criteria:
        e = {
            "name": c.name,
            "metric": c.metric,
            "operator": c.operator,
            "goal": _num(c.goal),
            "primary": c.primary,
            "estimate": _num(c.estimate),
            "ci_low": _num(c.ci_low),
            "ci_high": _num(c.ci_high),
            "method": c.method,
            "bound_used": "ci_low" if c.operator == ">=" else "ci_high",
            "bound": _num(c.bound),
            "outcome": c.outcome,
        }
        if c.outcome == "not_evaluable":
            e["note"] = "the confidence bound is undefined, so the goal cannot be shown to be met"
        if c.worst_case is not None:
            e["worst_case"] = _clean(c.worst_case)
        if c.target_class is not None:
            e["class"] = c.target_class
        criteria.append(e)
    acceptance = {**_clean(report.acceptance), "criteria": criteria}
    prov = dict(report.provenance)
    prov.update(
        {
            "package_versions": _versions(),
            "seed": report.plan.analysis.bootstrap.seed,
            "plan_sha256": report.plan_info.get("plan_sha256"),
            "plan_canonical_sha256": report.plan_info.get("plan_canonical_sha256"),
        }
    )
    if timestamp:
        prov["generated_at"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    plan = {
        "definition": report.plan.model_dump(mode="json"),
        **_clean(
            {
                k: v
                for k, v in report.plan_info.items()
                if k not in ("plan_sha256", "plan_canonical_sha256")
            }
        ),
    }
    out = {
        "overall": _group(report.overall),
        "cohorts": {
            col: {v: _group(g) for v, g in vals.items()} for col, vals in report.cohorts.items()
        },
        "calibration": cal,
        "acceptance": acceptance,
        "failed_cases": _clean(report.failed_cases),
        "plan": plan,
        "provenance": _clean(prov),
    }
    if report.task != "binary":
        out["overall"]["task"] = report.task
        out["overall"]["classes"] = list(report.classes or ())
    if report.secondary is not None:
        out["secondary"] = _secondary(report.secondary)
    return out


def dumps(evidence: Mapping[str, Any]) -> str:
    """Deterministic JSON text (sorted keys, no NaN, trailing newline)."""
    try:
        return (
            json.dumps(evidence, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
            + "\n"
        )
    except ValueError as exc:
        raise EvidenceError(f"evidence is not valid JSON: {exc}") from None


def write_evidence(
    report: ValidationReport, out_dir: str | Path, *, timestamp: bool = False
) -> dict[str, Path]:
    """Write ``evidence.json``, ``overall.csv``, ``cohorts_<column>.csv``, ``acceptance.csv``
    and ``calibration_reliability.csv`` (multi-class / multi-label:
    ``calibration_reliability_per_class.csv``, with a ``class`` column) into ``out_dir``;
    returns the paths written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(
            f"cannot create the output folder ({exc.strerror})", source=str(out)
        ) from None
    ev = to_evidence(report, timestamp=timestamp)
    paths = {"evidence": out / "evidence.json"}
    paths["evidence"].write_text(dumps(ev), encoding="utf-8")
    rows = [
        {
            "metric": k,
            **{
                f: ev["overall"]["metrics"][k].get(f)
                for f in ("estimate", "ci_low", "ci_high", "method", "note")
            },
        }
        for k in EVIDENCE_METRICS
    ]
    frame = pd.DataFrame(
        rows, columns=["metric", "estimate", "ci_low", "ci_high", "method", "note"]
    )
    paths["overall"] = out / "overall.csv"
    frame.to_csv(paths["overall"], index=False, float_format="%.12g", lineterminator="\n")
    for col, table in report.cohort_tables.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in col)
        p = out / f"cohorts_{safe}.csv"
        table.to_csv(str(p))
        paths[f"cohorts_{col}"] = p
    criteria = ev["acceptance"]["criteria"]
    with_class = ["class"] if any("class" in c for c in criteria) else []
    crit = pd.DataFrame(
        criteria,
        columns=[
            "name",
            "metric",
            *with_class,
            "operator",
            "goal",
            "primary",
            "estimate",
            "ci_low",
            "ci_high",
            "method",
            "bound_used",
            "bound",
            "outcome",
        ],
    )
    paths["acceptance"] = out / "acceptance.csv"
    crit.to_csv(paths["acceptance"], index=False, float_format="%.12g", lineterminator="\n")
    cal = ev["calibration"] or {}
    if "reliability" in cal:
        paths["calibration"] = out / "calibration_reliability.csv"
        _reliability_frame(cal).to_csv(
            paths["calibration"], index=False, float_format="%.12g", lineterminator="\n"
        )
    if cal.get("per_class"):
        frames = [
            _reliability_frame(c).assign(**{"class": name})
            for name, c in cal["per_class"].items()
            if c is not None
        ]
        if frames:
            rel = pd.concat(frames, ignore_index=True)
            rel = rel[["class", *[k for k in rel.columns if k != "class"]]]
            paths["calibration"] = out / "calibration_reliability_per_class.csv"
            rel.to_csv(paths["calibration"], index=False, float_format="%.12g", lineterminator="\n")
    return paths


def _reliability_frame(cal: Mapping[str, Any]) -> pd.DataFrame:
    """Both reliability curves of one calibration object, one row per bin."""
    cur = cal["reliability"]
    return pd.concat([pd.DataFrame(cur[k]) for k in ("uniform", "quantile")], ignore_index=True)
