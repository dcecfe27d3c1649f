"""What both reports share: saving a matplotlib figure as a PNG and writing the HTML page that shows them.

A report is a folder: `index.html` plus the PNGs beside it, referenced by relative path, so it opens
from a laptop, a copied folder or a bucket browser with no network and no server. Text that comes
from the data (record ids, paths, reason codes) is HTML-escaped.

matplotlib is imported inside the functions with the Agg backend (no display, no GUI toolkit), so
importing a report module costs the pipeline's Beam workers nothing.
"""
from __future__ import annotations

import dataclasses
import html
import os
import shutil
from typing import Iterable, Sequence

INDEX_FILE = "index.html"
FIGURE_DPI = 100

PAGE_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1500px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; } .warning { color: #a30; font-weight: bold; }
"""


@dataclasses.dataclass(frozen=True)
class Section:
    """One heading of the page: paragraphs, then tables, then figures (PNG file names in the report folder)."""

    title: str
    paragraphs: Sequence[str] = ()
    tables: Sequence["Table"] = ()
    figures: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]


def use_agg() -> None:
    """Selects the file-only backend before anything draws (safe to call more than once)."""
    import matplotlib

    matplotlib.use("Agg")


def fresh_folder(path: str) -> str:
    """An empty report folder: a report is rebuilt whole, so no PNG of an earlier build lingers."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def save_figure(figure, folder: str, name: str) -> str:
    """Writes `figure` as `folder/name` (PNG, white background) and returns `name`."""
    figure.savefig(os.path.join(folder, name), dpi=FIGURE_DPI, facecolor="white")
    return name


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in table.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f"<p>{paragraph}</p>" for paragraph in section.paragraphs]
    parts += [_table(table) for table in section.tables]
    parts += [f'<p><img src="{html.escape(name)}" alt="{html.escape(name)}"></p>' for name in section.figures]
    return "\n".join(parts)


def write_page(folder: str, title: str, intro: Iterable[str], sections: Iterable[Section]) -> str:
    """Writes `folder/index.html` and returns its path. `intro` and paragraphs are trusted HTML built by
    the report modules (they escape data with `text`); tables escape every cell."""
    body = "\n".join(f"<p>{paragraph}</p>" for paragraph in intro)
    body += "\n" + "\n".join(_section(section) for section in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    path = os.path.join(folder, INDEX_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def text(value: object) -> str:
    """Data shown inside a paragraph, escaped."""
    return html.escape(str(value))
