"""``medlens validate``: performance with confidence intervals, cohorts, calibration and
acceptance against an analysis plan; writes ``DIR/evidence.json`` and CSV tables."""

from __future__ import annotations

import argparse
import sys
import warnings

from .._cli_types import float_between, int_at_least

HELP = "validate predictions (CIs, cohorts, calibration, plan acceptance) and write evidence"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help=HELP, description=HELP + ".")
    p.add_argument("predictions", help="predictions table (.csv, .tsv or .parquet)")
    p.add_argument(
        "--plan", help="analysis plan YAML (see configs/plan.yaml); without it: quick analysis"
    )
    p.add_argument("--out", required=True, help="output folder for evidence.json and CSV tables")
    q = p.add_argument_group(
        "quick mode (without --plan; override the plan's columns when given with it)"
    )
    q.add_argument(
        "--task",
        choices=("binary", "multiclass", "multilabel"),
        help="binary (default) | multiclass (label = class name, prob_<class> columns) | "
        "multilabel (label_<name> and prob_<name> columns); see configs/plan.yaml",
    )
    q.add_argument("--label-col", help="label column (default 'label')")
    q.add_argument("--score-col", help="score column (default 'score')")
    q.add_argument("--patient-col", help="patient id column (default 'patient_key' if present)")
    q.add_argument("--case-col", help="case id column (default 'case_id')")
    q.add_argument(
        "--cohort-col",
        action="append",
        default=None,
        help="cohort column (repeatable; default: site, manufacturer, sex, age_band when present)",
    )
    q.add_argument(
        "--threshold",
        type=float_between(0, 1),
        help="fixed operating threshold (default 0.5; positive when score >= threshold)",
    )
    q.add_argument(
        "--test-split",
        help="analyse rows whose split column equals this (default 'test'; 'all' = every row)",
    )
    q.add_argument("--replicates", type=int_at_least(1), help="bootstrap replicates (default 2000)")
    q.add_argument("--seed", type=int_at_least(0), help="bootstrap seed (default 0)")
    p.add_argument(
        "--timestamp",
        action="store_true",
        help="add provenance.generated_at (the JSON is then no longer byte-identical between runs)",
    )
    p.add_argument(
        "--fail-on-verdict",
        action="store_true",
        help="exit with status 1 when the plan's acceptance verdict is 'fail' (for CI and "
        "scripts; default: exit 0 whatever the verdict, 2 on an input error)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medlens.validation import (
        AnalysisPlan,
        UndefinedMetricWarning,
        evaluate,
        parse_plan,
        write_evidence,
    )

    from ._plan_file import load_plan_for_cli

    if args.plan:
        plan, digest = load_plan_for_cli(args.plan)
    else:
        plan, digest = AnalysisPlan(), None
    raw = plan.model_dump(mode="json")
    cols = raw["columns"]
    for attr, key in (
        ("label_col", "label"),
        ("score_col", "score"),
        ("patient_col", "patient"),
        ("case_col", "case_id"),
    ):
        if getattr(args, attr):
            cols[key] = getattr(args, attr)
    if args.task:
        raw["task"] = args.task
    if args.cohort_col:
        cols["cohorts"] = args.cohort_col
        raw["subgroups"]["columns"] = None
    if args.test_split:
        raw["analysis"]["test_split"] = None if args.test_split == "all" else args.test_split
    if args.replicates is not None:
        raw["analysis"]["bootstrap"]["replicates"] = args.replicates
    if args.seed is not None:
        raw["analysis"]["bootstrap"]["seed"] = args.seed
    if args.threshold is not None:
        raw["threshold"] = {"rule": "fixed", "value": args.threshold}
    changed = raw != plan.model_dump(mode="json")
    plan = parse_plan(raw, source="command line")
    if args.plan and changed:
        plan = parse_plan(
            {
                **raw,
                "deviations": [*raw["deviations"], "plan settings overridden on the command line"],
            },
            source="command line",
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        report = evaluate(args.predictions, plan, plan_sha256=digest)
    undefined = [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    for w in caught:
        if not issubclass(w.category, UndefinedMetricWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    paths = write_evidence(report, args.out, timestamp=args.timestamp)
    verdict = report.acceptance["verdict"]
    if undefined:
        print(
            f"medlens validate: {len(undefined)} metric values are undefined (e.g. {undefined[0].message}); "
            "they are null with a note in evidence.json",
            file=sys.stderr,
        )
    if report.task != "binary":
        print(
            f"medlens validate: {report.task}, classes {', '.join(report.classes or ())}; "
            "metrics are macro averages, per class in overall.per_class",
            file=sys.stdout,
        )
    print(
        f"medlens validate: {report.overall.n} cases analysed; verdict: {verdict}; evidence: {paths['evidence']}",
        file=sys.stdout,
    )
    return verdict_exit_code(verdict, fail_on_verdict=args.fail_on_verdict)


def verdict_exit_code(verdict: object, *, fail_on_verdict: bool) -> int:
    """1 when ``fail_on_verdict`` and the verdict is ``fail``, else 0."""
    return 1 if fail_on_verdict and str(verdict).lower() == "fail" else 0
