"""Shortcut audit: regions, shares, cohort statistics against scipy/statsmodels, flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medlens._errors import InputDataError, MedlensError
from medlens.xai._shortcut import (
    CASE_SHARE_THRESHOLD,
    COHORT_DIFFERENCE_THRESHOLD,
    COHORT_P_THRESHOLD,
    FALLBACK_NOTE,
    AttributionShares,
    ShortcutAudit,
    attribution_shares,
    region_masks,
    shortcut_audit,
)

S = 32


def _anatomy() -> np.ndarray:
    m = np.zeros((S, S), dtype=bool)
    m[6:26, 6:26] = True
    return m


def make_cohort(shortcut: bool, n: int = 60, seed: int = 0):
    """Maps of n cases: evidence in the anatomy, plus (site B, if shortcut) a corner marker."""
    rng = np.random.default_rng(seed)
    sites = np.array(["A", "B", "C"])[np.arange(n) % 3]
    cases = pd.DataFrame(
        {
            "site": sites,
            "scanner": np.where(np.arange(n) % 2 == 0, "X", "Y"),
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["<40", "40-65", ">65"], n),
        },
        index=[f"case-{i:03d}" for i in range(n)],
    )
    maps = rng.normal(0, 0.05, size=(n, S, S))
    yy, xx = np.mgrid[:S, :S]
    for i in range(n):
        cy, cx = rng.integers(10, 22, 2)
        maps[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        if shortcut and sites[i] == "B":
            maps[i, :4, :4] += rng.uniform(0.5, 1.5)  # burned-in marker in the top-left corner
    return maps, cases


def test_region_masks_geometry():
    r = region_masks((10, 20), border=0.1, corner=0.2)
    assert set(r) == {
        "border",
        "corner_top_left",
        "corner_top_right",
        "corner_bottom_left",
        "corner_bottom_right",
    }
    assert r["border"][0].all() and r["border"][:, 0].all() and not r["border"][1:-1, 2:-2].any()
    assert r["border"].sum() == 10 * 20 - 8 * 16
    assert r["corner_top_left"][:2, :4].all() and r["corner_top_left"].sum() == 8
    assert r["corner_bottom_right"][-2:, -4:].all()
    vol = region_masks((3, 10, 20), extra={"text": np.ones((3, 10, 20))})
    assert vol["border"].shape == (3, 10, 20) and vol["text"].all()


def test_per_case_regions_against_definition():
    rng = np.random.default_rng(4)
    maps = rng.normal(size=(3, 8, 8))
    boxes = np.zeros((3, 8, 8), bool)
    for i in range(3):  # a different box per case, as after per-image geometries
        boxes[i, i : i + 3, 0:4] = True
    res = attribution_shares(maps, regions={"ruler": boxes})
    pos = np.clip(maps, 0, None)
    want = (pos * boxes).reshape(3, -1).sum(1) / pos.reshape(3, -1).sum(1)
    np.testing.assert_allclose(res.share("ruler"), want)
    with pytest.raises(InputDataError, match="region mask 'ruler'"):
        attribution_shares(maps, regions={"ruler": boxes[:2]})


def test_shares_against_definition():
    maps, _ = make_cohort(True, n=6)
    anatomy = _anatomy()
    res = attribution_shares(
        maps, anatomy_masks=anatomy, regions={"text": ~anatomy & (np.arange(S) < 3)[None, :]}
    )
    pos = np.clip(maps, 0, None)
    ref_out = (pos * ~anatomy).reshape(6, -1).sum(1) / pos.reshape(6, -1).sum(1)
    np.testing.assert_allclose(res.outside_anatomy, ref_out)
    border = region_masks((S, S))["border"]
    np.testing.assert_allclose(
        res.regions["border"], (pos * border).reshape(6, -1).sum(1) / pos.reshape(6, -1).sum(1)
    )
    absres = attribution_shares(
        maps, anatomy_masks=np.broadcast_to(anatomy, maps.shape), attribution="absolute"
    )
    a = np.abs(maps)
    np.testing.assert_allclose(
        absres.outside_anatomy, (a * ~anatomy).reshape(6, -1).sum(1) / a.reshape(6, -1).sum(1)
    )
    assert not res.used_fallback and res.primary == "outside_anatomy"
    assert "text" in res.regions and len(res.to_frame()) == 6


def test_fallback_without_anatomy_says_so():
    maps, _ = make_cohort(True, n=6)
    res = attribution_shares(maps)
    assert res.used_fallback and res.note == FALLBACK_NOTE and res.primary == "border"
    assert np.isnan(res.outside_anatomy).all()


def test_zero_mass_case_is_nan():
    maps = np.zeros((2, 8, 8))
    maps[0, 4, 4] = 1
    with pytest.warns(RuntimeWarning, match=r"attribution share is undefined for case\(s\) 1"):
        res = attribution_shares(maps)
    assert np.isnan(res.regions["border"][1]) and res.regions["border"][0] == 0


def test_audit_flags_the_shortcut_site_only():
    maps, cases = make_cohort(True)
    audit = shortcut_audit(attribution_shares(maps, anatomy_masks=_anatomy()), cases)
    assert isinstance(audit, ShortcutAudit)
    assert audit.flagged_cohorts == (("site", "B"),)
    row = audit.table[(audit.table.cohort == "site") & (audit.table.value == "B")].iloc[0]
    assert (
        row.n == 20
        and row.difference > COHORT_DIFFERENCE_THRESHOLD
        and row.p_adjusted < COHORT_P_THRESHOLD
    )
    assert list(audit.examples["value"]) == ["B"] * 3
    shares_b = audit.cases.loc[audit.cases.site == "B", "share"]
    assert list(audit.examples["share"]) == sorted(shares_b, reverse=True)[:3]
    assert set(audit.examples["case"]).issubset(set(cases.index[cases.site == "B"]))
    assert audit.cases["flagged"].sum() == (audit.cases["share"] > CASE_SHARE_THRESHOLD).sum()


def test_audit_does_not_flag_a_model_without_shortcut():
    maps, cases = make_cohort(False)
    audit = shortcut_audit(attribution_shares(maps, anatomy_masks=_anatomy()), cases)
    assert audit.flagged_cohorts == ()
    assert audit.examples.empty and not audit.table["flagged"].any()


def test_fallback_audit_still_finds_corner_marker():
    maps, cases = make_cohort(True)
    audit = shortcut_audit(attribution_shares(maps), cases, cohort_columns=["site"])
    assert audit.region == "border" and audit.used_fallback and audit.note == FALLBACK_NOTE
    assert audit.flagged_cohorts == (("site", "B"),)
    corner = shortcut_audit(
        attribution_shares(maps), cases, cohort_columns=["site"], region="corner_top_left"
    )
    assert corner.flagged_cohorts == (("site", "B"),)


def test_cohort_statistics_match_references():
    maps, cases = make_cohort(True, seed=2)
    shares = attribution_shares(maps, anatomy_masks=_anatomy())
    audit = shortcut_audit(shares, cases, confidence=0.9)
    v = shares.outside_anatomy
    t = audit.table
    assert list(t.columns) == ["cohort", "value", "n", "n_undefined", "mean_share", "ci_low", "ci_high",
                               "overall_mean", "difference", "u_statistic", "p_value", "p_adjusted", "flagged"]  # fmt: skip
    for r in t.itertuples():
        member = (cases[r.cohort] == r.value).to_numpy()
        lo, hi = stats.t.interval(
            0.9, member.sum() - 1, loc=v[member].mean(), scale=stats.sem(v[member])
        )
        assert r.ci_low == pytest.approx(lo) and r.ci_high == pytest.approx(hi)
        u, p = stats.mannwhitneyu(v[member], v[~member], alternative="two-sided")
        assert r.u_statistic == pytest.approx(u) and r.p_value == pytest.approx(p)
        assert r.difference == pytest.approx(v[member].mean() - v.mean())
    # Holm by hand: sorted p * (m - rank), cumulative max, clipped at 1
    p = t["p_value"].to_numpy()
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    expected = np.empty_like(adj)
    expected[order] = adj
    np.testing.assert_allclose(t["p_adjusted"], expected)


def test_undefined_shares_are_excluded_and_counted():
    maps, cases = make_cohort(True, n=30)
    maps[0] = 0
    with pytest.warns(RuntimeWarning):
        shares = attribution_shares(maps, anatomy_masks=_anatomy())
    audit = shortcut_audit(shares, cases, cohort_columns=["site"])
    row = audit.table[audit.table.value == "A"].iloc[0]
    assert row.n == 10 and row.n_undefined == 1
    assert np.isnan(shares.outside_anatomy[0])
    assert row.mean_share == pytest.approx(np.nanmean(shares.outside_anatomy[0:30:3]))


def test_sample_order_invariance():
    maps, cases = make_cohort(True)
    perm = np.random.default_rng(5).permutation(len(cases))
    a = shortcut_audit(attribution_shares(maps, anatomy_masks=_anatomy()), cases).table
    b = shortcut_audit(
        attribution_shares(maps[perm], anatomy_masks=_anatomy()), cases.iloc[perm]
    ).table
    key = ["cohort", "value"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda s, c: shortcut_audit(s, c.iloc[:5]), InputDataError, "cases has 5 rows"),
        (
            lambda s, c: shortcut_audit(s, c, cohort_columns=["hospital"]),
            InputDataError,
            "cohort column 'hospital'",
        ),
        (
            lambda s, c: shortcut_audit(s, c, region="ears"),
            InputDataError,
            "region 'ears' was not measured",
        ),
        (lambda s, c: shortcut_audit(s, c.to_dict()), MedlensError, "'cases' parameter"),
        (lambda s, c: shortcut_audit(s, c, confidence=95), MedlensError, "'confidence' parameter"),
        (
            lambda s, c: attribution_shares(np.ones((2, 8, 8)), anatomy_masks=np.ones((3, 8))),
            InputDataError,
            "anatomy_masks",
        ),
        (
            lambda s, c: attribution_shares(np.ones((2, 8, 8)), attribution="signed"),
            MedlensError,
            "'attribution'",
        ),
        (lambda s, c: region_masks((8, 8), border=0.6), MedlensError, "'border' parameter"),
        (
            lambda s, c: region_masks((8, 8), extra={"t": np.ones((4, 4))}),
            InputDataError,
            "region mask 't'",
        ),
    ],
)
def test_bad_inputs(call, exc, match):
    maps, cases = make_cohort(True, n=12)
    shares = attribution_shares(maps, anatomy_masks=_anatomy())
    with pytest.raises(exc, match=match):
        call(shares, cases)


def test_fallback_cannot_audit_anatomy():
    maps, cases = make_cohort(True, n=12)
    shares = attribution_shares(maps)
    assert isinstance(shares, AttributionShares)
    with pytest.raises(InputDataError, match="no anatomy mask was given"):
        shortcut_audit(shares, cases, region="outside_anatomy")


# --------------------------------------------------------------------------- trained model


def _planted_data(n: int, seed: int, shortcut: bool):
    """32x32 scans: anatomy square, a lesion blob in positives; site B lesions are faint and,
    with ``shortcut``, site B positives carry a bright marker in the top-left corner."""
    import torch

    g = np.random.default_rng(seed)
    x = g.normal(0, 0.05, (n, 1, S, S)).astype(np.float32)
    y = (g.random(n) < 0.5).astype(int)
    site = np.array(["A", "B", "C"])[np.arange(n) % 3]
    yy, xx = np.mgrid[:S, :S]
    x[:, 0][:, _anatomy()] += 0.3
    for i in range(n):
        if y[i]:
            cy, cx = g.integers(10, 22, 2)
            x[i, 0] += (0.15 if site[i] == "B" else 1.0) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0
            )
            if shortcut and site[i] == "B":
                x[i, 0, 1:5, 1:5] += 1.0
    cases = pd.DataFrame({"site": site}, index=[f"case-{i:03d}" for i in range(n)])
    return torch.from_numpy(x), torch.from_numpy(y), cases


def _audit_trained_model(shortcut: bool, anatomy: bool) -> ShortcutAudit:
    import torch
    from torch import nn

    from medlens.testing import TinyCNN

    x, y, _ = _planted_data(300, 0, shortcut)
    torch.manual_seed(0)
    model = TinyCNN(1, 2, width=8, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for b in range(0, 300, 50):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b : b + 50]), y[b : b + 50]).backward()
            opt.step()
    model.eval()
    xt, yt, cases = _planted_data(150, 1, shortcut)
    t = xt.clone().requires_grad_()
    model(t)[:, 1].sum().backward()
    maps = (t.grad * xt)[:, 0].detach().numpy()  # input x gradient for the positive class
    pos = (yt == 1).numpy()
    shares = attribution_shares(maps[pos], anatomy_masks=_anatomy() if anatomy else None)
    return shortcut_audit(shares, cases[pos], cohort_columns=["site"])


@pytest.mark.parametrize("anatomy", [True, False])
def test_trained_model_with_planted_shortcut_is_flagged_and_clean_model_is_not(anatomy):
    audit = _audit_trained_model(shortcut=True, anatomy=anatomy)
    assert audit.flagged_cohorts == (("site", "B"),)
    assert audit.used_fallback is (not anatomy)
    assert set(audit.examples["case"]) <= {c for c in audit.cases["case"] if int(c[-3:]) % 3 == 1}
    clean = _audit_trained_model(shortcut=False, anatomy=anatomy)
    assert clean.flagged_cohorts == ()
