"""Report files: PDF (reportlab: a title page, a heading per section, tables and charts), JSON (all the data)
and CSV (the one table of a tabular type). Pure functions from `Content` to bytes; no database here."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
)
from reportlab.platypus import (
    Table as PdfTable,
)
from reportlab.platypus import (
    TableStyle as PdfTableStyle,
)

from app.reports.data import TITLES, Chart, Content, Section

CONTENT_TYPES = {"PDF": "application/pdf", "JSON": "application/json", "CSV": "text/csv; charset=utf-8"}
EXTENSIONS = {"PDF": "pdf", "JSON": "json", "CSV": "csv"}
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CELL_CHARS = 80  # PDF table cells are cut here: a report is read, the JSON file has everything
SERIES_COLOURS = (colors.HexColor("#2f5d8a"), colors.HexColor("#c8553d"), colors.HexColor("#6a994e"))
TABLE_ROWS = 2000  # rows per PDF table; the JSON file has them all


@dataclass
class Meta:
    """What the title page and the JSON envelope say about the report."""

    report_id: str
    type: str
    format: str
    org_id: str
    org_name: str
    window_from: str
    window_to: str
    agent_ids: list[str] | None
    generated_at: str
    requested_by: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.report_id,
            "type": self.type,
            "orgId": self.org_id,
            "organization": self.org_name,
            "from": self.window_from,
            "to": self.window_to,
            "agentIds": self.agent_ids,
            "generatedAt": self.generated_at,
            "requestedBy": self.requested_by,
        }


def render(content: Content, meta: Meta) -> bytes:
    if meta.format == "JSON":
        return render_json(content, meta)
    if meta.format == "CSV":
        return render_csv(content)
    return render_pdf(content, meta)


def render_json(content: Content, meta: Meta) -> bytes:
    document = {"apiVersion": "agentrail/v1", "kind": "Report", "report": meta.as_json(), "summary": content.summary}
    document["data"] = content.data
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def _csv_cell(value: Any) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def render_csv(content: Content) -> bytes:
    if content.table is None:
        raise ValueError("this report type has no CSV form")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(content.table.header)
    for row in content.table.rows:
        writer.writerow([_csv_cell(v) for v in row])
    return buffer.getvalue().encode()


# --- PDF ---------------------------------------------------------------------------------------
# The PDF's built-in fonts know Latin-1 only; names in Cyrillic, Greek and most other scripts need a Unicode
# TrueType font. DejaVu Sans is used where the system has it (most Linux images), else Helvetica.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)


@functools.cache
def fonts() -> tuple[str, str]:
    """(regular, bold) font names for the PDF."""
    for folder in FONT_DIRS:
        regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("ReportSans", str(regular)))
            pdfmetrics.registerFont(TTFont("ReportSans-Bold", str(bold)))
            pdfmetrics.registerFontFamily(
                "ReportSans",
                normal="ReportSans",
                bold="ReportSans-Bold",
                italic="ReportSans",
                boldItalic="ReportSans-Bold",
            )
            return "ReportSans", "ReportSans-Bold"
    return "Helvetica", "Helvetica-Bold"


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    regular, bold = fonts()
    return {
        "title": ParagraphStyle(
            "ReportTitle", parent=base["Title"], fontName=bold, fontSize=26, leading=32, spaceAfter=8 * mm
        ),
        "subtitle": ParagraphStyle(
            "ReportSubtitle", parent=base["Heading2"], fontName=bold, textColor=colors.HexColor("#555555")
        ),
        "h1": ParagraphStyle("ReportHeading", parent=base["Heading1"], fontName=bold),
        "body": ParagraphStyle("ReportBody", parent=base["BodyText"], fontName=regular),
        "cell": ParagraphStyle("Cell", parent=base["BodyText"], fontName=regular, fontSize=8, leading=10),
    }


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _table(
    header: list[str] | None,
    rows: list[list[Any]],
    styles: dict[str, ParagraphStyle],
    *,
    widths: list[float] | None = None,
) -> PdfTable:
    cell = styles["cell"]
    shown = rows[:TABLE_ROWS]
    columns = len(header) if header else len(rows[0])
    data: list[list[Paragraph | str]] = [[Paragraph(f"<b>{escape(h)}</b>", cell) for h in header]] if header else []
    data += [[Paragraph(escape(_text(v)), cell) for v in row] for row in shown]
    if not shown:
        data.append([Paragraph("<i>none</i>", cell)] + [""] * (columns - 1))
    table = PdfTable(
        data, repeatRows=1 if header else 0, hAlign="LEFT", colWidths=widths or [170 * mm / columns] * columns
    )
    first = 1 if header else 0
    style: list[tuple[Any, ...]] = [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa8b5")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("ROWBACKGROUNDS", (0, first), (-1, -1), [colors.white, colors.HexColor("#f4f6f8")]),
    ]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde6ef")))
    if not shown:
        style.append(("SPAN", (0, first), (-1, first)))
    table.setStyle(PdfTableStyle(style))
    return table


def _chart(chart: Chart) -> Drawing:
    width, height = 170 * mm, 75 * mm
    drawing = Drawing(width, height)
    regular, bold = fonts()
    drawing.add(String(0, height - 10, chart.title, fontName=bold, fontSize=10))
    values = [list(values) for _, values in chart.series] or [[0.0]]
    labels = chart.labels or [""]
    if not chart.labels:
        values = [[0.0] for _ in values]
    plot = VerticalBarChart() if chart.kind == "bar" else HorizontalLineChart()
    plot.x, plot.y, plot.width, plot.height = 30, 45, width - 130, height - 70  # type: ignore[assignment]  # stubs say int; points are floats
    plot.data = values
    plot.categoryAxis.categoryNames = _thin_labels(labels)
    plot.categoryAxis.labels.fontSize = 6
    plot.categoryAxis.labels.fontName = regular
    plot.valueAxis.labels.fontName = regular
    plot.categoryAxis.labels.angle = 45 if len(labels) > 6 else 0
    plot.categoryAxis.labels.boxAnchor = "ne" if len(labels) > 6 else "n"
    plot.valueAxis.valueMin = 0
    top = max((v for series in values for v in series), default=0)
    plot.valueAxis.valueMax = max(1, top * 1.1)
    plot.valueAxis.labels.fontSize = 7
    for index in range(len(values)):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        if isinstance(plot, VerticalBarChart):  # chart.kind == "bar"
            plot.bars[index].fillColor = colour
        else:
            plot.lines[index].strokeColor = colour
            plot.lines[index].strokeWidth = 1.5
    drawing.add(plot)
    legend = Legend()
    legend.x, legend.y = width - 90, height - 25  # type: ignore[assignment]  # stubs say int; points are floats
    legend.fontSize = 7
    legend.fontName = regular
    legend.colorNamePairs = [
        (SERIES_COLOURS[i % len(SERIES_COLOURS)], name) for i, (name, _) in enumerate(chart.series)
    ]
    drawing.add(legend)
    return drawing


def _thin_labels(labels: list[str]) -> list[str]:
    """Long daily series: label every n-th day so the axis stays readable."""
    step = max(1, len(labels) // 15)
    return [label[:18] if i % step == 0 else "" for i, label in enumerate(labels)]


def _section(section: Section, styles: dict[str, ParagraphStyle]) -> list[Any]:
    flowables: list[Any] = [Paragraph(escape(section.title), styles["h1"])]
    if section.text:
        flowables += [Paragraph(escape(section.text), styles["body"]), Spacer(1, 3 * mm)]
    if section.chart is not None:
        flowables += [_chart(section.chart), Spacer(1, 3 * mm)]
    if section.table is not None:
        flowables.append(_table(section.table.header, section.table.rows, styles))
        if len(section.table.rows) > TABLE_ROWS:
            flowables.append(
                Paragraph(
                    f"The first {TABLE_ROWS} of {len(section.table.rows)} rows; the JSON report has all.",
                    styles["body"],
                )
            )
    flowables.append(Spacer(1, 6 * mm))
    return [KeepTogether(flowables[:3]), *flowables[3:]]


def render_pdf(content: Content, meta: Meta) -> bytes:
    styles = _styles()
    title = TITLES[meta.type]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=20 * mm,
        bottomMargin=20 * mm,
        title=f"{title} — {meta.org_name}",
        author="Agentrail",
        subject=f"{title} report {meta.report_id}",
    )
    agents = ", ".join(meta.agent_ids) if meta.agent_ids else "all agents"
    facts = [
        ["Organisation", f"{meta.org_name} ({meta.org_id})"],
        ["Window (UTC)", f"{meta.window_from} to {meta.window_to}"],
        ["Agents", agents],
        ["Generated at", meta.generated_at],
        ["Requested by", meta.requested_by],
        ["Report", meta.report_id],
    ]
    story: list[Any] = [
        Spacer(1, 40 * mm),
        Paragraph(escape(f"Agentrail — {title}"), styles["title"]),
        Paragraph(escape(meta.org_name), styles["subtitle"]),
        Spacer(1, 10 * mm),
        _table(None, facts, styles, widths=[40 * mm, 130 * mm]),
        PageBreak(),
    ]
    for section in content.sections:
        story += _section(section, styles)

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(fonts()[0], 7)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(20 * mm, 10 * mm, f"{title} · {meta.org_name} · {meta.window_from} – {meta.window_to}")
        canvas.drawRightString(A4[0] - 20 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
