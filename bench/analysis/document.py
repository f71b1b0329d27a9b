"""A report as a list of blocks, rendered to markdown (report.md) and to one self-contained HTML
file (report.html, figures embedded), so both always say the same thing.

Blocks: ``("h1" | "h2" | "p", text)`` with inline markdown (`code`, **bold**, [link](target)),
``("table", DataFrame)`` and ``("img", file name in the report folder, alt text)``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd


def _cell(v: object, floatfmt: str) -> str:
    """A table cell: floats in ``floatfmt``, except non-zero ones too small for it (e.g. a job's kWh,
    a tiny p-value), which keep 3 significant digits instead of printing as 0.0000."""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        text = format(v, floatfmt)
        return format(v, ".3g") if v != 0 and float(text) == 0 else text
    return str(v)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured markdown table of a DataFrame (no extra dependency)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_cell(v, floatfmt) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def to_markdown(blocks: list[tuple]) -> str:
    """The blocks as markdown."""
    out = []
    for kind, *rest in blocks:
        if kind == "h1":
            out.append(f"# {rest[0]}")
        elif kind == "h2":
            out.append(f"## {rest[0]}")
        elif kind == "p":
            out.append(rest[0])
        elif kind == "table":
            out.append(markdown_table(rest[0]))
        elif kind == "img":
            name, alt = rest
            pdf = Path(name).with_suffix(".pdf").name
            out.append(f"![{alt}]({name}) ([PDF]({pdf}))")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .45rem;
text-align:right}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2rem}img{max-width:100%}"""


def to_html(blocks: list[tuple], folder: Path, title: str) -> str:
    """The blocks as one HTML page; figures are read from ``folder`` and embedded as PNG data."""
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(rest[0])}</p>")
        elif kind == "table":
            df = rest[0]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v, '.4f'))}</td>" for v in row) + "</tr>"
                for row in df.itertuples(index=False)
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            name, alt = rest
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
