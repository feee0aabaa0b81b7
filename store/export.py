"""Export of images with their predictions and labels, as CSV or JSON lines (CLI and web UI)."""
from __future__ import annotations

import csv
import json
from typing import IO

from sqlalchemy.orm import Session

from .labels import export_rows

CSV_FIELDS = ["image_id", "sha256", "source_name", "batches", "status", "error", "predicted_class",
              "head_p_road", "head_probs", "zero_shot_probs", "model_version", "model_kind", "routed",
              "reasons", "human_labels", "final_label", "final_label_source"]


def write_export(session: Session, out: IO[str], fmt: str, batch_id: int | None = None) -> int:
    n = 0
    if fmt == "jsonl":
        for row in export_rows(session, batch_id):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in export_rows(session, batch_id):
        flat = dict(row)
        flat["batches"] = ";".join(row["batches"])
        flat["human_labels"] = ";".join(f"{h['reviewer']}={h['class']}" for h in row["human_labels"])
        for key in ("head_probs", "zero_shot_probs"):
            flat[key] = json.dumps(row[key]) if row[key] is not None else ""
        writer.writerow(flat)
        n += 1
    return n
