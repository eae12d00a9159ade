"""Dataframe-style row operations, the seed example of a Tessera python deployment.

Rows are JSON objects; no pandas needed, so the example runs in an empty environment.
"""

import json
import os
import time

from tessera import HTTPError, route


def _rows(body):
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise HTTPError(400, "body must be an object with a 'rows' list", "VALIDATION_FAILED")
    rows = body["rows"]
    if not all(isinstance(r, dict) for r in rows):
        raise HTTPError(400, "every row must be an object", "VALIDATION_FAILED")
    return rows


def _sort_key(value):
    # Total order over JSON values: numbers, then strings, then everything else, missing/null last.
    if value is None:
        return (3, "")
    if isinstance(value, bool):
        return (2, json.dumps(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


class Dataframe:
    def __init__(self, config: dict):
        self.config = config
        self.healthy = True

    @route.post("/deduplicate")
    def deduplicate(self, body):
        """Rows without duplicates on `columns` (default: all columns); the first occurrence wins."""
        rows = _rows(body)
        columns = body.get("columns")
        if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
            raise HTTPError(400, "'columns' must be a list of column names", "VALIDATION_FAILED")
        seen = set()
        kept = []
        for row in rows:
            subset = {c: row.get(c) for c in columns} if columns else row
            key = json.dumps(subset, sort_keys=True)
            if key not in seen:
                seen.add(key)
                kept.append(row)
        return {"rows": kept, "removed": len(rows) - len(kept)}

    @route.post("/sort")
    def sort(self, body):
        rows = _rows(body)
        by = body.get("by")
        columns = [by] if isinstance(by, str) else by
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            raise HTTPError(400, "'by' must be a column name or a non-empty list of them", "VALIDATION_FAILED")
        descending = bool(body.get("descending", False))
        ordered = sorted(rows, key=lambda r: [_sort_key(r.get(c)) for c in columns], reverse=descending)
        return {"rows": ordered}

    @route.get("/info")
    def info(self):
        return {
            "runtime": "python",
            "deployment": os.environ.get("TESSERA_DEPLOYMENT"),
            "revision": os.environ.get("TESSERA_REVISION"),
            "replica": os.environ.get("TESSERA_REPLICA"),
            "application": os.environ.get("TESSERA_APPLICATION"),
            "config": self.config,
        }

    @route.post("/rows/stream", stream="sse")
    def stream_rows(self, body, delay_ms: int = 0):
        """Each row as one server-sent event (optionally `?delay_ms=` apart), then a summary event."""
        rows = _rows(body)
        for i, row in enumerate(rows):
            if i and delay_ms > 0:
                time.sleep(delay_ms / 1000)
            yield row
        yield {"event": "done", "data": {"count": len(rows)}}

    @route.post("/admin/health")
    def set_health(self, body):
        """Test hook: `{"healthy": false}` makes health() fail so the platform replaces this replica."""
        if not isinstance(body, dict) or not isinstance(body.get("healthy"), bool):
            raise HTTPError(400, "body must be {\"healthy\": true|false}", "VALIDATION_FAILED")
        self.healthy = body["healthy"]
        return {"healthy": self.healthy}

    def health(self):
        return self.healthy
