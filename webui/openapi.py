"""The OpenAPI 3.1 contract of ``/api/v1``, served at ``/api/v1/openapi.json``.

Written by hand next to the routes it describes (webui/api.py) and held to them by two tests:
tests/webui/test_openapi.py checks that every ``/api/v1`` rule in Flask's URL map is in the
document and nothing else is, and runs Schemathesis against a live ``verge web`` to check that
the server's answers match it (no 5xx, no response outside the schema).
"""
from __future__ import annotations

from models.classes import CLASSES

from .parsing import MAX_INT, MAX_JSON_DEPTH
from .payloads import MAX_IDS, MAX_TIME_ON_ITEM_MS
from .thumbs import IMAGE_MIMES

ERROR = {"$ref": "#/components/schemas/Error"}
INT = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
TEXT = {"type": "string", "pattern": "^[^\\x00]*$"}  # no NUL: Postgres cannot store one
WHEN = {"type": ["string", "null"], "format": "date-time"}
NUMBER_OR_NULL = {"type": ["number", "null"]}
PROBS = {"type": ["object", "null"], "additionalProperties": {"type": "number"}}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


UNAUTHORIZED = {**_error("no valid API token; `WWW-Authenticate: Bearer realm=\"verge\"`"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
COMMON = {"400": _error("malformed input: the reason in one sentence"), "401": UNAUTHORIZED,
          "405": _error("method not allowed")}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "Prediction": {
        "type": ["object", "null"],
        "properties": {
            "id": INT, "model_version_id": {"type": ["integer", "null"]},
            "head_p_road": NUMBER_OR_NULL, "head_probs": PROBS,
            "predicted_class": {"type": "string"}, "zs_p_road": {"type": "number"},
            "zs_probs": PROBS, "zs_class": {"type": "string"}}},
    "Task": {
        "type": "object",
        "required": ["task_id", "state", "image_id", "image_url", "thumb_url", "item_url"],
        "properties": {
            "task_id": INT, "state": {"type": "string"}, "priority": {"type": "number"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "lease_owner": {"type": ["string", "null"]}, "lease_expires_at": WHEN,
            "image_id": INT, "source_name": {"type": "string"},
            "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
            "batches": {"type": "array", "items": {"type": "string"}},
            "prediction": _ref("Prediction"),
            "image_url": {"type": "string"}, "thumb_url": {"type": "string"},
            "item_url": {"type": "string"}}},
    "Claim": {"type": "object", "required": ["task", "lease_s"],
              "properties": {"task": {"oneOf": [_ref("Task"), {"type": "null"}]},
                             "lease_s": {"type": "integer"}}},
    "Label": {
        "type": "object",
        "required": ["label_id", "task_id", "image_id", "class", "source", "created_at"],
        "properties": {
            "label_id": INT, "task_id": {"type": ["integer", "null"]}, "image_id": INT,
            "class": {"type": "string"}, "source": {"type": "string"},
            "time_on_item_ms": {"type": ["integer", "null"]},
            "admin_override": {"type": "boolean",
                               "description": "an admin labeled a task they had not claimed"},
            "created_at": WHEN,
            "closed": {"type": "boolean", "description": "this label closed the task"},
            "duplicate": {"type": "boolean", "description": "the same label was already stored"},
            "user": {"type": ["string", "null"]}}},
    "LabelPost": {
        "type": "object", "required": ["task_id", "class"],
        "properties": {
            "task_id": {**INT, "description": "a task you claimed (POST /api/v1/tasks/next)"},
            "class": {"type": "string", "enum": list(CLASSES)},
            "time_on_item_ms": {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT,
                                "description": f"kept within 0..{MAX_TIME_ON_ITEM_MS}"}}},
    "SubmitResult": {
        "type": "object",
        "required": ["batch", "batch_id", "submitted", "new", "duplicates", "enqueued", "chunks",
                     "skipped"],
        "properties": {
            "batch": {"type": "string"}, "batch_id": INT, "submitted": {"type": "integer"},
            "new": {"type": "integer"}, "duplicates": {"type": "integer"},
            "enqueued": {"type": "integer"}, "chunks": {"type": "integer"},
            "skipped": {"type": "array", "items": {
                "type": "object", "required": ["path", "reason"],
                "properties": {"path": {"type": "string"}, "reason": {"type": "string"}}}}}},
    "BatchStatus": {
        "type": "object",
        "required": ["batch", "batch_id", "total", "queued", "scored", "failed", "routed"],
        "properties": {
            "batch": {"type": "string"}, "batch_id": INT, "source": {"type": "string"},
            "created_at": WHEN, "total": {"type": "integer"}, "queued": {"type": "integer"},
            "scored": {"type": "integer"}, "failed": {"type": "integer"},
            "routed": {"type": "integer"}, "labeled": {"type": "integer"},
            "failures": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"},
                                                 "reason": {"type": ["string", "null"]}}}}}},
    "Agreement": {
        "type": "object",
        "required": ["enough_reviewers", "message", "reviewers_count", "tasks_with_overlap",
                     "fleiss_kappa", "pairs", "classes", "confusion", "reviewers"],
        "properties": {
            "enough_reviewers": {"type": "boolean"}, "message": {"type": ["string", "null"]},
            "reviewers_count": {"type": "integer"}, "tasks_with_overlap": {"type": "integer"},
            "fleiss_kappa": NUMBER_OR_NULL,
            "pairs": {"type": "array", "items": {
                "type": "object", "required": ["reviewers", "items", "agreement", "cohen_kappa"],
                "properties": {"reviewers": {"type": "array", "items": {"type": "string"}},
                               "items": {"type": "integer"}, "agreement": {"type": "number"},
                               "cohen_kappa": NUMBER_OR_NULL}}},
            "classes": {"type": "array", "items": {"type": "string"}},
            "confusion": {},
            "reviewers": {"type": "array", "items": {
                "type": "object", "required": ["name", "labels"],
                "properties": {"name": {"type": "string"}, "labels": {"type": "integer"},
                               "bulk_labels": {"type": "integer"},
                               "labels_per_hour": NUMBER_OR_NULL,
                               "median_time_on_item_ms": NUMBER_OR_NULL,
                               "agreement_with_final": NUMBER_OR_NULL,
                               "labels_with_final": {"type": "integer"}}}}}},
}


def _paths() -> dict:
    image = {"description": "the image's bytes; the type sniffed from them",
             "content": {mime: {"schema": {"type": "string", "contentMediaType": mime}}
                         for mime in IMAGE_MIMES},
             "headers": {"ETag": {"schema": {"type": "string"}}}}
    return {
        "/api/v1/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document.",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document"),
                          "401": UNAUTHORIZED}}},
        "/api/v1/batches": {"post": {
            "operationId": "submitBatch",
            "summary": "Upload images as a batch (admins). Unreadable files are recorded as "
                       "failed with a reason; they never fail the request.",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["files"],
                "properties": {
                    "files": {"type": "array", "minItems": 1,
                              "items": {"type": "string",
                                        "contentMediaType": "application/octet-stream"}},
                    "batch": {**TEXT, "maxLength": 200,
                              "description": "batch name; default batch-<time>-<random>"}}}}}},
            "responses": {"201": _json(_ref("SubmitResult"), "the submission's outcome"),
                          **COMMON, "403": _error("the token is not an admin's"),
                          "413": _error("an upload or a file over its size limit"),
                          "503": _error("the broker is down; nothing was submitted")}}},
        "/api/v1/registrations": {"post": {
            "operationId": "registerPrefix",
            "summary": "Register the image objects under an s3://BUCKET/PREFIX in place as a "
                       "batch (admins): nothing is copied; workers read the objects from the "
                       "bucket, as `verge submit s3://...`.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["url"],
                "properties": {
                    "url": {**TEXT, "maxLength": 1100, "description": "s3://BUCKET/PREFIX"},
                    "batch": {**TEXT, "maxLength": 200,
                              "description": "batch name; default batch-<time>-<random>"}}}}}},
            "responses": {"201": _json(_ref("SubmitResult"), "the registration's outcome"),
                          **COMMON, "403": _error("the token is not an admin's"),
                          "413": _error("a JSON body over 1 MB"),
                          "503": _error("the object store or the broker is down; nothing was "
                                        "registered")}}},
        "/api/v1/batches/{ref}": {"get": {
            "operationId": "batchStatus", "summary": "A batch's progress, by name or number.",
            "parameters": [{"name": "ref", "in": "path", "required": True, "schema": TEXT}],
            "responses": {"200": _json(_ref("BatchStatus"), "the batch's progress"),
                          **COMMON, "404": _error("no such batch")}}},
        "/api/v1/tasks/next": {"post": {
            "operationId": "claimNextTask",
            "summary": "Claim the next review task (highest priority first) under a lease; "
                       "`task` is null when the queue is empty for you.",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"exclude": {
                    "description": "task ids you already hold (only the first 8 count)",
                    "oneOf": [{"type": "array", "maxItems": MAX_IDS, "items": INT},
                              {"type": "string", "pattern": "^[0-9, ]*$",
                               "description": "comma-separated"},
                              {"type": "null"}]}}}}}},
            "responses": {"200": _json(_ref("Claim"), "the claimed task, or null"), **COMMON,
                          "413": _error("a JSON body over 1 MB")}}},
        "/api/v1/tasks/{task_id}/skip": {"post": {
            "operationId": "skipTask",
            "summary": "Pass on a task: it goes back to the queue for the others.",
            "parameters": [{"name": "task_id", "in": "path", "required": True, "schema": INT}],
            "responses": {"200": _json({"type": "object", "required": ["skipped"],
                                        "properties": {"skipped": INT}}, "skipped"),
                          **COMMON, "404": _error("no such task")}}},
        "/api/v1/labels": {
            "post": {
                "operationId": "postLabel",
                "summary": "Label a task you claimed (admins may label any task: recorded as "
                           "an override). Posting the same label again is harmless.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("LabelPost")}}},
                "responses": {
                    "201": _json({"type": "object", "required": ["label"],
                                  "properties": {"label": _ref("Label")}}, "stored"),
                    "200": _json({"type": "object", "required": ["label"],
                                  "properties": {"label": _ref("Label")}},
                                 "already stored (a double post)"),
                    **COMMON, "404": _error("no such task"),
                    "409": _json({"type": "object", "required": ["error"], "properties": {
                        "error": {"type": "string"}, "label": _ref("Label")}},
                        "a task you never claimed, or another class than your earlier label"),
                    "413": _error("a JSON body over 1 MB")}},
            "get": {
                "operationId": "listLabels",
                "summary": "Reviewers' labels, oldest first, paged by `after`.",
                "parameters": [
                    {"name": "after", "in": "query", "schema": INT,
                     "description": "the last label_id seen"},
                    {"name": "batch", "in": "query", "schema": INT},
                    {"name": "user", "in": "query", "schema": TEXT},
                    {"name": "limit", "in": "query", "schema": INT,
                     "description": "labels per page, kept within 1..1000 (default 100)"}],
                "responses": {
                    "200": _json({"type": "object", "required": ["labels", "next_after"],
                                  "properties": {"labels": {"type": "array", "items": _ref("Label")},
                                                 "next_after": {"type": ["integer", "null"]}}},
                                 "a page of labels"),
                    **COMMON, "404": _error("no such user")}}},
        "/api/v1/agreement": {"get": {
            "operationId": "agreement",
            "summary": "Agreement between reviewers: Cohen's kappa per pair, Fleiss' kappa "
                       "overall, confusion between reviewers per class, and per reviewer pace "
                       "and agreement with the final label. With fewer than two reviewers on "
                       "shared tasks `enough_reviewers` is false and `message` says so.",
            "responses": {"200": _json(_ref("Agreement"), "the agreement figures"), **COMMON}}},
        "/api/v1/images/{image_id}": {"get": {
            "operationId": "image", "summary": "An image's bytes by id.",
            "parameters": [{"name": "image_id", "in": "path", "required": True, "schema": INT}],
            "responses": {"200": image, "304": {"description": "not modified (ETag)"},
                          **COMMON, "404": _error("no such image, or no stored bytes")}}},
    }


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "verge", "version": "1",
                 "description": "The review queue for programs: claim, label, skip, list labels, "
                                "submit batches. Every request carries a user's API token "
                                "(`verge users token NAME`). Errors are `{\"error\": \"...\"}` "
                                f"with one sentence; JSON bodies are at most 1 MB and "
                                f"{MAX_JSON_DEPTH} levels deep."},
        "components": {"securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "vrg_..."}},
            "schemas": SCHEMAS},
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
