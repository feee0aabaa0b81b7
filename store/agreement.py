"""How far reviewers can be trusted: chance-corrected agreement between them (Cohen's kappa per
pair, Fleiss' kappa overall), where they part ways (confusion per class), and per reviewer their
pace and their agreement with the final label.

Only one-at-a-time review labels count towards agreement; labels given in one bulk action
(``source="bulk"``) are counted apart, since one decision spread over many images would
otherwise weigh as many independent judgements. Training-folder labels (no reviewer) and
admins' adjudications (on the task, not a label) are not reviews.
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from itertools import combinations
from typing import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.classes import CLASSES

from .schema import Label, ReviewTask, User

BULK = "bulk"
# Gaps between one reviewer's consecutive labels longer than this are breaks, not work: labels
# per hour is over the time actually spent labeling.
ACTIVE_GAP_S = 300.0
NOT_ENOUGH = "not enough reviewers: agreement needs at least two reviewers who labeled the same tasks"


def cohen_kappa(pairs: Iterable[tuple[str, str]], classes: Sequence[str] = CLASSES) -> float | None:
    """Cohen's kappa for two raters over the same items; None when it is undefined (no items, or
    both raters always gave the one same class, so chance agreement is already 1)."""
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for a, b in pairs if a == b) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(left[c] * right[c] for c in set(classes) | set(left) | set(right)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: Iterable[Counter]) -> float | None:
    """Fleiss' kappa over items each rated by two or more raters (``Counter`` class -> votes).
    With the same number of raters per item this is Fleiss (1971); items with other counts
    enter with their own n_i (the usual generalisation). None when undefined."""
    rated = [c for c in items if sum(c.values()) >= 2]
    if not rated:
        return None
    totals: Counter = Counter()
    per_item = []
    for votes in rated:
        n_i = sum(votes.values())
        totals.update(votes)
        per_item.append((sum(v * v for v in votes.values()) - n_i) / (n_i * (n_i - 1)))
    all_votes = sum(totals.values())
    p_bar = sum(per_item) / len(per_item)
    p_e = sum((v / all_votes) ** 2 for v in totals.values())
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def _rate(stamps: list) -> float | None:
    """Labels per hour of active time (gaps over ACTIVE_GAP_S left out)."""
    if len(stamps) < 2:
        return None
    stamps = sorted(stamps)
    active = sum(min((b - a).total_seconds(), ACTIVE_GAP_S) for a, b in zip(stamps, stamps[1:]))
    return None if active <= 0 else (len(stamps) - 1) / active * 3600.0


def summary(session: Session) -> dict:
    """Everything the dashboard's agreement section and ``GET /api/v1/agreement`` show."""
    rows = session.execute(
        select(Label.task_id, User.name, Label.cls, Label.source, Label.time_on_item_ms,
               Label.created_at, ReviewTask.final_cls)
        .join(User, User.id == Label.user_id)
        .outerjoin(ReviewTask, ReviewTask.id == Label.task_id)
        .order_by(Label.id)).all()
    by_task: dict[int, dict[str, str]] = defaultdict(dict)
    per: dict[str, dict] = defaultdict(lambda: {"labels": 0, "bulk_labels": 0, "stamps": [],
                                                "ms": [], "with_final": 0, "agree_final": 0})
    for task_id, name, cls, source, ms, at, final in rows:
        r = per[name]
        r["stamps"].append(at)
        if source == BULK:
            r["bulk_labels"] += 1
            continue
        r["labels"] += 1
        if task_id is None:
            continue
        by_task[task_id][name] = cls
        if ms is not None:
            r["ms"].append(ms)
        if final is not None:
            r["with_final"] += 1
            r["agree_final"] += int(final == cls)

    reviewers = sorted(per)
    pairs = []
    confusion = {a: {b: 0 for b in CLASSES} for a in CLASSES}
    for a, b in combinations(reviewers, 2):
        both = [(v[a], v[b]) for v in by_task.values() if a in v and b in v]
        if not both:
            continue
        for x, y in both:  # symmetric: neither reviewer of a pair is the reference
            confusion[x][y] += 1
            confusion[y][x] += 1
        pairs.append({"reviewers": [a, b], "items": len(both),
                      "agreement": sum(x == y for x, y in both) / len(both),
                      "cohen_kappa": cohen_kappa(both)})
    multi = [Counter(v.values()) for v in by_task.values() if len(v) >= 2]
    enough = bool(pairs)
    return {
        "enough_reviewers": enough,
        "message": None if enough else NOT_ENOUGH,
        "reviewers_count": len(reviewers),
        "tasks_with_overlap": len(multi),
        "fleiss_kappa": fleiss_kappa(multi) if enough else None,
        "pairs": pairs,
        "classes": list(CLASSES),
        "confusion": confusion,
        "reviewers": [{
            "name": name, "labels": per[name]["labels"], "bulk_labels": per[name]["bulk_labels"],
            "labels_per_hour": _rate(per[name]["stamps"]),
            "median_time_on_item_ms": (statistics.median(per[name]["ms"])
                                       if per[name]["ms"] else None),
            "agreement_with_final": (per[name]["agree_final"] / per[name]["with_final"]
                                     if per[name]["with_final"] else None),
            "labels_with_final": per[name]["with_final"],
        } for name in reviewers],
    }
