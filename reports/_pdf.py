"""PDF engine on ReportLab platypus: deterministic bytes, page X of Y, outline, tables, figures.

The same inputs give byte-identical PDFs: ReportLab runs in invariant mode (fixed creation
date and document id), figures are rendered at a fixed dpi with their metadata stripped, and
the text font (DejaVu Sans, shipped with matplotlib, so it is always present) is embedded as
a subset, which also gives every page the same glyphs on every machine and covers symbols
such as "≥", "±" and "–" that the PDF standard fonts lack.

A document is a list of *story builders*: callables ``builder(ctx) -> list of flowables``
(or flowables given directly). The helpers below return flowables in the house style.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, StyleSheet1
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    Image,
    KeepTogether,
    LongTable,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from medlens._errors import MedlensError, param_error

from ._atomic import atomic_write_bytes

__all__ = [
    "PdfContext",
    "badge",
    "build_pdf",
    "data_table",
    "figure",
    "figure_png",
    "heading",
    "image",
    "key_value_table",
    "page_break",
    "paragraph",
    "pdf_metadata",
    "pdf_styles",
    "render_pdf",
    "spacer",
]

FONT = "MedlensSans"
FONT_BOLD = "MedlensSans-Bold"
FONT_ITALIC = "MedlensSans-Oblique"
FONT_MONO = "MedlensMono"
FIGURE_DPI = 150

BADGE_COLOURS = {
    "PASS": colors.HexColor("#1b7a3a"),
    "FAIL": colors.HexColor("#b3261e"),
    "N/A": colors.HexColor("#6b6b6b"),
}
HEADER_FILL = colors.HexColor("#e4e9f0")
ZEBRA_FILL = colors.HexColor("#f5f7fa")
HIGHLIGHT_FILL = colors.HexColor("#fbe3e1")
GRID = colors.HexColor("#9aa5b1")

STORY_ITEM_ERROR = (
    "story item {index} is a {type}; a story builder must be a reportlab Flowable, a list "
    "of them, or a callable taking the PdfContext and returning them"
)
OUTLINE_SKIP = (
    "heading {text!r} has level {level} right after level {previous}; outline levels may "
    "only go one deeper at a time"
)
ROW_LENGTH = "row {index} has {got} cells but the header has {expected}"
UNDECODABLE_IMAGE = "image bytes could not be decoded ({error}); pass PNG or JPEG file bytes"
EMPTY_STORY = "nothing to write: the story builders produced no content"


def _register_fonts() -> tuple[str, str, str]:
    """Register DejaVu Sans (shipped in matplotlib's data folder) once; return the names."""
    if FONT in pdfmetrics.getRegisteredFontNames():
        return FONT, FONT_BOLD, FONT_MONO
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT_ITALIC, str(ttf / "DejaVuSans-Oblique.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(ttf / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_MONO, str(ttf / "DejaVuSansMono.ttf")))
    pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))  # last: the "done" flag
    pdfmetrics.registerFontFamily(
        FONT, normal=FONT, bold=FONT_BOLD, italic=FONT_ITALIC, boldItalic=FONT_BOLD
    )
    return FONT, FONT_BOLD, FONT_MONO


def pdf_styles() -> StyleSheet1:
    """The paragraph styles of medlens reports (body, small, h1-h3, title, caption, cell...)."""
    regular, bold, mono = _register_fonts()
    sheet = StyleSheet1()
    sheet.add(ParagraphStyle("body", fontName=regular, fontSize=9.5, leading=12.5, spaceAfter=4))
    sheet.add(ParagraphStyle("small", parent=sheet["body"], fontSize=8, leading=10))
    sheet.add(
        ParagraphStyle(
            "caption",
            parent=sheet["small"],
            alignment=TA_CENTER,
            textColor=colors.HexColor("#444444"),
            spaceBefore=2,
            spaceAfter=8,
        )
    )
    sheet.add(ParagraphStyle("mono", parent=sheet["small"], fontName=mono))
    sheet.add(ParagraphStyle("cell", parent=sheet["body"], fontSize=8, leading=9.6, spaceAfter=0))
    sheet.add(ParagraphStyle("cell_bold", parent=sheet["cell"], fontName=bold))
    sheet.add(ParagraphStyle("title", fontName=bold, fontSize=20, leading=24, spaceAfter=10))
    sheet.add(
        ParagraphStyle("h1", fontName=bold, fontSize=15, leading=18, spaceBefore=10, spaceAfter=6)
    )
    sheet.add(
        ParagraphStyle("h2", fontName=bold, fontSize=12, leading=15, spaceBefore=8, spaceAfter=4)
    )
    sheet.add(
        ParagraphStyle("h3", fontName=bold, fontSize=10, leading=13, spaceBefore=6, spaceAfter=3)
    )
    sheet.add(
        ParagraphStyle(
            "badge",
            fontName=bold,
            fontSize=8,
            leading=10,
            alignment=TA_CENTER,
            textColor=colors.white,
        )
    )
    return sheet


@dataclass
class PdfContext:
    """What a story builder needs: styles, the usable frame size and the report id.

    Attributes
    ----------
    styles : StyleSheet1
        See :func:`pdf_styles`.
    width, height : float
        Usable frame width and height in points.
    report_id : str
    title : str
    extras : dict
        Free slot for the caller (e.g. the evidence bundle).
    """

    styles: StyleSheet1
    width: float
    height: float
    report_id: str
    title: str
    extras: dict[str, Any] = field(default_factory=dict)


class _Heading(Paragraph):
    """A heading paragraph that registers a bookmark and an outline entry when drawn."""

    def __init__(self, text: str, style: ParagraphStyle, level: int, key: str) -> None:
        super().__init__(escape(text), style)
        self.outline_text = text
        self.outline_level = level
        self.bookmark_key = key


class _NumberedCanvas(rl_canvas.Canvas):
    """Canvas that defers page furniture until the page count is known ("page X of Y").

    Pages are kept until :meth:`save` and only then emitted, so anything that refers to
    "the current page" must be deferred too: bookmarks are recorded per page and
    registered while that page is emitted (otherwise every outline entry would point at
    page 1).
    """

    def __init__(self, *args: Any, furniture: Callable[..., None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._saved_pages: list[tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]] = []
        self._page_bookmarks: list[tuple[str, dict[str, Any]]] = []
        self._furniture = furniture

    def bookmarkPage(self, key: str, **kwargs: Any) -> None:  # noqa: N802 - reportlab API
        self._page_bookmarks.append((key, kwargs))

    def showPage(self) -> None:  # noqa: N802 - reportlab API
        self._saved_pages.append((dict(self.__dict__), self._page_bookmarks))
        self._page_bookmarks = []
        self._startPage()

    def save(self) -> None:
        total = len(self._saved_pages)
        for state, bookmarks in self._saved_pages:
            self.__dict__.update(state)
            for key, kwargs in bookmarks:
                super().bookmarkPage(key, **kwargs)
            self._furniture(self, self._pageNumber, total)
            super().showPage()
        super().save()


class _ReportDoc(BaseDocTemplate):
    def __init__(
        self, buffer: io.BytesIO, *, report_id: str, header_right: str, **kwargs: Any
    ) -> None:
        super().__init__(buffer, **kwargs)
        self.report_id = report_id
        self.header_right = header_right
        self._last_level = -1
        self._bookmarks: dict[str, int] = {}
        frame = Frame(
            self.leftMargin,
            self.bottomMargin,
            self.width,
            self.height,
            id="body",
            leftPadding=0,
            rightPadding=0,
            topPadding=0,
            bottomPadding=0,
        )
        self.addPageTemplates([PageTemplate(id="page", frames=[frame])])

    def afterFlowable(self, flowable: Flowable) -> None:  # noqa: N802 - reportlab API
        if isinstance(flowable, _Heading):
            level = flowable.outline_level
            if level > self._last_level + 1:
                raise MedlensError(
                    OUTLINE_SKIP.format(
                        text=flowable.outline_text, level=level, previous=self._last_level
                    )
                )
            self._last_level = level
            # the same heading text twice must not share (and overwrite) one destination
            count = self._bookmarks.get(flowable.bookmark_key, 0) + 1
            self._bookmarks[flowable.bookmark_key] = count
            key = flowable.bookmark_key if count == 1 else f"{flowable.bookmark_key}-{count}"
            self.canv.bookmarkPage(key)
            self.canv.addOutlineEntry(flowable.outline_text, key, level=level, closed=level > 0)


def _furniture_painter(
    report_id: str,
    header_right: str,
    pagesize: tuple[float, float],
    margins: tuple[float, float, float, float],
) -> Callable[..., None]:
    regular, _, _ = _register_fonts()
    width, height = pagesize
    left, right, top, bottom = margins

    def paint(canv: rl_canvas.Canvas, page: int, total: int) -> None:
        canv.saveState()
        canv.setFont(regular, 7.5)
        canv.setFillColor(colors.HexColor("#444444"))
        canv.setStrokeColor(GRID)
        canv.setLineWidth(0.5)
        y_head = height - top + 6 * mm
        canv.drawString(left, y_head, f"Report {report_id}")
        canv.drawRightString(width - right, y_head, header_right)
        canv.line(left, y_head - 2 * mm, width - right, y_head - 2 * mm)
        y_foot = bottom - 8 * mm
        canv.line(left, y_foot + 3.5 * mm, width - right, y_foot + 3.5 * mm)
        canv.drawString(left, y_foot, "medlens: research and regulatory evidence; not a diagnosis")
        canv.drawRightString(width - right, y_foot, f"page {page} of {total}")
        canv.restoreState()

    return paint


# --------------------------------------------------------------------------- flowables


def heading(text: str, level: int = 0, *, key: str | None = None) -> list[Flowable]:
    """A section heading with a PDF bookmark and an outline (sidebar) entry.

    Parameters
    ----------
    text : str
        Plain text (escaped; no markup).
    level : {0, 1, 2}
        0 = section (h1), 1 = subsection (h2), 2 = h3. Levels may only deepen one at a time.
    key : str, optional
        Bookmark name; defaults to one derived from the text and level.
    """
    if not isinstance(text, str) or not text.strip():
        raise param_error("text", "heading", "a non-empty str", text)
    if level not in (0, 1, 2):
        raise param_error("level", "heading", "0, 1 or 2", level)
    styles = pdf_styles()
    bookmark = key or f"h{level}-" + "".join(c if c.isalnum() else "-" for c in text.lower())[:60]
    # a conditional page break keeps a heading off the bottom of a page without gluing it
    # to a long table (keepWithNext would push the whole table to the next page)
    return [
        CondPageBreak((30 - 6 * level) * mm),
        _Heading(text, styles[f"h{level + 1}"], level, bookmark),
    ]


def paragraph(text: str, *, style: str = "body", markup: bool = False) -> list[Flowable]:
    """A paragraph of text.

    Parameters
    ----------
    text : str
        Plain text; ``<``, ``>`` and ``&`` are escaped unless ``markup=True`` (then
        ReportLab's mini-markup such as ``<b>`` is honoured).
    style : str
        A style name from :func:`pdf_styles`.
    markup : bool, default False
    """
    if not isinstance(text, str):
        raise param_error("text", "paragraph", "a str", type(text).__name__)
    styles = pdf_styles()
    if style not in styles.byName:
        raise param_error("style", "paragraph", f"one of {sorted(styles.byName)}", style)
    body = text if markup else escape(text).replace("\n", "<br/>")
    return [Paragraph(body, styles[style])]


def spacer(height_mm: float = 4.0) -> list[Flowable]:
    """Vertical space of ``height_mm`` millimetres."""
    return [Spacer(1, float(height_mm) * mm)]


def page_break() -> list[Flowable]:
    """Start a new page."""
    return [PageBreak()]


def badge(status: bool | str | None, *, width_mm: float = 14.0) -> Table:
    """A coloured PASS / FAIL / N/A badge (usable inside table cells).

    Parameters
    ----------
    status : bool, "PASS", "FAIL", "N/A" or None
        True -> PASS (green), False -> FAIL (red), None -> N/A (grey).
    """
    if status is True:
        label = "PASS"
    elif status is False:
        label = "FAIL"
    elif status is None:
        label = "N/A"
    elif isinstance(status, str) and status.upper() in BADGE_COLOURS:
        label = status.upper()
    else:
        raise param_error("status", "badge", "True, False, None, 'PASS', 'FAIL' or 'N/A'", status)
    styles = pdf_styles()
    t = Table(
        [[Paragraph(label, styles["badge"])]], colWidths=[width_mm * mm], rowHeights=[4.6 * mm]
    )
    t.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), BADGE_COLOURS[label]),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 0.6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.2),
                ("LEFTPADDING", (0, 0), (-1, -1), 1),
                ("RIGHTPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    t.hAlign = "LEFT"
    return t


def _cell(value: Any, style: ParagraphStyle) -> Any:
    if isinstance(value, Flowable):
        return value
    if value is None:
        return Paragraph("–", style)
    return Paragraph(escape(str(value)).replace("\n", "<br/>"), style)


def key_value_table(
    rows: Iterable[tuple[str, Any]], *, key_width_mm: float = 45.0, width: float | None = None
) -> list[Flowable]:
    """A two-column table of labels and values (cover pages, provenance).

    Parameters
    ----------
    rows : iterable of (str, value)
        Values are shown with ``str()``; a Flowable (e.g. a :func:`badge`) is placed as is.
    key_width_mm : float
        Width of the label column.
    width : float, optional
        Total width in points (default: A4 portrait frame width).
    """
    rows = list(rows)
    if not rows:
        raise param_error("rows", "key_value_table", "at least one (label, value) pair", rows)
    styles = pdf_styles()
    data = []
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 2:
            raise param_error("rows", "key_value_table", f"(label, value) pairs; row {i}", row)
        data.append([_cell(row[0], styles["cell_bold"]), _cell(row[1], styles["cell"])])
    total = width if width is not None else A4[0] - 36 * mm
    t = Table(data, colWidths=[key_width_mm * mm, total - key_width_mm * mm], hAlign="LEFT")
    t.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, GRID),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return [t]


def data_table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    col_widths: Sequence[float] | None = None,
    align: Sequence[str] | None = None,
    wrap: bool | str = "auto",
    zebra: bool = True,
    font_size: float = 8.0,
    highlight_rows: Iterable[int] = (),
) -> list[Flowable]:
    """A data table that splits across pages and repeats its header row on each page.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : iterable of sequences
        One sequence per row, as long as ``header``. Cells are shown with ``str()``;
        ``None`` shows as an en dash; a Flowable (e.g. :func:`badge`) is placed as is.
    col_widths : sequence of float, optional
        Column widths in millimetres (default: equal shares).
    align : sequence of {"LEFT", "RIGHT", "CENTER"}, optional
        Per-column alignment (default: LEFT for the first column, RIGHT otherwise).
    wrap : {"auto", True, False}, default "auto"
        ``"auto"`` wraps only cells whose text is wider than the column (fast for long
        tables of numbers, still no text overflowing its cell); ``True`` wraps every cell;
        ``False`` never wraps.
    zebra : bool, default True
        Shade every other row.
    font_size : float
    highlight_rows : iterable of int
        Row indices (0-based, data rows) shown in bold with a light red fill, e.g. failed
        criteria or flagged cohorts.

    Returns
    -------
    list of Flowable
        A single :class:`reportlab.platypus.LongTable` with ``repeatRows=1``.
    """
    header = [str(h) for h in header]
    ncol = len(header)
    if ncol == 0:
        raise param_error("header", "data_table", "at least one column title", header)
    if align is None:
        align = ["LEFT"] + ["RIGHT"] * (ncol - 1)
    align = [a.upper() for a in align]
    if len(align) != ncol or any(a not in ("LEFT", "RIGHT", "CENTER") for a in align):
        raise param_error("align", "data_table", f"{ncol} of LEFT/RIGHT/CENTER", align)
    styles = pdf_styles()
    cell = ParagraphStyle(
        "tcell", parent=styles["cell"], fontSize=font_size, leading=font_size * 1.2
    )
    head = ParagraphStyle(
        "thead", parent=styles["cell_bold"], fontSize=font_size, leading=font_size * 1.2
    )
    aligned = {
        a: ParagraphStyle(
            f"tcell{a}", parent=cell, alignment={"LEFT": 0, "CENTER": 1, "RIGHT": 2}[a]
        )
        for a in ("LEFT", "RIGHT", "CENTER")
    }
    heads = {
        a: ParagraphStyle(
            f"thead{a}", parent=head, alignment={"LEFT": 0, "CENTER": 1, "RIGHT": 2}[a]
        )
        for a in ("LEFT", "RIGHT", "CENTER")
    }
    total = A4[0] - 36 * mm
    if col_widths is None:
        widths = [total / ncol] * ncol
    else:
        if len(col_widths) != ncol:
            raise param_error("col_widths", "data_table", f"{ncol} widths in mm", list(col_widths))
        widths = [float(w) * mm for w in col_widths]
    if wrap not in (True, False, "auto"):
        raise param_error("wrap", "data_table", "True, False or 'auto'", wrap)
    regular, bold, _ = _register_fonts()
    highlighted = set()
    for r in highlight_rows:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
            raise param_error("highlight_rows", "data_table", "non-negative row indices", r)
        highlighted.add(int(r))
    bold_aligned = {
        a: ParagraphStyle(f"tbold{a}", parent=st, fontName=bold) for a, st in aligned.items()
    }
    room = [w - 6.5 for w in widths]  # cell text width: minus default padding (3 pt per side)
    string_width = pdfmetrics.stringWidth

    def make_cell(v: Any, j: int, strong: bool) -> Any:
        if isinstance(v, Flowable):
            return v
        text = "–" if v is None else str(v)
        if wrap is False:
            return text
        if (
            wrap == "auto"
            and "\n" not in text
            and string_width(text, bold if strong else regular, font_size) <= room[j]
        ):
            return text
        return _cell(text, (bold_aligned if strong else aligned)[align[j]])

    data: list[list[Any]] = [[_cell(h, heads[align[j]]) for j, h in enumerate(header)]]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != ncol:
            raise MedlensError(
                ROW_LENGTH.format(index=i, got=len(row), expected=ncol), source="data_table"
            )
        strong = i in highlighted
        data.append([make_cell(v, j, strong) for j, v in enumerate(row)])
    if highlighted and max(highlighted) >= len(data) - 1:
        raise param_error(
            "highlight_rows", "data_table", f"row indices in [0, {len(data) - 2}]", max(highlighted)
        )
    cmds: list[tuple[Any, ...]] = [
        ("FONTNAME", (0, 0), (-1, 0), bold),
        ("FONTNAME", (0, 1), (-1, -1), regular),
        ("FONTSIZE", (0, 0), (-1, -1), font_size),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, GRID),
        ("LINEBELOW", (0, -1), (-1, -1), 0.8, GRID),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]
    for j, a in enumerate(align):
        cmds.append(("ALIGN", (j, 0), (j, -1), a))
    if zebra:
        cmds.append(("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, ZEBRA_FILL]))
    for r in sorted(highlighted):
        cmds.append(("BACKGROUND", (0, r + 1), (-1, r + 1), HIGHLIGHT_FILL))
        cmds.append(("FONTNAME", (0, r + 1), (-1, r + 1), bold))
    t = LongTable(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
    t.setStyle(TableStyle(cmds))
    return [t]


def figure_png(fig: Any, *, dpi: int = FIGURE_DPI) -> bytes:
    """Render a matplotlib figure to PNG bytes, deterministically (fixed dpi, no metadata).

    The bounding box is tightened so axis labels are never cut off.
    """
    if not hasattr(fig, "savefig"):
        raise param_error("fig", "figure_png", "a matplotlib Figure", type(fig).__name__)
    if not isinstance(dpi, int) or dpi < 30:
        raise param_error("dpi", "figure_png", "an int >= 30", dpi)
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=dpi,
        metadata={"Software": None},
        bbox_inches="tight",
        pad_inches=0.04,
    )
    return buf.getvalue()


def image(
    png: bytes, *, width_mm: float, height_mm: float | None = None, caption: str | None = None
) -> list[Flowable]:
    """Place PNG (or JPEG) bytes at ``width_mm`` wide, keeping the aspect ratio.

    Parameters
    ----------
    png : bytes
        Image file bytes.
    width_mm : float
        Width on the page.
    height_mm : float, optional
        Height; default keeps the aspect ratio.
    caption : str, optional
        Plain-text caption under the image.
    """
    if not isinstance(png, (bytes, bytearray)):
        raise param_error("png", "image", "PNG or JPEG bytes", type(png).__name__)
    if not width_mm or width_mm <= 0:
        raise param_error("width_mm", "image", "a positive number", width_mm)
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(png)) as im:
            w, h = im.size
    except Exception as exc:
        raise MedlensError(UNDECODABLE_IMAGE.format(error=exc), source="image") from exc
    height = height_mm * mm if height_mm else width_mm * mm * h / w
    img = Image(io.BytesIO(bytes(png)), width=width_mm * mm, height=height)
    img.hAlign = "CENTER"
    if caption is None:
        return [img]
    return [KeepTogether([img, *paragraph(caption, style="caption")])]


def figure(
    fig: Any,
    *,
    width_mm: float = 150.0,
    caption: str | None = None,
    dpi: int = FIGURE_DPI,
    close: bool = True,
) -> list[Flowable]:
    """Place a matplotlib figure (PNG at a fixed dpi, metadata stripped).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    width_mm : float
        Width on the page; height keeps the figure's aspect ratio.
    caption : str, optional
    dpi : int
    close : bool, default True
        Close the figure afterwards (frees its memory).
    """
    png = figure_png(fig, dpi=dpi)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return image(png, width_mm=width_mm, caption=caption)


# --------------------------------------------------------------------------- build


StoryBuilder = Callable[[PdfContext], Iterable[Flowable]] | Flowable | Iterable[Flowable]


def _collect(story_builders: Iterable[Any], ctx: PdfContext) -> list[Flowable]:
    story: list[Flowable] = []
    for index, item in enumerate(story_builders):
        produced = item(ctx) if callable(item) and not isinstance(item, Flowable) else item
        if isinstance(produced, Flowable):
            story.append(produced)
            continue
        if produced is None or isinstance(produced, (str, bytes)):
            raise MedlensError(
                STORY_ITEM_ERROR.format(index=index, type=type(produced).__name__),
                source="build_pdf",
            )
        for f in produced:
            if not isinstance(f, Flowable):
                raise MedlensError(
                    STORY_ITEM_ERROR.format(index=index, type=type(f).__name__), source="build_pdf"
                )
            story.append(f)
    return story


def pdf_metadata(bundle: Any) -> dict[str, Any]:
    """Document metadata for :func:`build_pdf` from an evidence bundle (no identifiers).

    Parameters
    ----------
    bundle : EvidenceBundle

    Returns
    -------
    dict
        ``report_id``, ``title``, ``subject`` and ``keywords``, ready to pass as
        ``build_pdf(path, builders, **pdf_metadata(bundle))``.
    """
    from ._bundle import EvidenceBundle

    if not isinstance(bundle, EvidenceBundle):
        raise param_error("bundle", "pdf_metadata", "an EvidenceBundle", type(bundle).__name__)
    date = str(bundle.provenance.get("date_utc", "")) if bundle.provenance else ""
    parts = [name for name in ("validation", "audit", "cases") if getattr(bundle, name) is not None]
    subject = f"medlens evidence bundle {bundle.report_id}" + (f", {date}" if date else "")
    return {
        "report_id": bundle.report_id,
        "title": bundle.title,
        "subject": subject,
        "keywords": ("medlens", "evidence", *parts),
    }


def render_pdf(
    story_builders: Iterable[Any],
    *,
    report_id: str,
    title: str,
    author: str = "medlens",
    subject: str = "",
    keywords: Sequence[str] = (),
    pagesize: tuple[float, float] = A4,
    orientation: str = "portrait",
    margins_mm: tuple[float, float, float, float] = (18.0, 18.0, 20.0, 20.0),
    header_right: str | None = None,
    extras: dict[str, Any] | None = None,
) -> bytes:
    """Build the PDF in memory and return its bytes (see :func:`build_pdf`)."""
    for name, value in (("report_id", report_id), ("title", title)):
        if not isinstance(value, str) or not value.strip():
            raise param_error(name, "build_pdf", "a non-empty str", value)
    if orientation not in ("portrait", "landscape"):
        raise param_error("orientation", "build_pdf", "'portrait' or 'landscape'", orientation)
    size = landscape(pagesize) if orientation == "landscape" else pagesize
    left, right, top, bottom = (m * mm for m in margins_mm)
    buf = io.BytesIO()
    header = header_right if header_right is not None else title
    doc = _ReportDoc(
        buf,
        report_id=report_id,
        header_right=header,
        pagesize=size,
        leftMargin=left,
        rightMargin=right,
        topMargin=top,
        bottomMargin=bottom,
        title=title,
        author=author,
        subject=subject,
        creator="medlens",
        producer="medlens (ReportLab)",
        keywords=list(keywords),
        invariant=1,
        initialFontName=_register_fonts()[0],  # no unembedded Helvetica reference
        pageCompression=1,
    )
    ctx = PdfContext(
        styles=pdf_styles(),
        width=doc.width,
        height=doc.height,
        report_id=report_id,
        title=title,
        extras=dict(extras or {}),
    )
    story = _collect(story_builders, ctx)
    if not story:
        raise MedlensError(EMPTY_STORY, source="build_pdf")
    paint = _furniture_painter(report_id, header, size, (left, right, top, bottom))

    def maker(*args: Any, **kwargs: Any) -> _NumberedCanvas:
        return _NumberedCanvas(*args, furniture=paint, **kwargs)

    doc.build(story, canvasmaker=maker)
    return buf.getvalue()


def build_pdf(path: str | os.PathLike[str], story_builders: Iterable[Any], **kwargs: Any) -> Path:
    """Build a report PDF and write it atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; its folder must exist.
    story_builders : iterable
        Each item is a Flowable, an iterable of Flowables, or a callable
        ``builder(ctx: PdfContext) -> iterable of Flowables``; their output is concatenated.
    report_id : str
        Printed in every page header.
    title : str
        Document title (PDF metadata and header). Must not contain patient identifiers.
    author, subject : str
        PDF metadata.
    keywords : sequence of str
    pagesize : (float, float), default A4
    orientation : {"portrait", "landscape"}
    margins_mm : (left, right, top, bottom)
    header_right : str, optional
        Text at the right of the header (default: the title).
    extras : dict, optional
        Passed to the builders as ``ctx.extras``.

    Returns
    -------
    Path
        The written PDF. Identical inputs give byte-identical files.
    """
    data = render_pdf(story_builders, **kwargs)
    return atomic_write_bytes(path, data)
