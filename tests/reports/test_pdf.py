"""The PDF engine: text, page X of Y, outline, table splitting, determinism, qpdf, rendering."""

from __future__ import annotations

import io
import re
import subprocess

import matplotlib
import pytest
from pypdf import PdfReader

from medlens import MedlensError
from medlens.reports import (
    PdfContext,
    badge,
    build_pdf,
    data_table,
    figure,
    figure_png,
    heading,
    image,
    key_value_table,
    page_break,
    paragraph,
    render_pdf,
    spacer,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

N_ROWS = 300


def _story(ctx: PdfContext):
    out = []
    out += heading("Executive summary", 0)
    out += paragraph("Sensitivity ≥ 0.85 judged on the lower bound; ±0.03; a < b & c > d.")
    out += key_value_table(
        [
            ("Model", "tiny-cnn"),
            ("Primary endpoint", badge(True)),
            ("Secondary", badge(False)),
            ("Unknown", badge(None)),
        ],
        width=ctx.width,
    )
    out += heading("Cohort table", 1)
    rows = [[f"cohort-{i:04d}", i, f"{i / N_ROWS:.3f}", badge(i % 7 != 0)] for i in range(N_ROWS)]
    out += data_table(
        ["Cohort value", "n", "Sensitivity", "Goal met"],
        rows,
        col_widths=[60, 30, 40, 30],
        highlight_rows=[0],
    )
    out += heading("Figures", 0)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 0.2, 1], [0, 0.8, 1])
    ax.set_title("ROC")
    out += figure(fig, width_mm=80, caption="ROC curve with the operating point")
    out += spacer(3)
    out += paragraph("<b>bold</b> via markup", markup=True)
    out += page_break()
    out += paragraph("Last page.\nSecond line.")
    return out


@pytest.fixture(scope="module")
def pdf_bytes():
    return render_pdf(
        [_story],
        report_id="MLR-TEST0001",
        title="Evidence report",
        subject="Validation of tiny-cnn",
        keywords=("medlens", "evidence"),
    )


@pytest.fixture
def pdf_path(tmp_path, pdf_bytes):
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes)
    return path


def _pages_text(data: bytes) -> list[str]:
    return [p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages]


def test_two_builds_are_byte_identical(tmp_path, pdf_bytes):
    a = build_pdf(
        tmp_path / "a.pdf",
        [_story],
        report_id="MLR-TEST0001",
        title="Evidence report",
        subject="Validation of tiny-cnn",
        keywords=("medlens", "evidence"),
    )
    b = build_pdf(
        tmp_path / "b.pdf",
        [_story],
        report_id="MLR-TEST0001",
        title="Evidence report",
        subject="Validation of tiny-cnn",
        keywords=("medlens", "evidence"),
    )
    assert a.read_bytes() == b.read_bytes() == pdf_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "b.pdf"]
    other = render_pdf([_story], report_id="MLR-TEST0002", title="Evidence report")
    assert other != pdf_bytes


def test_text_metadata_and_outline(pdf_bytes):
    reader = PdfReader(io.BytesIO(pdf_bytes))
    text = "\n".join(_pages_text(pdf_bytes))
    for expected in (
        "Executive summary",
        "Sensitivity ≥ 0.85",
        "a < b & c > d",
        "PASS",
        "FAIL",
        "N/A",
        "tiny-cnn",
        "ROC curve with the operating point",
        "bold via markup",
        "Second line.",
    ):
        assert expected in text, expected
    meta = reader.metadata
    assert meta.title == "Evidence report" and meta.author == "medlens"
    assert meta.subject == "Validation of tiny-cnn"
    outline = reader.outline
    titles = [o.title for o in outline if not isinstance(o, list)]
    assert titles == ["Executive summary", "Figures"]
    assert [o.title for o in outline[1]] == ["Cohort table"]


def test_every_page_has_header_and_page_x_of_y(pdf_bytes):
    pages = _pages_text(pdf_bytes)
    n = len(pages)
    assert n >= 5
    for i, text in enumerate(pages, start=1):
        assert f"page {i} of {n}" in text
        assert "Report MLR-TEST0001" in text and "Evidence report" in text
        assert len(re.findall(r"page \d+ of \d+", text)) == 1


def test_long_table_splits_with_repeated_header(pdf_bytes):
    pages = _pages_text(pdf_bytes)
    table_pages = [t for t in pages if "cohort-" in t]
    assert len(table_pages) >= 3, "a 300-row table must span several pages"
    for text in table_pages:
        assert text.count("Cohort value") == 1
        assert text.index("Cohort value") < text.index("cohort-")
    found = re.findall(r"cohort-(\d{4})", "\n".join(table_pages))
    assert [int(x) for x in found] == list(range(N_ROWS)), "every row exactly once, in order"


def test_pdftotext_and_qpdf_and_rendering(pdf_path, tmp_path, pdf_bytes, pdftotext, require_tool):
    text = pdftotext(pdf_path)
    n = len(PdfReader(io.BytesIO(pdf_bytes)).pages)
    assert f"page {n} of {n}" in text and "Sensitivity ≥ 0.85" in text
    qpdf = require_tool("qpdf")
    res = subprocess.run([qpdf, "--check", str(pdf_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No syntax or stream encoding errors" in res.stdout
    pdftoppm = require_tool("pdftoppm")
    subprocess.run(
        [pdftoppm, "-png", "-r", "30", "-f", "1", "-l", "2", str(pdf_path), str(tmp_path / "page")],
        check=True,
        capture_output=True,
    )
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)


def test_figure_png_is_deterministic_without_metadata():
    def make():
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        png = figure_png(fig, dpi=50)
        plt.close(fig)
        return png

    a, b = make(), make()
    assert a == b and a.startswith(b"\x89PNG")
    assert b"tEXt" not in a and b"matplotlib" not in a.lower()


def test_landscape_and_plain_flowables():
    from reportlab.platypus import Paragraph

    from medlens.reports import pdf_styles

    data = render_pdf(
        [
            Paragraph("plain flowable", pdf_styles()["body"]),
            [Paragraph("list item", pdf_styles()["body"])],
        ],
        report_id="R1",
        title="T",
        orientation="landscape",
    )
    page = PdfReader(io.BytesIO(data)).pages[0]
    assert float(page.mediabox.width) > float(page.mediabox.height)
    assert "plain flowable" in page.extract_text() and "list item" in page.extract_text()


def test_bad_input():
    with pytest.raises(MedlensError, match="produced no content"):
        render_pdf([lambda ctx: []], report_id="R", title="T")
    with pytest.raises(MedlensError, match="story item 0 is a str"):
        render_pdf(["text"], report_id="R", title="T")
    with pytest.raises(MedlensError, match="story item 0 is a int"):
        render_pdf([lambda ctx: [1]], report_id="R", title="T")
    with pytest.raises(MedlensError, match="'report_id' parameter of build_pdf"):
        render_pdf([paragraph("x")], report_id="", title="T")
    with pytest.raises(MedlensError, match="'orientation' parameter"):
        render_pdf([paragraph("x")], report_id="R", title="T", orientation="diagonal")
    with pytest.raises(MedlensError, match="outline levels may only go one deeper"):
        render_pdf([heading("A", 0), heading("C", 2)], report_id="R", title="T")
    with pytest.raises(MedlensError, match="'level' parameter of heading"):
        heading("A", 3)
    with pytest.raises(MedlensError, match="'text' parameter of heading"):
        heading("  ")
    with pytest.raises(MedlensError, match="row 1 has 1 cells but the header has 2"):
        data_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(MedlensError, match="'align' parameter of data_table"):
        data_table(["a", "b"], [[1, 2]], align=["LEFT", "UP"])
    with pytest.raises(MedlensError, match="'col_widths' parameter"):
        data_table(["a", "b"], [[1, 2]], col_widths=[10])
    with pytest.raises(MedlensError, match="'highlight_rows' parameter"):
        data_table(["a", "b"], [[1, 2]], highlight_rows=[5])
    with pytest.raises(MedlensError, match="'header' parameter"):
        data_table([], [])
    with pytest.raises(MedlensError, match="'status' parameter of badge"):
        badge("maybe")
    with pytest.raises(MedlensError, match="'rows' parameter of key_value_table"):
        key_value_table([])
    with pytest.raises(MedlensError, match="'rows' parameter of key_value_table"):
        key_value_table([("a", 1, 2)])
    with pytest.raises(MedlensError, match="'style' parameter of paragraph"):
        paragraph("x", style="nope")
    with pytest.raises(MedlensError, match="'text' parameter of paragraph"):
        paragraph(3)  # type: ignore[arg-type]
    with pytest.raises(MedlensError, match="'fig' parameter of figure_png"):
        figure_png(object())
    with pytest.raises(MedlensError, match="image bytes could not be decoded"):
        image(b"not a png", width_mm=10)
    with pytest.raises(MedlensError, match="'width_mm' parameter of image"):
        image(b"x", width_mm=0)


def test_auto_wrap_wraps_only_cells_wider_than_their_column():
    from reportlab.platypus import Paragraph

    long = "a very long site name that certainly needs wrapping in its column"
    (table,) = data_table(["case", "site"], [["c1", "site A"], ["c2", long]], col_widths=[30, 30])
    cells = table._cellvalues
    assert cells[1][1] == "site A" and isinstance(cells[2][1], Paragraph)
    (table,) = data_table(["case", "site"], [["c1", "site A"]], wrap=True)
    assert isinstance(table._cellvalues[1][1], Paragraph)
    (table,) = data_table(["case", "site"], [["c2", long]], wrap=False)
    assert table._cellvalues[1][1] == long
    with pytest.raises(MedlensError, match="'wrap' parameter of data_table"):
        data_table(["a"], [[1]], wrap="sometimes")
    with pytest.raises(MedlensError, match="'highlight_rows' parameter"):
        data_table(["a"], [[1]], highlight_rows=[-1])


_CROSS_PROCESS = """
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from medlens.reports import badge, data_table, figure, heading, paragraph, render_pdf
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [0, 1])
story = [*heading("Summary", 0), *paragraph("AUC ≥ 0.9"), *data_table(["a", "b"], [["x", badge(True)]]), *figure(fig, width_mm=40)]
sys.stdout.buffer.write(render_pdf(story, report_id="MLR-X", title="Cross-process"))
"""


def test_bytes_identical_across_processes_hash_seeds_and_timezones():
    import os
    import sys

    outputs = []
    for seed, tz in (("1", "UTC"), ("2", "America/New_York")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TZ": tz}
        res = subprocess.run(
            [sys.executable, "-c", _CROSS_PROCESS], capture_output=True, env=env, check=True
        )
        outputs.append(res.stdout)
    assert outputs[0].startswith(b"%PDF") and outputs[0] == outputs[1]


def test_repeated_heading_texts_get_their_own_destinations():
    story = [*heading("Site A", 0), *paragraph("one"), *page_break(), *heading("Site A", 0)]
    reader = PdfReader(io.BytesIO(render_pdf(story, report_id="R", title="T")))
    pages = [reader.get_destination_page_number(o) for o in reader.outline]
    assert pages == [0, 1]


def test_pdf_metadata_from_bundle(tmp_path, monkeypatch):
    from medlens.reports import pdf_metadata, provenance, write_bundle

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    bundle = write_bundle(
        tmp_path, provenance=provenance(packages=()), audit={"a": 1}, title="Evidence"
    )
    meta = pdf_metadata(bundle)
    assert meta == {
        "report_id": bundle.report_id,
        "title": "Evidence",
        "subject": f"medlens evidence bundle {bundle.report_id}, 1970-01-01T00:00:00Z",
        "keywords": ("medlens", "evidence", "audit"),
    }
    data = render_pdf([paragraph("x")], **meta)
    assert PdfReader(io.BytesIO(data)).metadata.title == "Evidence"
    with pytest.raises(MedlensError, match="'bundle' parameter of pdf_metadata"):
        pdf_metadata({"title": "x"})
