"""The common JSON body read in C: `{"inputs": [[numbers], ...], "scalar": value, ...}`.

Most requests are a few items of numbers and a few scalar parameters. simdjson (pysimdjson)
validates such a body and hands the numbers over as one buffer of doubles, so no Python float
is made per number: one 784-number item took 57 us through orjson and `np.array` of its lists,
15.5 us this way (timeit; bench/PROFILE.md has the request's stages).

It only ever accepts: a body that is anything else (nested arrays or objects, duplicate keys,
a value numpy would not take as it is, a batch deep enough to reach the nesting limit, any
parse error) returns None, and the general reader (service.codecs.json_read) decides, with its
own errors. So every refusal a client sees still comes from one place; an accepted body gives
the array the general reader gives, bit for bit (tests/service/codecs/test_json_simple.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from bundle.arrays import FloatArray
from service.codecs.array_checks import finish_array

BOM = b"\xef\xbb\xbf"  # simdjson skips it; orjson, and so the general reader, refuses it


def read_simple_batch(
    body: bytes, field: str, max_depth: int, max_items: int | None
) -> tuple[FloatArray, dict[str, Any]] | None:
    """(the batch under `field` as float32 (B, F), the other keys' scalar values), or None
    when the body is not of the simple form (the general reader then takes it)."""
    brackets = body.count(b"[")
    # Two levels of arrays and one object at most: `[` once for the batch, once per item.
    if body.count(b"{") != 1 or brackets < 2 or brackets + 1 > max_depth or body.startswith(BOM):
        return None
    try:
        # A parser per body (0.45 us): one reused must not be while a document it made lives,
        # and an error's traceback can keep one alive.
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        keys = list(document.keys())
        if len(set(keys)) != len(keys) or field not in keys:
            return None
        batch = document[field]
        if not isinstance(batch, simdjson.Array):
            return None
        items = len(batch)
        if items + 1 != brackets or (max_items is not None and items > max_items):
            return None  # an array elsewhere, or too many items: the general reader says so
        width = len(batch[0])
        if width == 0 or any(len(batch[i]) != width for i in range(1, items)):
            return None  # ragged, or an empty item
        values = np.frombuffer(batch.as_buffer(of_type="d"), dtype=np.float64)
        if values.size != items * width:
            return None
        others = {key: document[key] for key in keys if key != field}
    except (ValueError, TypeError, RuntimeError, IndexError):
        return None  # not JSON, a value that is not a number, a number simdjson cannot hold
    if any(isinstance(value, simdjson.Array | simdjson.Object) for value in others.values()):
        return None
    # Copied out of the parser's buffer by the float32 conversion, checked as every array is.
    return finish_array(values.reshape(items, width), field, 2), others
