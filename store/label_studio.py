"""Label Studio, both ways.

Export: one task per scored image for the image-classification config ``LABEL_CONFIG`` (a single
``Choices`` named ``choice`` over ``field`` / ``road`` / ``road_and_field``), with verge's newest
prediction as a pre-annotation carrying its model version and score. ``data`` keeps the image's
verge id and hash, which is how the import finds the image again.

Import: Label Studio's JSON export (a list of tasks with their ``annotations``). Each
annotation's choice becomes a verge label by its annotator, at the annotation's time, with source
``label-studio:<annotation id>`` so importing the same file again adds nothing. Annotators become
verge users (created when missing, as reviewers without a usable password) or are mapped to
existing ones by the caller.

Format reference: https://labelstud.io/guide/task_format and https://labelstud.io/guide/export
(JSON export: ``completed_by`` is the annotator's numeric id, or an object with ``id`` and
``email`` in older versions and with ``--user-details``).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.classes import CLASSES

from .labels import export_rows
from .schema import Image, Label, ReviewTask, User, utcnow
from .sql import chunks

FROM_NAME = "choice"
TO_NAME = "image"
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image" choice="single" showInLine="true">
    <Choice value="field"/>
    <Choice value="road"/>
    <Choice value="road_and_field"/>
  </Choices>
</View>
"""
SOURCE_PREFIX = "label-studio:"


class LabelStudioError(ValueError):
    """The file is not a Label Studio export verge can use; the message says where and why."""


def model_version_name(row: dict) -> str:
    return f"verge-{row['model_kind']}-v{row['model_version']}" if row["model_version"] else "verge-zero-shot"


def prediction_score(row: dict) -> float | None:
    """The probability of the predicted class by the judge that made the prediction."""
    probs = row["head_probs"] if row["head_probs"] else row["zero_shot_probs"]
    if not probs or row["predicted_class"] not in probs:
        return None
    return float(probs[row["predicted_class"]])


def task_for(row: dict, image_url: Callable[[dict], str]) -> dict:
    task: dict[str, Any] = {"data": {
        "image": image_url(row), "verge_image_id": row["image_id"], "sha256": row["sha256"],
        "source_name": row["source_name"], "batches": ", ".join(row["batches"]),
    }}
    if row["predicted_class"] in CLASSES:
        score = prediction_score(row)
        result = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                  "value": {"choices": [row["predicted_class"]]}}
        prediction = {"model_version": model_version_name(row), "result": [result]}
        if score is not None:
            result["score"] = score
            prediction["score"] = score
        task["predictions"] = [prediction]
    return task


def iter_tasks(session: Session, image_url: Callable[[dict], str], batch_id: int | None = None,
               rows: Iterable[dict] | None = None) -> Iterator[dict]:
    for row in export_rows(session, batch_id) if rows is None else rows:
        if row["status"] == "failed":
            continue
        yield task_for(row, image_url)


def iter_tasks_json(session: Session, image_url: Callable[[dict], str],
                    batch_id: int | None = None) -> Iterator[str]:
    """The tasks as one JSON array, in pieces (one task each) for streaming."""
    first = True
    for task in iter_tasks(session, image_url, batch_id):
        yield ("[\n" if first else ",\n") + json.dumps(task, ensure_ascii=False)
        first = False
    yield "[]\n" if first else "\n]\n"


# ----------------------------------------------------------------------------- import
@dataclass
class Annotation:
    annotation_id: Any
    image_ref: tuple            # (sha256, verge image id, "task N") from the task's data
    annotator_key: str          # "id:3" or "email:a@b.c"
    annotator_label: str        # for the printed mapping
    suggested_name: str
    cls: str
    created_at: dt.datetime
    lead_ms: int | None
    image_id: int | None = None


@dataclass
class ImportReport:
    created: int = 0
    already: int = 0                    # imported before (same annotation)
    skipped: dict = field(default_factory=dict)   # reason -> count
    users: dict = field(default_factory=dict)     # annotator label -> (verge name, created?)
    tasks_closed: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _when(value, where: str) -> dt.datetime:
    if not value:
        return utcnow()
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise LabelStudioError(f"{where}: created_at {value!r} is not an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _annotator(completed_by, where: str) -> tuple[str, str, str]:
    """(key, label for the mapping, suggested verge user name)."""
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        uid = completed_by.get("id")
        if email:
            return f"email:{email}", f"{email} (id {uid})" if uid is not None else email, str(email)[:100]
        completed_by = uid
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"id:{completed_by}", f"user id {completed_by}", f"label-studio-{completed_by}"
    if isinstance(completed_by, str) and completed_by.strip():
        return f"email:{completed_by}", completed_by, completed_by.strip()[:100]
    raise LabelStudioError(f"{where}: completed_by {completed_by!r} names no annotator")


def parse_export(data: Any, report: ImportReport) -> list[Annotation]:
    """Read every annotation of a Label Studio JSON export; raises on a file that is not one."""
    if not isinstance(data, list):
        raise LabelStudioError("not a Label Studio JSON export: expected a list of tasks")
    out = []
    for i, task in enumerate(data):
        where = f"task {i + 1}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise LabelStudioError(f"{where}: a task needs a 'data' object")
        ref = task["data"]
        anns = task.get("annotations") or []
        if not isinstance(anns, list):
            raise LabelStudioError(f"{where}: 'annotations' is not a list")
        for j, ann in enumerate(anns):
            at = f"{where}, annotation {j + 1}"
            if not isinstance(ann, dict):
                raise LabelStudioError(f"{at}: not an object")
            if ann.get("was_cancelled"):
                report.skip("cancelled (skipped in Label Studio)")
                continue
            choices = [c for r in ann.get("result") or [] if isinstance(r, dict)
                       and r.get("type") == "choices" and r.get("from_name") == FROM_NAME
                       for c in (r.get("value") or {}).get("choices") or []]
            if not choices:
                report.skip("without a choice")
                continue
            if len(choices) > 1 or choices[0] not in CLASSES:
                raise LabelStudioError(f"{at}: choice {choices!r} is not one of {', '.join(CLASSES)}")
            key, label, name = _annotator(ann.get("completed_by"), at)
            lead = ann.get("lead_time")
            out.append(Annotation(
                annotation_id=ann.get("id", f"{i}.{j}"),
                image_ref=(ref.get("sha256"), ref.get("verge_image_id"), where),
                annotator_key=key, annotator_label=label, suggested_name=name, cls=choices[0],
                created_at=_when(ann.get("created_at"), at),
                lead_ms=int(float(lead) * 1000) if isinstance(lead, (int, float)) and lead >= 0 else None))
    return out


def import_export(session: Session, data: Any, user_map: dict[str, str],
                  new_password_hash: Callable[[], str]) -> ImportReport:
    """Store the annotations of ``data`` as labels. ``user_map`` maps a Label Studio annotator
    (numeric id or email, as text) to an existing verge user name; other annotators get a verge
    user of their own. All or nothing: a file with a bad annotation changes nothing."""
    report = ImportReport()
    anns = parse_export(data, report)
    shas = {a.image_ref[0] for a in anns if a.image_ref[0]}
    by_sha: dict[str, int] = {}
    for part in chunks(sorted(shas)):
        by_sha.update(dict(session.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(part))).all()))
    ids = {a.image_ref[1] for a in anns if not a.image_ref[0] and isinstance(a.image_ref[1], int)}
    known_ids: set[int] = set()
    for part in chunks(sorted(ids)):
        known_ids.update(session.scalars(select(Image.id).where(Image.id.in_(part))))
    keep = []
    for a in anns:
        sha, iid, where = a.image_ref
        a.image_id = by_sha.get(sha) if sha else (iid if iid in known_ids else None)
        if a.image_id is None:
            report.skip("for images this database does not have")
            continue
        keep.append(a)

    users: dict[str, int] = {}
    for a in keep:
        if a.annotator_key in users:
            continue
        raw = a.annotator_key.split(":", 1)[1]
        mapped = user_map.get(raw)
        name = mapped or a.suggested_name
        user = session.scalar(select(User).where(User.name == name))
        created = False
        if user is None:
            if mapped:
                raise LabelStudioError(f"--user {raw}={mapped}: there is no verge user {mapped!r}")
            user = User(name=name, password_hash=new_password_hash(), role="reviewer", created_at=utcnow())
            session.add(user)
            session.flush()
            created = True
        users[a.annotator_key] = user.id
        report.users[a.annotator_label] = (name, created)

    sources = {f"{SOURCE_PREFIX}{a.annotation_id}" for a in keep}
    seen: set[tuple[int, str]] = set()
    for part in chunks(sorted(sources)):
        seen.update(session.execute(select(Label.image_id, Label.source).where(Label.source.in_(part))).all())
    labeled = set()
    for a in keep:
        source = f"{SOURCE_PREFIX}{a.annotation_id}"
        if (a.image_id, source) in seen:
            report.already += 1
            continue
        seen.add((a.image_id, source))
        session.add(Label(image_id=a.image_id, user_id=users[a.annotator_key], task_id=None,
                          source=source, cls=a.cls, time_on_item_ms=a.lead_ms, created_at=a.created_at))
        report.created += 1
        labeled.add(a.image_id)
    # an open review task for an image a person has now labeled elsewhere waits for nobody;
    # claimed ones are left to the reviewer holding them
    for part in chunks(sorted(labeled)):
        report.tasks_closed += session.execute(
            update(ReviewTask).where(ReviewTask.image_id.in_(part), ReviewTask.state == "open")
            .values(state="done", updated_at=utcnow())).rowcount or 0
    session.flush()
    return report
