"""The body of POST /models/{name}/feedback: labels for items scored earlier.

    {"labels": [{"request_id": "<X-Request-ID of the scoring answer>", "anomaly": true},
                {"request_id": "...", "item": 3, "anomaly": false}]}

`item` (default 0) is the item's index in that request. Bounded before any work: the body's
bytes (FEEDBACK_BODY_BYTES, checked by the body reader), then the count of labels, each id's
length and alphabet (what a request id may be), each index's range; a bad field is a 422
naming it.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import InvalidInput, MalformedBody, excerpt

FEEDBACK_BODY_BYTES = 1 << 20  # ~10,000 labels of 32-character ids fit in 0.7 MB
MAX_LABELS = 10_000
MAX_REQUEST_ID_LENGTH = 128  # as an accepted X-Request-ID (printable ASCII, no space)


def _bad(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, {"field": field})


def read_feedback(body: bytes, max_item: int) -> list[tuple[str, int, bool]]:
    """(request id, item, anomaly) for each label, or a 400/422 saying what is wrong."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedBody(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict) or set(document) != {"labels"}:
        raise _bad('body must be an object with one field, "labels"', "labels")
    entries = document["labels"]
    if not isinstance(entries, list) or not entries:
        raise _bad("labels must be a non-empty list", "labels")
    if len(entries) > MAX_LABELS:
        raise _bad(f"labels: at most {MAX_LABELS} a request, got {len(entries)}", "labels")
    labels: list[tuple[str, int, bool]] = []
    for index, entry in enumerate(entries):
        where = f"labels[{index}]"
        if not isinstance(entry, dict) or not {"request_id", "anomaly"} <= set(entry):
            raise _bad(f'{where}: an object with "request_id" and "anomaly"', where)
        unknown = set(entry) - {"request_id", "item", "anomaly"}
        if unknown:
            raise _bad(f"{where}: unknown field {excerpt(sorted(unknown)[0])}", where)
        request_id = entry["request_id"]
        if (
            not isinstance(request_id, str)
            or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH
            or not all("!" <= c <= "~" for c in request_id)
        ):
            raise _bad(
                f"{where}.request_id: the X-Request-ID of a scoring answer (1 to "
                f"{MAX_REQUEST_ID_LENGTH} printable ASCII characters)",
                f"{where}.request_id",
            )
        item = entry.get("item", 0)
        if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item <= max_item:
            raise _bad(
                f"{where}.item: an integer from 0 to {max_item} (the item's index in its request)",
                f"{where}.item",
            )
        anomaly = entry["anomaly"]
        if not isinstance(anomaly, bool):
            raise _bad(f"{where}.anomaly: true or false", f"{where}.anomaly")
        labels.append((request_id, item, anomaly))
    return labels
