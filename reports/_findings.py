"""Findings that qualify a verdict, read from the evidence and the explanation audit.

A plan verdict says whether the prespecified endpoints were met; it does not say whether the
model looks at a shortcut, whether its scores can be read as probabilities or whether it
performs worse in a subgroup. :func:`qualifying_findings` collects those facts from the bundle
so the executive summary and the limitations section state them next to the verdict instead
of leaving them on later pages. Pure function: no I/O, no recomputation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Finding", "qualifying_findings"]

#: Below this share of maps passing their trust card, the explanations are called unreliable.
TRUSTED_SHARE_MIN = 0.5
#: Metrics whose adjusted subgroup differences are reported as performance drops.
DROP_METRICS = ("sensitivity", "specificity", "auc")
HIGHER_IS_BETTER = frozenset({"sensitivity", "specificity", "auc"})


@dataclass(frozen=True)
class Finding:
    """One qualifying finding: ``topic`` (shortcut, explanations, calibration, subgroups,
    failed cases) and a sentence with the numbers behind it."""

    topic: str
    text: str


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def _shortcut(audit: Mapping[str, Any]) -> list[Finding]:
    out = []
    for method, rec in sorted(audit.get("methods", {}).items()):
        flagged = (rec.get("shortcut") or {}).get("flagged_cohorts") or []
        if not flagged:
            continue
        where: dict[str, set[str]] = {}
        for f in flagged:
            where.setdefault(f"{f['cohort']}={f['value']}", set()).add(str(f.get("region", "")))
        parts = [f"{k} ({', '.join(sorted(r for r in v if r))})" for k, v in sorted(where.items())]
        out.append(
            Finding(
                "shortcut",
                f"{method} explanations lean on image regions outside the anatomy in "
                f"{'; '.join(parts)}: a possible shortcut (e.g. burned-in text or a scanner "
                "artefact). Performance in these cohorts may not transfer to sites without it.",
            )
        )
    return out


def _trust(audit: Mapping[str, Any]) -> list[Finding]:
    out = []
    for method, rec in sorted(audit.get("methods", {}).items()):
        trust = rec.get("trust") or {}
        n, k = trust.get("n_cases"), trust.get("n_trusted")
        if not n or k is None or k / n >= TRUSTED_SHARE_MIN:
            continue
        out.append(
            Finding(
                "explanations",
                f"only {k} of {n} {method} maps pass their trust card; the others must not "
                "be read as evidence of where the finding is.",
            )
        )
    return out


def _calibration_one(cal: Mapping[str, Any], alpha: float, label: str) -> Finding | None:
    reasons = []
    slope = cal.get("calibration_slope") or {}
    lo, hi = slope.get("ci_low"), slope.get("ci_high")
    if lo is not None and hi is not None and not lo <= 1.0 <= hi:
        reasons.append(
            f"calibration slope {_fmt(slope.get('estimate'))} (95 % CI {_fmt(lo)}-{_fmt(hi)}, "
            "excludes 1)"
        )
    ece = cal.get("ece") or {}
    if ece.get("ece") is not None and ece.get("null_high") is not None:
        if ece["ece"] > ece["null_high"]:
            reasons.append(
                f"ECE {_fmt(ece['ece'])} above its null band "
                f"({_fmt(ece.get('null_low'))}-{_fmt(ece['null_high'])})"
            )
    sp = (cal.get("spiegelhalter") or {}).get("p_value")
    if sp is not None and sp < alpha:
        reasons.append(f"Spiegelhalter p = {sp:.3g}")
    hl = (cal.get("hosmer_lemeshow") or {}).get("p_value")
    if hl is not None and hl < alpha:
        reasons.append(f"Hosmer-Lemeshow p = {hl:.3g}")
    if not reasons:
        return None
    return Finding(
        "calibration",
        f"{label}scores are not calibrated: {'; '.join(reasons)}. Read them as a ranking "
        "against the locked threshold, not as probabilities.",
    )


def _calibration(evidence: Mapping[str, Any], alpha: float) -> list[Finding]:
    cal = evidence.get("calibration") or {}
    if "per_class" in cal:
        found = [
            _calibration_one(c, alpha, f"class {name}: ")
            for name, c in sorted((cal.get("per_class") or {}).items())
            if c
        ]
    else:
        found = [_calibration_one(cal, alpha, "")]
    return [f for f in found if f is not None]


def _subgroups(evidence: Mapping[str, Any], alpha: float) -> list[Finding]:
    drops = []
    for col, groups in sorted((evidence.get("cohorts") or {}).items()):
        for value, g in sorted(groups.items()):
            flags = g.get("flags") or {}
            for metric in DROP_METRICS:
                d = (g.get("difference_to_overall") or {}).get(metric) or {}
                p, est = d.get("p_adjusted"), d.get("estimate")
                if p is None or est is None or metric in flags or p >= alpha:
                    continue
                if (est < 0) == (metric in HIGHER_IS_BETTER):
                    drops.append(f"{metric} in {col}={value} ({est:+.3f}, adjusted p {p:.3g})")
    if not drops:
        return []
    return [
        Finding(
            "subgroups",
            "performance is lower than overall after multiplicity adjustment in: "
            + "; ".join(drops)
            + ".",
        )
    ]


def _failed(evidence: Mapping[str, Any]) -> list[Finding]:
    fc = evidence.get("failed_cases") or {}
    n_bad = int(fc.get("n_failed") or 0) + int(fc.get("n_indeterminate") or 0)
    acc = evidence.get("acceptance") or {}
    out = []
    if n_bad:
        out.append(
            Finding(
                "failed cases",
                f"{n_bad} of {fc.get('n_population')} cases could not be scored "
                f"({fc.get('n_failed', 0)} failed, {fc.get('n_indeterminate', 0)} indeterminate); "
                f"worst-case verdict: {acc.get('worst_case_verdict', 'n/a')}.",
            )
        )
    return out


def qualifying_findings(
    evidence: Mapping[str, Any], audit: Mapping[str, Any] | None = None
) -> tuple[Finding, ...]:
    """Facts from the evidence (and the explanation audit) that qualify the plan verdict.

    Parameters
    ----------
    evidence : mapping
        ``evidence.json`` of the validation engine.
    audit : mapping, optional
        ``explanation_audit.json``; without it no explanation findings are made.

    Returns
    -------
    tuple of Finding
        In a fixed order: shortcut, explanations, calibration, subgroups, failed cases. Empty
        when nothing qualifies the verdict.
    """
    alpha = 1.0 - float((evidence.get("acceptance") or {}).get("confidence_level", 0.95))
    found = []
    if audit:
        found += _shortcut(audit) + _trust(audit)
    found += _calibration(evidence, alpha) + _subgroups(evidence, alpha) + _failed(evidence)
    return tuple(found)
