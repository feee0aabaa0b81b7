"""Export of images with their predictions and labels, as CSV or JSON lines (CLI and web UI)."""
from __future__ import annotations

import csv
import io
import json
from typing import IO, Iterator

from sqlalchemy.orm import Session

from .labels import export_rows

CSV_FIELDS = ["image_id", "sha256", "source_name", "batches", "status", "error", "predicted_class",
              "head_p_road", "head_probs", "zero_shot_probs", "model_version", "model_kind", "routed",
              "reasons", "human_labels", "final_label", "final_label_source"]
FORMATS = ("csv", "jsonl")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: a string that a spreadsheet would run as a
    formula (starting with = + - @, a tab or a carriage return) gets a leading apostrophe, as
    OWASP recommends against CSV injection. JSON lines stay raw."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def iter_export(session: Session, fmt: str, batch_id: int | None = None) -> Iterator[str]:
    """The export as text pieces (the CSV header, then one piece per image): the web UI streams
    them, ``write_export`` writes them to a file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use csv or jsonl")
    if fmt == "jsonl":
        for row in export_rows(session, batch_id):
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)

    def take() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    writer.writeheader()
    yield take()
    for row in export_rows(session, batch_id):
        flat = dict(row)
        flat["batches"] = ";".join(row["batches"])
        flat["human_labels"] = ";".join(f"{h['reviewer']}={h['class']}" for h in row["human_labels"])
        for key in ("head_probs", "zero_shot_probs"):
            flat[key] = json.dumps(row[key]) if row[key] is not None else ""
        writer.writerow({k: csv_cell(v) for k, v in flat.items()})
        yield take()


def write_export(session: Session, out: IO[str], fmt: str, batch_id: int | None = None) -> int:
    """Write the export to ``out``; returns the number of images written."""
    n = -1 if fmt == "csv" else 0  # the CSV header is a piece of its own
    for piece in iter_export(session, fmt, batch_id):
        out.write(piece)
        n += 1
    return max(n, 0)
