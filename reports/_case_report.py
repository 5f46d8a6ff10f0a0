"""Clinician case report: one page per case, pseudonymous case id only (by default).

Each page shows the windowed scan, the model's score against its threshold, the predicted
class, the explanation maps of several methods side by side (each marked with its trust
card verdict), how much the methods agree, and plain-language caveats. A map that failed
its trust checks is never shown as evidence: it is framed in red and labelled.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepInFrame, PageBreak, Table, TableStyle

from medlens._errors import InputDataError, param_error

from ._atomic import atomic_write_bytes
from ._overlay import display_limit
from ._pdf import (
    BADGE_COLOURS,
    GRID,
    PdfContext,
    heading,
    image,
    key_value_table,
    paragraph,
    pdf_styles,
    render_pdf,
    spacer,
)

__all__ = [
    "CASE_CAVEATS",
    "CaseInput",
    "CaseMap",
    "case_report_story",
    "failed_trust_reasons",
    "render_case_reports",
    "render_heatmap_overlay",
    "write_case_reports",
]

#: plain-language caveats printed on every case page
CASE_CAVEATS = (
    "A heatmap shows which parts of the image influenced the model's score, not where disease is. "
    "Bright areas are not a lesion outline.",
    "Different explanation methods can disagree; a low agreement number means the picture of "
    "'why' is uncertain.",
    "A map marked 'FAILED trust checks' did not pass medlens' sanity, faithfulness, anatomy and "
    "shortcut-region checks for this case (what failed is printed under the map); do not use "
    "it as evidence.",
    "The score is the model's output, not a probability of disease for this patient unless the "
    "model was shown to be calibrated in the validation report.",
    "This report supports, and does not replace, the reading of the image by a qualified clinician.",
)
UNTRUSTED_LABEL = "FAILED trust checks: not evidence"
TRUSTED_LABEL = "trust checks passed"
UNCHECKED_LABEL = "trust not checked"
LOW_AGREEMENT = 0.5
#: How the gallery and case-report overlays (:func:`render_heatmap_overlay`) are coloured
OVERLAY_COLOUR_RULE = (
    "Colour shows influence on the score (brighter = more influence), clipped at the "
    "99th percentile of each map."
)
SCORE_FILL_ABOVE = colors.HexColor("#2f4b7c")
SCORE_FILL_BELOW = colors.HexColor("#8aa1c1")

BAD_SCAN = "scan must be a finite 2D array (H, W); got shape {shape}"
BAD_HEATMAP = "heatmap for {method!r} must be a finite 2D array; got shape {shape}"
IDENTIFIER_MISSING = "not recorded in the DICOM header"
SUBJECT_PSEUDONYMOUS = "Explanations of model decisions per case (pseudonymous case ids only)"
SUBJECT_IDENTIFIED = (
    "Explanations of model decisions per case; CONTAINS PATIENT IDENTIFIERS "
    "(requested with --include-identifiers)"
)
BAD_CASE_ID = "case_id must be a non-empty pseudonymous key"
DUPLICATE_IDS = "duplicate case ids {ids}; each case gets one page"
BAD_CLASS = "predicted_class must be a non-empty str"
BAD_SCORE = "{name} must be a finite number; got {got!r}"


@dataclass(frozen=True)
class CaseMap:
    """One explanation shown on a case page.

    Attributes
    ----------
    method : str
        Display name, e.g. ``"Grad-CAM"``.
    overlay : bytes or ndarray of shape (H, W)
        A rendered overlay (PNG bytes, e.g. from ``reports._overlay``) or a raw heatmap,
        which is blended over the scan here.
    trusted : bool or None
        Trust-card verdict: True passed, False failed, None not checked.
    note : str
        Short reason shown under the map (e.g. the failed check).
    reasons : sequence of str
        The trust card's plain-language reasons for the failed checks
        (:func:`failed_trust_reasons`), quoted under a FAILED map and in the page's
        "Not evidence" line; ignored unless ``trusted`` is False.
    """

    method: str
    overlay: bytes | np.ndarray
    trusted: bool | None = None
    note: str = ""
    reasons: Sequence[str] = ()


@dataclass(frozen=True)
class CaseInput:
    """Everything one case page shows. ``case_id`` is pseudonymous; patient identifiers only
    in ``identifiers``, filled only when the user asked for them.

    Attributes
    ----------
    case_id : str
        Pseudonymous case key.
    scan : ndarray of shape (H, W)
        The windowed scan as shown to the model (any range; displayed min-max scaled).
    score : float
        Model score for the predicted/positive class.
    threshold : float
        Operating threshold the score is compared with.
    predicted_class : str
    maps : sequence of CaseMap
    agreement : float or None
        How much the methods agree (e.g. mean pairwise Spearman rank correlation of the maps).
    agreement_method : str
        How ``agreement`` was computed, printed next to it.
    threshold_source : str
        Where the threshold came from (e.g. "locked on tuning split, Youden").
    model_name : str
    notes : sequence of str
        Further case-specific remarks.
    identifiers : mapping of str to str
        ``patient_id`` and ``patient_name`` from the DICOM header, shown next to the
        pseudonymous key. Only when the user asked for them (``--include-identifiers``);
        empty by default.
    identifiers_requested : bool
        The user asked for identifiers: the page shows them (or says they are not
        available) and the PDF's subject says it contains patient identifiers.
    """

    case_id: str
    scan: np.ndarray
    score: float
    threshold: float
    predicted_class: str
    maps: Sequence[CaseMap] = ()
    agreement: float | None = None
    agreement_method: str = "mean pairwise Spearman rank correlation of the maps"
    threshold_source: str = ""
    model_name: str = ""
    notes: Sequence[str] = field(default_factory=tuple)
    identifiers: Mapping[str, str] = field(default_factory=dict)
    identifiers_requested: bool = False


_CARD_CHECKS = ("randomisation", "faithfulness", "stability", "anatomy")
BAD_CARD = "card must be a trust card (a TrustCard or its to_dict() mapping); got {got}"


def failed_trust_reasons(card: Any) -> tuple[str, ...]:
    """The reasons a trust card gives for its failed checks, in the card's check order.

    A card (:class:`medlens.xai.TrustCard` or its ``to_dict()``, as stored in
    ``explanation_audit.json`` and the explain sidecars) holds one reason per check
    (randomisation, faithfulness, stability, anatomy), then one per shortcut region above
    its factor (part of the anatomy check). A failed anatomy check quotes the anatomy
    reason when the share on the lesion/anatomy is too low (or undefined) and the shortcut
    reason when a shortcut region is above its factor.

    Parameters
    ----------
    card : TrustCard or mapping

    Returns
    -------
    tuple of str
        Empty for a trusted card.
    """
    from medlens.xai._trust import ANATOMY_ENRICHMENT_MIN

    if hasattr(card, "to_dict") and not isinstance(card, Mapping):
        card = card.to_dict()
    if not isinstance(card, Mapping) or not isinstance(card.get("reasons"), (list, tuple)):
        raise param_error("card", "failed_trust_reasons", "a trust card", type(card).__name__)
    reasons = [str(r) for r in card["reasons"]]
    out: list[str] = []
    for i, check in enumerate(_CARD_CHECKS):
        if card.get(check) != "fail" or i >= len(reasons):
            continue
        if check != "anatomy":
            out.append(reasons[i])
            continue
        shortcut = reasons[len(_CARD_CHECKS) :]
        inside, frac = card.get("inside_anatomy_share"), card.get("anatomy_fraction")
        low = (
            bool(card.get("anatomy_region"))
            and frac is not None
            and frac == frac
            and not (inside is not None and inside >= ANATOMY_ENRICHMENT_MIN * frac)
        )
        if low or not shortcut:
            out.append(reasons[i])
        out += shortcut
    return tuple(out)


def _finite(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputDataError(BAD_SCORE.format(name=name, got=value)) from exc
    if not math.isfinite(v):
        raise InputDataError(BAD_SCORE.format(name=name, got=value))
    return v


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _png(rgb_or_gray: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb_or_gray).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _check_scan(scan: Any) -> np.ndarray:
    arr = np.asarray(scan, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or min(arr.shape) < 2 or not np.all(np.isfinite(arr)):
        raise InputDataError(BAD_SCAN.format(shape=np.shape(scan)), source="scan")
    return arr


def render_heatmap_overlay(
    scan: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
    method: str = "heatmap",
) -> bytes:
    """Blend a heatmap over a grey-scale scan and return PNG bytes (deterministic, no metadata).

    Parameters
    ----------
    scan : ndarray of shape (H, W)
        Windowed scan (min-max scaled for display).
    heatmap : ndarray of shape (h, w)
        Attribution map; absolute values are shown, clipped at their 99th percentile
        (:func:`medlens.reports._overlay.display_limit`, the same rule as every medlens
        overlay). Resized (bilinear) to the scan's shape when it differs.
    alpha : float in (0, 1]
        Opacity at the strongest attribution (weaker attribution is more transparent).
    cmap : str
        A matplotlib colormap name (only its lookup table is used).
    method : str
        Used in error messages.

    Returns
    -------
    bytes
        PNG image of shape (H, W, 3).
    """
    from matplotlib import colormaps
    from PIL import Image as PILImage

    base = _check_scan(scan)
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim == 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.ndim != 2 or not np.all(np.isfinite(heat)):
        raise InputDataError(
            BAD_HEATMAP.format(method=method, shape=np.shape(heatmap)), source="heatmap"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise param_error("alpha", "render_heatmap_overlay", "a number in (0, 1]", alpha)
    if cmap not in colormaps:
        raise param_error("cmap", "render_heatmap_overlay", "a matplotlib colormap name", cmap)
    heat = np.abs(heat)
    if heat.shape != base.shape:
        img = PILImage.fromarray(heat.astype(np.float32))  # 32-bit float image ("F")
        heat = np.asarray(
            img.resize((base.shape[1], base.shape[0]), PILImage.Resampling.BILINEAR),
            dtype=np.float64,
        )
    heat = np.clip(heat / display_limit(heat), 0.0, 1.0)  # the one display rule (p99 of |map|)
    grey = _to_uint8(base).astype(np.float64)[..., None].repeat(3, axis=2)
    lut = np.asarray(colormaps[cmap](np.linspace(0, 1, 256)))[:, :3] * 255.0
    colour = lut[np.round(heat * 255).astype(np.int64)]
    weight = (alpha * heat)[..., None]
    out = np.round(grey * (1 - weight) + colour * weight).clip(0, 255).astype(np.uint8)
    return _png(out)


def _score_bar(score: float, threshold: float, width: float) -> Flowable:
    """A horizontal 0-1 bar with the threshold tick and the score marker."""

    class _Bar(Flowable):
        def wrap(self, avail_w: float, avail_h: float) -> tuple[float, float]:
            return width, 11 * mm

        def draw(self) -> None:
            c = self.canv
            regular = pdf_styles()["small"].fontName
            y = 5 * mm
            c.setLineWidth(0.5)
            c.setStrokeColor(GRID)
            c.setFillColor(colors.HexColor("#eef1f5"))
            c.rect(0, y, width, 3 * mm, stroke=1, fill=1)
            above = score >= threshold
            c.setFillColor(SCORE_FILL_ABOVE if above else SCORE_FILL_BELOW)
            c.rect(0, y, width * min(max(score, 0.0), 1.0), 3 * mm, stroke=0, fill=1)
            tx = width * threshold
            c.setStrokeColor(colors.black)
            c.setLineWidth(1.2)
            c.line(tx, y - 1.5 * mm, tx, y + 4.5 * mm)
            c.setFont(regular, 7)
            c.setFillColor(colors.black)
            c.drawCentredString(tx, y - 4 * mm, f"threshold {threshold:.3g}")
            c.drawString(0, y + 4 * mm, "0")
            c.drawRightString(width, y + 4 * mm, "1")

    return _Bar()


def _map_cell(
    label: str,
    png: bytes,
    trusted: bool | None,
    note: str,
    cell_w_mm: float,
    reasons: Sequence[str] = (),
) -> list[Any]:
    if trusted is True:
        status, colour = TRUSTED_LABEL, BADGE_COLOURS["PASS"]
    elif trusted is False:
        status, colour = UNTRUSTED_LABEL, BADGE_COLOURS["FAIL"]
    else:
        status, colour = UNCHECKED_LABEL, BADGE_COLOURS["N/A"]
    flow: list[Any] = image(png, width_mm=cell_w_mm - 4)
    flow += paragraph(f"<b>{_esc(label)}</b>", style="cell", markup=True)
    if label != "Scan":
        flow += paragraph(
            f'<font color="#{colour.hexval()[2:]}">{_esc(status)}</font>', style="cell", markup=True
        )
    if note:
        flow += paragraph(note, style="small")
    if trusted is False:
        for reason in reasons:
            flow += paragraph(f"• {reason}", style="small")
    return flow


def _esc(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))


def _check_case(case: Any, index: int) -> CaseInput:
    if not isinstance(case, CaseInput):
        raise param_error(
            "cases", "write_case_reports", f"CaseInput objects; item {index}", type(case).__name__
        )
    if not isinstance(case.case_id, str) or not case.case_id.strip():
        raise InputDataError(BAD_CASE_ID, source=f"case {index}")
    return case


def case_report_story(case: CaseInput, *, width: float | None = None) -> list[Flowable]:
    """The flowables of one case page, shrunk if needed so the case fits on one page.

    Parameters
    ----------
    case : CaseInput
    width : float, optional
        Frame width in points (default: A4 portrait with the default margins).

    Returns
    -------
    list of Flowable
        Exactly one page's content (a KeepInFrame).
    """
    case = _check_case(case, 0)
    from reportlab.lib.pagesizes import A4

    frame_w = width if width is not None else A4[0] - 36 * mm
    frame_h = A4[1] - 40 * mm - 1 * mm
    scan = _check_scan(case.scan)
    score = _finite(case.score, "score")
    threshold = _finite(case.threshold, "threshold")
    if not isinstance(case.predicted_class, str) or not case.predicted_class:
        raise InputDataError(BAD_CLASS, source=f"case {case.case_id}")

    body: list[Flowable] = []
    above = score >= threshold
    rows: list[tuple[str, Any]] = []
    if case.identifiers_requested or case.identifiers:
        ident = dict(case.identifiers or {})
        rows += [
            ("Pseudonymous key", case.case_id),
            ("Patient ID (DICOM)", str(ident.get("patient_id") or IDENTIFIER_MISSING)),
            ("Patient name (DICOM)", str(ident.get("patient_name") or IDENTIFIER_MISSING)),
        ]
    rows += [
        ("Predicted class", case.predicted_class),
        (
            "Score",
            f"{score:.3f} ({'at or above' if above else 'below'} the threshold {threshold:.3f})",
        ),
    ]
    if case.threshold_source:
        rows.append(("Threshold from", case.threshold_source))
    if case.model_name:
        rows.append(("Model", case.model_name))
    body += key_value_table(rows, key_width_mm=35, width=frame_w)
    if 0.0 <= score <= 1.0 and 0.0 <= threshold <= 1.0:
        body += spacer(2)
        body.append(_score_bar(score, threshold, frame_w * 0.6))
    body += spacer(2)

    maps = list(case.maps)
    scan_png = _png(_to_uint8(scan))
    cells: list[list[Any]] = []
    n_cells = len(maps) + 1
    per_row = 2 if n_cells <= 2 else (3 if n_cells <= 6 else 4)  # big enough to read
    cell_w = (frame_w / mm) / per_row
    cells.append(_map_cell("Scan", scan_png, None, "", cell_w))
    for m in maps:
        if not isinstance(m, CaseMap):
            raise param_error("maps", "case_report_story", "CaseMap objects", type(m).__name__)
        if isinstance(m.overlay, (bytes, bytearray)):
            png = bytes(m.overlay)
        else:
            png = render_heatmap_overlay(scan, np.asarray(m.overlay), method=m.method)
        cells.append(_map_cell(m.method, png, m.trusted, m.note, cell_w, tuple(m.reasons)))
    grid = [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    grid[-1] += [""] * (per_row - len(grid[-1]))
    table = Table(grid, colWidths=[cell_w * mm] * per_row, hAlign="LEFT")
    cmds: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("ALIGN", (0, 0), (-1, -1), "CENTER"),
    ]
    for i, m in enumerate(maps, start=1):
        r, c = divmod(i, per_row)
        if m.trusted is False:
            cmds.append(("BOX", (c, r), (c, r), 1.5, BADGE_COLOURS["FAIL"]))
    table.setStyle(TableStyle(cmds))
    body.append(table)
    body += paragraph(OVERLAY_COLOUR_RULE, style="caption")

    if case.agreement is not None:
        agreement = _finite(case.agreement, "agreement")
        text = f"<b>Method agreement: {agreement:.2f}</b> ({_esc(case.agreement_method)}; 1 = identical, 0 = unrelated)."
        if agreement < LOW_AGREEMENT:
            text += " <b>The methods disagree: treat every map on this page with caution.</b>"
        body += paragraph(text, markup=True)
    elif len(maps) > 1:
        body += paragraph("Method agreement was not computed for this case.")
    untrusted = [m for m in maps if m.trusted is False]
    if untrusted:
        why = [
            f"{_esc(m.method)} ({_esc('; '.join(m.reasons))})" if m.reasons else _esc(m.method)
            for m in untrusted
        ]
        body += paragraph(
            f"<b>Not evidence:</b> {', '.join(why)} failed the trust checks for this case.",
            markup=True,
        )
    for note in case.notes:
        body += paragraph(str(note))
    body += spacer(2)
    body += paragraph("<b>How to read this page</b>", markup=True)
    for caveat in CASE_CAVEATS:
        body += paragraph(f"• {_esc(caveat)}", style="small", markup=True)
    # the outline entry is registered by the heading, kept outside the shrinking frame
    label = case.case_id if case.case_id.lower().startswith("case") else f"Case {case.case_id}"
    head = heading(label, 0, key=f"case-{case.case_id}")[1]
    frame = KeepInFrame(
        frame_w, frame_h - head.wrap(frame_w, frame_h)[1] - 4 * mm, body, mode="shrink"
    )
    return [head, frame]


def render_case_reports(
    cases: Iterable[CaseInput], *, report_id: str, title: str = "medlens case report"
) -> bytes:
    """Build the case-report PDF in memory (see :func:`write_case_reports`)."""
    checked = [_check_case(c, i) for i, c in enumerate(cases)]
    if not checked:
        raise param_error("cases", "write_case_reports", "at least one CaseInput", [])
    ids = [c.case_id for c in checked]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputDataError(DUPLICATE_IDS.format(ids=dup), source="cases")

    def builder(ctx: PdfContext) -> list[Flowable]:
        story: list[Flowable] = []
        for i, case in enumerate(checked):
            if i:
                story.append(PageBreak())
            story += case_report_story(case, width=ctx.width)
        return story

    return render_pdf(
        [builder],
        report_id=report_id,
        title=title,
        subject=SUBJECT_IDENTIFIED
        if any(c.identifiers_requested or c.identifiers for c in checked)
        else SUBJECT_PSEUDONYMOUS,
        header_right="Case report: supports, does not replace, clinical reading",
    )


def write_case_reports(
    path: str | os.PathLike[str],
    cases: Iterable[CaseInput],
    *,
    report_id: str,
    title: str = "medlens case report",
) -> Path:
    """Write a clinician case-report PDF, one page per case, atomically and deterministically.

    Parameters
    ----------
    path : str or os.PathLike
        Output PDF; do not put patient identifiers in the file name.
    cases : iterable of CaseInput
        One page each, in the given order; case ids must be unique.
    report_id : str
        Printed in every header (e.g. the evidence bundle's report id).
    title : str
        PDF title (no identifiers).

    Returns
    -------
    Path
        The written file; the same inputs give the same bytes.
    """
    return atomic_write_bytes(path, render_case_reports(cases, report_id=report_id, title=title))
