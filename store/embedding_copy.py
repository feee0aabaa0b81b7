"""Stored embeddings read by one binary COPY per page on Postgres, parsed by numpy.

Retraining reads every labeled image's embedding: a million rows of 2 KB. Fetched as ORM rows
that is a Python tuple, a bytes object and a frombuffer call per row; a binary COPY of the page
is one byte string whose rows all have the same layout (id, vector, hash), viewed in place by a
numpy structured dtype and copied straight into the caller's matrix."""
from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_SHA = 64  # image.sha256: hex digits
_QUERY = ("COPY (SELECT e.image_id, e.vector, rpad(coalesce(i.sha256, ''), {sha}) FROM embedding e "
          "JOIN image i ON i.id = e.image_id WHERE e.encoder = %s AND {match} "
          "ORDER BY e.image_id) TO STDOUT (FORMAT BINARY)")
_BY_LIST = _QUERY.format(sha=_SHA, match="e.image_id = ANY(%s)")
# ids that fill most of their range (labels on most images): one range scan of both primary keys,
# the rows of unwanted ids dropped here (0.3 s a page of 20k instead of 0.5 s of index probes)
_BY_RANGE = _QUERY.format(sha=_SHA, match="e.image_id BETWEEN %s AND %s")


def read_page(session: Session, ids: list[int], encoder: str):
    """(image ids, (n, d) float32 vectors, sha256 list) for those of ``ids`` (ascending, unique)
    with an embedding from ``encoder``, in id order; None if the rows do not share one layout
    (the caller then reads them row by row)."""
    cur = session.connection().connection.dbapi_connection.cursor()
    dense = bool(ids) and ids[-1] - ids[0] + 1 <= 2 * len(ids)
    query, params = (_BY_RANGE, (encoder, ids[0], ids[-1])) if dense else (_BY_LIST, (encoder, ids))
    with cur.copy(query, params) as cp:
        data = b"".join(bytes(block) for block in cp)
    if not data.startswith(_SIGNATURE):
        return None
    ext = int.from_bytes(data[15:19], "big")
    body = memoryview(data)[19 + ext:-2]  # the header, then rows, then the trailer (-1 as int16)
    if len(body) == 0:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32), []
    vec_bytes = int.from_bytes(body[10:14], "big", signed=True)
    if vec_bytes <= 0 or vec_bytes % 4:
        return None
    row = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i4"), ("l2", ">i4"), ("vec", "<f4", (vec_bytes // 4,)),
                    ("l3", ">i4"), ("sha", f"S{_SHA}")])
    if len(body) % row.itemsize:
        return None
    rows = np.frombuffer(body, row)
    if not ((rows["nf"] == 3).all() and (rows["l1"] == 4).all() and (rows["l2"] == vec_bytes).all()
            and (rows["l3"] == _SHA).all()):
        return None
    got = rows["id"].astype(np.int64)
    if dense:
        keep = np.isin(got, np.asarray(ids, dtype=np.int64))
        if not keep.all():
            rows, got = rows[keep], got[keep]
    shas = [s.decode().strip() or None for s in rows["sha"].tolist()]
    return got, rows["vec"], shas
