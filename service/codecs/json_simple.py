"""The common JSON body read in C: `{"inputs": [[numbers], ...], "scalar": value, ...}`.

Most requests are a few items of numbers and a few scalar parameters. simdjson (pysimdjson)
validates such a body and hands the numbers over as one buffer of doubles, so no Python float
is made per number: the general reader takes 79.7 us to read one 784-number item into float32
(orjson, `np.array` of its lists, the checks), this one 32.1 us; a 64-number item 17.8 and
13.6 us (timeit; bench/PROFILE.md has the request's stages).

It only ever accepts: a body that is anything else (nested arrays or objects, duplicate keys,
a value numpy would not take as it is, a nesting limit below the form's three levels, any
parse error) returns None, and the general reader (service.codecs.json_read) decides, with its
own errors. So every refusal a client sees still comes from one place; an accepted body gives
the array the general reader gives, bit for bit (tests/service/codecs/test_json_simple.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from bundle.arrays import FloatArray
from service.codecs.array_checks import FLOAT32_MAX, finish_array

BOM = b"\xef\xbb\xbf"  # simdjson skips it; orjson, and so the general reader, refuses it


def read_simple_batch(
    body: bytes, field: str, max_depth: int, max_items: int | None
) -> tuple[FloatArray, dict[str, Any]] | None:
    """(the batch under `field` as float32 (B, F), the other keys' scalar values), or None
    when the body is not of the simple form (the general reader then takes it)."""
    # The simple form nests three deep: the object, the batch (one `[`) and its items (one `[`
    # each, counted below: simdjson's buffer would flatten `[1, [2]]` into two numbers). Objects
    # anywhere but the top are refused once parsed.
    brackets = body.count(b"[")
    if max_depth < 3 or brackets < 2 or body.startswith(BOM):
        return None
    try:
        # A parser per body (0.45 us): one reused must not be while a document it made lives,
        # and an error's traceback can keep one alive.
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        keys = list(document.keys())
        if field not in keys or (len(keys) > 1 and len(set(keys)) != len(keys)):
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
        # Numbers only: an object or anything but a number in an item refuses to make a
        # buffer (ValueError).
        values = np.frombuffer(batch.as_buffer(of_type="d"), dtype=np.float64)
        if values.size != items * width:
            return None
        others = {key: document[key] for key in keys if key != field} if len(keys) > 1 else {}
    except (ValueError, TypeError, RuntimeError, IndexError):
        return None  # not JSON, a value that is not a number, a number simdjson cannot hold
    if others and any(isinstance(v, simdjson.Array | simdjson.Object) for v in others.values()):
        return None
    batch_values = values.reshape(items, width)
    # JSON has no NaN or Infinity and simdjson refuses numbers beyond float64, so the one thing
    # to check is float32's range: one reduction (2.6 us on 64 numbers; max and min, 5.4)
    # instead of finish_array's general checks (7.5 us), which still word the refusal when it
    # is out of range.
    if np.abs(values).max() > FLOAT32_MAX:
        return finish_array(batch_values, field, 2), others  # raises, naming the value
    # astype copies out of the parser's buffer: the array outlives the document.
    return batch_values.astype(np.float32), others
