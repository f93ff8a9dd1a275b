"""JSON request bodies read at a cost bounded before the work.

Parsed whole, a JSON body of numbers costs ~15x its size in Python objects (orjson's document,
then a float object per number), one of empty lists ~22x, and numpy, asked to infer a dtype from
a list that mixes one long string with numbers, makes a unicode array as wide as the string for
every element (+244 MiB from a 36 kB body, issue 18). So a body is split before anything is
built:

0. A body up to `SMALL_BODY_BYTES` is parsed whole by orjson, at a cost bounded by its size,
   when a count of its quote bytes proves that no string sits in any list (`_parse_small`);
   numpy may then infer its arrays' dtype as it always did. Every other body takes steps 1-4.
1. Every string literal is found with one C regex match (`_STRING`), at most `MAX_STRINGS` of
   them, so no byte inside a string is ever taken for structure.
2. Every value of an object key that is an array of numbers only, that is of bytes from
   `[0-9.eE+-,[]` and JSON whitespace, is cut out of the body (`_NUMBER_RUN`): a
   `NumberArray`, still text. Such an array cannot hold a string, a boolean, null or an
   object, so numpy only ever sees numbers.
3. What is left, the envelope (keys, strings, scalars, and any array that holds more than
   numbers), is at most `ENVELOPE_MAX_BYTES` and parsed by orjson, with a placeholder string
   where each number array was.
4. A number array is parsed when a route reads it (`array_field`): by orjson when it is at most
   `CHUNK_BYTES`, else in chunks of about that size along its first axis, each chunk checked
   against the numbers its items may hold before orjson sees it, and written into one float32
   array. The transient cost of any body is then a fixed multiple of one chunk, whatever the
   body's size (held to it in tests/property/test_json_body_properties.py).

The cuts never change what a valid document means: strict JSON syntax is orjson's, on the
envelope and on every array that is read; an array no route reads is never parsed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from bundle.arrays import FloatArray
from service.codecs.array_checks import check_shape, finish_array, json_type, to_float32
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge, excerpt

# Keys, strings and scalars of any request of ours fit in a few hundred bytes; the limit only
# keeps a body that is not numbers from being parsed whole.
ENVELOPE_MAX_BYTES = 64 * 1024
# Any request of ours carries fewer than 50 strings (keys included); each costs a regex call on
# the event loop, so a body may hold at most this many.
MAX_STRINGS = 1024
# Bodies up to this size are parsed whole when their lists hold no string (`_parse_small`):
# what they can cost is bounded by their size, and they take the shortest path. Measured
# (bench/HOSTILE.md, "Reading a body"): cutting a single item's body costs it ~50% more.
SMALL_BODY_BYTES = 64 * 1024
# Small bodies whose lists may hold strings are still parsed whole up to this size; their lists
# are checked element by element when read (a few thousand elements at most).
TINY_BODY_BYTES = 4096
# Number arrays above this are parsed chunk by chunk: orjson's transient cost is ~15-25x the
# text it parses, so one chunk costs at most ~25 MiB whatever the body's size. Smaller arrays
# are parsed whole: chunks of 256 kB made a 666 kB batch (64 items of 784) 36% slower to
# serve in-process (7.3 to 10.0 ms), for memory that admission control bounds anyway.
CHUNK_BYTES = 1024 * 1024

_SPACE = re.compile(rb"[ \t\n\r]*+")
# A string literal: a quote, then runs of ordinary bytes or escape pairs, then a quote.
# Possessive, so the match is linear and keeps no backtracking state.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
# After a key: the colon and the opening bracket of an array value.
_ARRAY_VALUE = re.compile(rb"[ \t\n\r]*+:[ \t\n\r]*+\[")
# The bytes a JSON array of numbers is made of.
_NUMBER_RUN = re.compile(rb"[0-9eE.+\-,\[\] \t\n\r]*+")
# The same without the brackets: what `bytes.translate` deletes to leave an array's skeleton.
_NUMBER_BYTES = b"0123456789eE.+-, \t\n\r"
# Non-finite numbers as clients write them: Python's json (NaN, Infinity, -Infinity), Jackson
# and JSON5 (+Infinity), and `str(float)` in Python, numpy or C (nan, inf, -inf). Each means
# "not a finite number" (422), not "not JSON at all" (400).
_NONFINITE_TOKEN = re.compile(r"[+-]?(?:nan|inf(?:inity)?)\b", re.IGNORECASE)
# A placeholder no client can write: a NUL and this process's random token.
_PLACEHOLDER = "\x00" + secrets.token_hex(8) + ":"
_PLACEHOLDER_JSON = _PLACEHOLDER.replace("\x00", "\\u0000").encode("ascii")

_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
_COMMA = ord(",")


class NumberArray:
    """A JSON array of numbers in a request body, not yet parsed: `body[start:end]`.

    `depth` is how deep in the document it sits (1 for a value of the top-level object), so
    the nesting limit counts the array's own levels on top of it."""

    __slots__ = ("body", "depth", "end", "start")

    def __init__(self, body: bytes, start: int, end: int, depth: int) -> None:
        self.body = body
        self.start = start
        self.end = end
        self.depth = depth

    def __len__(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        return f"NumberArray({len(self)} bytes at {self.start})"

    def text(self) -> bytes:
        return self.body[self.start : self.end]

    def count_values(self) -> int:
        """How many numbers the array holds (a C-speed count: every array of n numbers and no
        empty list has n - 1 commas, whatever its nesting)."""
        return self.body.count(b",", self.start, self.end) + 1

    def to_list(self) -> list[Any]:
        """The array as nested lists, for small arrays (a v2 `shape`): parsed whole."""
        return _load_array(self.text(), self.start)

    def check_depth(self, max_depth: int) -> None:
        """Refuse the document if this array takes it deeper than `max_depth`: a list cannot
        nest deeper than it has brackets, so most arrays are passed by a count."""
        budget = max_depth - self.depth
        if self.body.count(b"[", self.start, self.end) <= budget:
            return
        depth = _bracket_depth(self.body, self.start, self.end)
        if depth > budget:
            raise _too_deep(depth + self.depth, max_depth)

    def to_array(
        self,
        field: str,
        *,
        min_ndim: int,
        max_items: int | None = None,
        max_item_values: int | None = None,
    ) -> FloatArray:
        """The float32 array, or the 4xx that says what is wrong with it.

        `max_items` bounds the first axis (413 above), `max_item_values` the numbers one item
        may hold (422 above). An array of at most CHUNK_BYTES is parsed whole (a few MiB at
        most) and then checked; a larger one is checked on its text, chunk by chunk, before
        each chunk is parsed."""
        if len(self) <= CHUNK_BYTES:
            value = _load_array(self.text(), self.start)
            if max_items is not None and len(value) > max_items:
                raise _too_many_items(field, len(value), max_items)
            return _list_to_float32(value, field, min_ndim)
        return self._chunked(field, min_ndim, max_items, max_item_values)

    def _chunked(
        self, field: str, min_ndim: int, max_items: int | None, max_item_values: int | None
    ) -> FloatArray:
        outline = _outline(self.body, self.start, self.end, field)
        if max_items is not None and outline.items > max_items:
            raise _too_many_items(field, outline.items, max_items)
        result: FloatArray | None = None
        first_item = 0
        for begin, stop, items in outline.chunks():
            text = b"".join((b"[", self.body[begin:stop], b"]"))
            if max_item_values is not None:
                _check_values(text.count(b",") + 1, items * max_item_values, field, first_item)
            value = _load_array(text, begin - 1)
            try:
                chunk = np.array(value)
            except (ValueError, TypeError, OverflowError):
                raise _explain(value, field, first_item) from None
            del value  # this chunk's Python objects go before the next chunk's come
            if result is None:
                if not len(chunk):  # `[ ]` with room to spare
                    check_shape(tuple(chunk.shape), field, min_ndim)
                check_shape((outline.items, *chunk.shape[1:]), field, min_ndim)
                result = np.empty((outline.items, *chunk.shape[1:]), dtype=np.float32)
            # The outline counted items by brackets or commas; a chunk that disagrees holds an
            # item unlike the others.
            if chunk.shape[1:] != result.shape[1:] or first_item + len(chunk) > len(result):
                raise ragged_error(field, (first_item,))
            result[first_item : first_item + len(chunk)] = to_float32(chunk, field, first_item)
            first_item += len(chunk)
        if result is None or first_item != len(result):
            raise ragged_error(field, (first_item,))
        return result


class JsonObject(dict[str, Any]):
    """A request body's top-level object; number arrays appear in it as `NumberArray`."""


class WholeJsonObject(JsonObject):
    """A small body's object, parsed whole: its lists hold no string (`_parse_small`), so numpy
    may infer their dtype; `may_contain_booleans`: whether `true` or `false` occur in it (a
    class, not an attribute, so that making one costs no Python call)."""

    may_contain_booleans = True


class WholeJsonObjectWithoutBooleans(WholeJsonObject):
    may_contain_booleans = False


def parse_json_object(body: bytes, *, max_depth: int = 32) -> JsonObject:
    """Decode a request body that must be a JSON object nested at most `max_depth` levels;
    number arrays stay text until read (module docstring)."""
    if not body or body.isspace():
        raise InvalidInput(
            'request body is empty; expected a JSON object such as {"inputs": [[...]]}'
        )
    if len(body) <= SMALL_BODY_BYTES:
        small = _parse_small(body, max_depth)
        if small is not None:
            return small
    start = _SPACE.match(body)
    first = body[start.end() : start.end() + 1] if start is not None else b""
    if first != b"{":
        raise _not_an_object(body, first, max_depth)
    cuts, impurity = _find_number_arrays(body)
    envelope, placeholders = _envelope(body, cuts)
    if len(envelope) > ENVELOPE_MAX_BYTES:
        raise _envelope_too_large(body, len(envelope), impurity)
    try:
        value = orjson.loads(envelope)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc, max_depth, body, cuts, placeholders) from exc
    if not isinstance(value, dict):  # `{"a": 1} 2`-like documents fail in orjson first
        raise _not_an_object(body, first, max_depth)
    depth = _json_depth(envelope) if envelope.count(b"[") + envelope.count(b"{") > max_depth else 0
    if depth > max_depth:
        raise _too_deep(depth, max_depth)
    arrays = {
        name: NumberArray(body, start, end, 0)
        for name, (start, end) in zip(placeholders, cuts, strict=True)
    }
    if not arrays:
        return JsonObject(value)
    document = _put_back(value, arrays)
    for array in arrays.values():  # the nesting limit holds for the whole document, now
        array.check_depth(max_depth)
    return JsonObject(document)


def _parse_small(body: bytes, max_depth: int) -> JsonObject | None:
    """A small body parsed whole by orjson (at most ~25x SMALL_BODY_BYTES in objects), when its
    lists provably hold no string; None sends it the long way (`parse_json_object`).

    The proof is a count: every quote byte of the body belongs to a key or a top-level string
    value (2 each, plus one per quote inside, less one per quote written as \\u0022, which is
    no quote byte), or else to a string nested deeper (in a list, or an object in a value). With
    no string nested, numpy cannot make a unicode array of any list, the only way a small body
    could cost more than its size (+244 MiB from 36 kB, issue 18). A body that fails the count
    is parsed whole if tiny (its lists are then checked element by element when read), else
    cut (`parse_json_object`)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc, max_depth, body, [], []) from exc
    if not isinstance(value, dict):
        raise InvalidInput(
            f'request body must be a JSON object such as {{"inputs": [[...]]}}; '
            f"got {json_type(value)}"
        )
    if body.count(b"[") + body.count(b"{") > max_depth:  # else it cannot nest that deep
        depth = _json_depth(body)
        if depth > max_depth:
            raise _too_deep(depth, max_depth)
    quotes = 0
    for key, item in value.items():
        quotes += 2 + key.count('"')
        if isinstance(item, str):
            quotes += 2 + item.count('"')
    if b"\\" in body:
        quotes -= body.count(b"\\u0022")
    if quotes != body.count(b'"'):
        # Strings in lists (a v2 request's list of tensors, say). A tiny body's lists are
        # walked element by element when read (`array_field`), which costs less than cutting
        # it (a 180-byte v2 header: 29 us cut, against 1 us parsed); a larger one is cut.
        return JsonObject(value) if len(body) <= TINY_BODY_BYTES else None
    if b"true" in body or b"false" in body:
        return WholeJsonObject(value)
    return WholeJsonObjectWithoutBooleans(value)


def array_field(
    payload: dict[str, Any],
    field: str,
    *,
    required: bool = True,
    min_ndim: int = 2,
    max_items: int | None = None,
    max_item_values: int | None = None,
) -> FloatArray | None:
    """The nested list of numbers under `field` as a C-contiguous float32 array.

    A missing field, or an explicit null, is "absent": an error if `required`, else None.
    `max_items` and `max_item_values` bound the batch and each item before anything is parsed
    (`NumberArray.to_array`). A plain list (one the body parser left in the envelope because it
    holds more than numbers, or one a caller built) is checked element by element first."""
    value = payload.get(field)
    if value is None:
        if required:
            raise InvalidInput(
                f"field '{field}' is required: a nested list of numbers with a leading batch axis",
                {"field": field},
            )
        return None
    if isinstance(value, NumberArray):
        return value.to_array(
            field,
            min_ndim=min_ndim,
            max_items=max_items,
            max_item_values=max_item_values,
        )
    if not isinstance(value, list):
        raise InvalidInput(
            f"field '{field}' must be a nested list of numbers with a leading batch axis; "
            f"got {json_type(value)}",
            {"field": field},
        )
    if isinstance(payload, WholeJsonObject):
        return _trusted_list_to_float32(payload, value, field, min_ndim, max_items)
    problem = find_problem(value, field)
    if problem is not None:
        raise problem
    # Only ints and floats, in a regular shape: numpy can infer nothing but a number dtype.
    return _list_to_float32(value, field, min_ndim)


def _trusted_list_to_float32(
    payload: WholeJsonObject, value: list[Any], field: str, min_ndim: int, max_items: int | None
) -> FloatArray:
    """A list from a small body that holds no string (`_parse_small`): numpy infers its dtype
    in C, and the Python walk runs only to explain what is wrong. Booleans: numpy turns
    `[1.5, true]` into floats, so a number dtype alone does not prove the data numeric; a bool
    can only have become exactly 0 or 1, so the walk runs when the body holds `true` or
    `false` at all (a C substring search, cheaper than the array's own check on narrow
    inputs) and the array holds an exact 0 or 1."""
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged, or deeper than numpy allows
        raise _explain(value, field, 0) from None
    if array.dtype.kind not in "iuf":  # booleans only, null, objects: say which and where
        raise _explain(value, field, 0)
    if (
        payload.may_contain_booleans
        and array.size
        and bool(((array == 0) | (array == 1)).any())
        and find_problem(value, field) is not None
    ):
        raise _explain(value, field, 0)
    if max_items is not None and array.ndim and len(array) > max_items:
        raise _too_many_items(field, len(array), max_items)
    return finish_array(array, field, min_ndim)


# --------------------------------------------------------------------------- the split


class _Impurity:
    """Where the first array value that is not all numbers stops being numbers."""

    __slots__ = ("key", "position")

    def __init__(self, key: bytes, position: int) -> None:
        self.key = key
        self.position = position


def _find_number_arrays(body: bytes) -> tuple[list[tuple[int, int]], _Impurity | None]:
    """(start, end) of every array value of an object key that holds numbers only, and the
    first array value that holds something else. One regex match per string and per array
    value, each linear in what it covers; nothing is built per number."""
    cuts: list[tuple[int, int]] = []
    impurity: _Impurity | None = None
    position, strings, size = 0, 0, len(body)
    while True:
        quote = body.find(b'"', position)
        if quote < 0:
            break
        strings += 1
        if strings > MAX_STRINGS:
            raise PayloadTooLarge(
                f"the JSON body holds more than {MAX_STRINGS} strings; requests carry numbers "
                "in arrays and a few named parameters",
                {"limit": MAX_STRINGS},
            )
        # A string longer than the envelope may be is refused by the envelope's size later.
        string = _STRING.match(body, quote, quote + ENVELOPE_MAX_BYTES + 2)
        if string is None:
            break  # unterminated (orjson says so) or too long (the envelope's size says so)
        position = string.end()
        value = _ARRAY_VALUE.match(body, position)
        if value is None:
            continue
        start = value.end() - 1
        found = _number_array_at(body, start)
        if found is not None:
            cuts.append((start, found))
            position = found
            continue
        # Not all numbers, or not closed where expected: where do the numbers stop?
        run_match = _NUMBER_RUN.match(body, start)
        assert run_match is not None  # `*+` matches the empty string at least
        run = run_match.end()
        end = body.rfind(b"]", start, run) + 1
        if end > start and body.count(b"[", start, end) == body.count(b"]", start, end):
            cuts.append((start, end))  # numbers, then something invalid: orjson will say
            position = end
        elif impurity is None and run < size:
            impurity = _Impurity(body[quote + 1 : string.end() - 1], run)
    return cuts, impurity


def _number_array_at(body: bytes, start: int) -> int | None:
    """The end of the array of numbers that opens at `start`, or None when it holds more than
    numbers. The common case, in a few C passes: an array of numbers holds no quote and no
    brace, so it ends at the last `]` before the next of either; it is one when what lies
    between holds nothing but number bytes and balanced brackets (measured: 0.7 ns a byte,
    against 3 for a regex over it and two bracket counts, bench/HOSTILE.md)."""
    limit = body.find(b'"', start)
    if limit < 0:
        limit = len(body)
    brace = body.find(b"}", start, limit)
    if brace >= 0:
        limit = brace
    end = body.rfind(b"]", start, limit) + 1
    if end <= start:
        return None
    skeleton = body[start:end].translate(None, _NUMBER_BYTES)
    opens = skeleton.count(b"[")
    if 2 * opens != len(skeleton) or skeleton.count(b"]") != opens:
        return None
    return end


def _envelope(body: bytes, cuts: list[tuple[int, int]]) -> tuple[bytes, list[str]]:
    """The body with each cut replaced by a placeholder string, and those placeholders."""
    if not cuts:
        return body, []
    pieces: list[bytes] = []
    names: list[str] = []
    previous = 0
    for index, (start, end) in enumerate(cuts):
        token = str(index)
        pieces += (body[previous:start], b'"', _PLACEHOLDER_JSON, token.encode(), b'"')
        names.append(_PLACEHOLDER + token)
        previous = end
    pieces.append(body[previous:])
    return b"".join(pieces), names


def _put_back(value: Any, arrays: dict[str, NumberArray]) -> Any:
    """The envelope's value with every placeholder string replaced by its `NumberArray`, each
    told its depth. Iterative: the envelope was depth-checked, but a walk needs no stack."""
    pending: list[tuple[dict[str, Any] | list[Any], int]] = []
    if isinstance(value, dict | list):
        pending.append((value, 1))
    while pending:
        container, depth = pending.pop()
        items: Iterator[tuple[Any, Any]] = (
            iter(container.items()) if isinstance(container, dict) else enumerate(container)
        )
        for key, item in items:
            if isinstance(item, str):
                array = arrays.get(item)
                if array is not None:
                    array.depth = depth
                    container[key] = array
            elif isinstance(item, dict | list):
                pending.append((item, depth + 1))
    return value


# --------------------------------------------------------------------------- arrays


def _load_array(text: bytes, offset: int) -> list[Any]:
    """orjson on a number array's text; errors name the byte of the body they happened at."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        position = offset + exc.pos  # the text is ASCII: a character is a byte
        if "infinity" in exc.msg:  # "number is infinity when parsed as double", e.g. 1e400
            raise InvalidInput(
                f"number out of range at character {position}: non-finite numbers are not allowed",
                {"position": position},
            ) from None
        if "depth limit" in exc.msg:
            raise InvalidInput("JSON nesting is too deep", {"position": position}) from None
        raise MalformedBody(
            f"request body is not valid JSON: {exc.msg} at character {position}",
            {"position": position},
        ) from None
    if not isinstance(value, list):  # the text starts with "[", so this is a bug
        raise MalformedBody("request body is not valid JSON", {"position": offset})
    return value


def _list_to_float32(value: list[Any], field: str, min_ndim: int) -> FloatArray:
    """A list known to hold only ints and floats (no bool, no None) as float32."""
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged, or deeper than numpy allows
        raise _explain(value, field, 0) from None
    # Ints beyond int64 come only from a caller's list (orjson reads them as floats).
    if array.dtype.kind not in "iuf":
        try:
            array = np.array(value, dtype=np.float64)
        except OverflowError:
            raise InvalidInput(
                f"field '{field}' contains an integer too large for float32", {"field": field}
            ) from None
    return finish_array(array, field, min_ndim)


def _too_many_items(field: str, items: int, max_items: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"field '{field}': batch of {items} items is above the limit of {max_items} "
        "(VAE_MAX_BATCH_SIZE); split the request",
        {"field": field, "limit": max_items, "got": items},
    )


def _check_values(values: int, allowed: int, field: str, first_item: int = 0) -> None:
    if values > allowed:
        raise InvalidInput(
            f"field '{field}' holds more numbers than its items may have ({values} where at "
            f"most {allowed} fit, from item {first_item}); check the model's input shape",
            {"field": field, "values": values, "allowed": allowed, "first_item": first_item},
        )


class _Outline:
    """The structure of a large number array: how many items, and where chunks may be cut."""

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.items = 0
        self.cuts: list[tuple[int, int]] = []  # (byte of a top-level comma, items before it)

    def chunks(self) -> Iterator[tuple[int, int, int]]:
        """(first byte, end byte, items) of each chunk, between the array's brackets."""
        begin, items_before = self.start + 1, 0
        for comma, items in self.cuts:
            yield begin, comma, items - items_before
            begin, items_before = comma + 1, items
        yield begin, self.end - 1, self.items - items_before


def _outline(body: bytes, start: int, end: int, field: str) -> _Outline:
    """Count a number array's items and choose a cut about every CHUNK_BYTES, looking at its
    brackets only (a few per item: a pass to find them, then work on so few), window by
    window so the temporaries stay a few bytes per byte of one window. Checks that the
    brackets close exactly at `end` (the document's nesting was checked when it was parsed).

    Items are lists when the array's first element is one (counted as the brackets that
    close back to the top level), else numbers (counted by commas; no other bracket may
    appear). A ragged mix is caught when the chunks are parsed."""
    outline = _Outline(start, end)
    space = _SPACE.match(body, start + 1)
    first = body[space.end() : space.end() + 1] if space is not None else b""
    if first != b"[":
        return _outline_of_numbers(body, outline, field)
    level, items, last_cut = 0, 0, start
    for window in range(start, end, CHUNK_BYTES):
        size = min(CHUNK_BYTES, end - window)
        steps = _DEPTH_STEP[np.frombuffer(body, dtype=np.uint8, count=size, offset=window)]
        where = np.flatnonzero(steps)
        if not where.size:
            continue
        moves = steps[where]
        levels = np.cumsum(moves, dtype=np.int32)
        levels += level
        last = window + size == end
        inside = levels[:-1] if last else levels
        if inside.size and int(inside.min()) < 1:
            closed = window + int(where[int(np.argmax(inside < 1))])
            raise MalformedBody(
                f"request body is not valid JSON: the array at character {start} closes at "
                f"character {closed}, before its end",
                {"position": closed},
            )
        item_ends = where[(moves == -1) & (levels == 1)]
        items += int(item_ends.size)
        if item_ends.size and window + int(item_ends[-1]) - last_cut >= CHUNK_BYTES // 2:
            comma = body.find(b",", window + int(item_ends[-1]), end)
            if comma > 0:
                last_cut = comma
                outline.cuts.append((comma, items))
        level = int(levels[-1])
    if level != 0:
        raise MalformedBody(
            f"request body is not valid JSON: the array at character {start} is not closed",
            {"position": start},
        )
    outline.items = items
    return outline


def _outline_of_numbers(body: bytes, outline: _Outline, field: str) -> _Outline:
    """`_outline` for an array of numbers (one axis): cut at the first comma after every
    CHUNK_BYTES. A bracket inside means lists among the numbers: ragged."""
    start, end = outline.start, outline.end
    inner = max(body.find(b"[", start + 1, end), body.find(b"]", start + 1, end - 1))
    if inner >= 0:
        first = min(i for i in (body.find(b"[", start + 1, end), inner) if i >= 0)
        raise ragged_error(field, (body.count(b",", start, first),))
    position, items = start, 1
    while True:
        comma = body.find(b",", position + CHUNK_BYTES, end)
        if comma < 0:
            break
        items += body.count(b",", position, comma)
        outline.cuts.append((comma, items))
        position = comma
    outline.items = items + body.count(b",", position, end)
    return outline


def _bracket_depth(body: bytes, start: int, end: int) -> int:
    """Deepest bracket nesting of a number array (no strings in it to skip), window by window
    so a bracket bomb costs a few bytes per byte of one window."""
    deepest, level = 0, 0
    for window in range(start, end, CHUNK_BYTES):
        skeleton = body[window : min(end, window + CHUNK_BYTES)].translate(None, _NOT_BRACKETS)
        if not skeleton:
            continue
        levels = np.cumsum(_DEPTH_STEP[np.frombuffer(skeleton, dtype=np.uint8)], dtype=np.int32)
        levels += level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]")


# --------------------------------------------------------------------------- explaining


def _explain(value: list[Any], field: str, first_item: int) -> InvalidInput:
    """The error for a list numpy could not turn into a numeric array."""
    problem = find_problem(value, field, first_item)
    if problem is not None:
        return problem
    return InvalidInput(
        f"field '{field}' could not be read as a nested list of numbers", {"field": field}
    )


def find_problem(value: list[Any], field: str, first_item: int = 0) -> InvalidInput | None:
    """First structural or type problem in depth-first order, or None if the list is clean.

    One Python step per element, so it runs only on lists that are small (the envelope's) or
    known to be wrong. The stack holds one iterator per level, never the elements themselves;
    arbitrarily deep input cannot hit the recursion limit."""
    shape: list[int] = []  # the shape implied by the first item at every level
    node: Any = value
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]

    path: list[int] = []
    stack: list[Iterator[Any]] = [iter(value)]
    counters: list[int] = [-1]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            counters.pop()
            if path:
                path.pop()
            continue
        counters[-1] += 1
        depth = len(stack)  # the depth of `item`
        index = (*path, counters[-1])
        if isinstance(item, list):
            if depth >= len(shape) or len(item) != shape[depth]:
                return ragged_error(field, _shift(index, first_item))
            path.append(counters[-1])
            stack.append(iter(item))
            counters.append(-1)
        elif depth != len(shape):
            return ragged_error(field, _shift(index, first_item))
        elif isinstance(item, bool) or not isinstance(item, int | float):
            shown = _shift(index, first_item)
            return InvalidInput(
                f"field '{field}' must contain only numbers; "
                f"found {json_type(item)} at index {shown}",
                {"field": field, "index": list(shown)},
            )
    return None


_END = object()


def _shift(index: tuple[int, ...], first_item: int) -> tuple[int, ...]:
    return (index[0] + first_item, *index[1:]) if index else index


def ragged_error(field: str, index: tuple[int, ...]) -> InvalidInput:
    return InvalidInput(
        f"field '{field}' is ragged: every item must have the same shape "
        f"(first mismatch at index {index})",
        {"field": field, "index": list(index)},
    )


def _too_deep(depth: int, max_depth: int) -> InvalidInput:
    return InvalidInput(
        f"JSON nesting is {depth} levels deep; the limit is {max_depth}",
        {"depth": depth, "max_depth": max_depth},
    )


def _not_an_object(body: bytes, first: bytes, max_depth: int) -> InvalidInput | MalformedBody:
    """A body that is JSON but not an object, or not JSON at all: parsed when it is small
    enough for that to be cheap, else named by its first byte."""
    if len(body) <= ENVELOPE_MAX_BYTES:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _decode_error(exc, max_depth, body, [], [])
        kind: str | None = json_type(value)
    else:
        kind = {b"[": "an array", b'"': "a string", b"t": "a boolean", b"f": "a boolean"}.get(first)
        if kind is None and first and first in b"-0123456789":
            kind = "a number"
    if kind is None:
        return MalformedBody(
            f"request body is not valid JSON: it starts with {excerpt(first)}", {"position": 0}
        )
    return InvalidInput(
        f'request body must be a JSON object such as {{"inputs": [[...]]}}; got {kind}'
    )


def _envelope_too_large(
    body: bytes, size: int, impurity: _Impurity | None
) -> InvalidInput | PayloadTooLarge:
    """The refusal of a body whose non-number part is too large to parse: most often an array
    that holds something other than numbers, named where it stops being numbers."""
    if impurity is not None:
        at = impurity.position
        found = _describe_token(body, at)
        key = excerpt(impurity.key.decode("utf-8", "replace"))
        return InvalidInput(
            f"field {key} must contain only numbers; found {found} at character {at}",
            {"field": impurity.key.decode("utf-8", "replace")[:64], "position": at},
        )
    return PayloadTooLarge(
        f"the JSON body holds {size} bytes besides its arrays of numbers (keys, strings, other "
        f"values); the limit is {ENVELOPE_MAX_BYTES}",
        {"limit": ENVELOPE_MAX_BYTES},
    )


def _describe_token(body: bytes, at: int) -> str:
    byte = body[at : at + 1]
    if byte == b'"':
        return "a string"
    if byte == b"{":
        return "an object"
    if body.startswith(b"true", at) or body.startswith(b"false", at):
        return "a boolean"
    if body.startswith(b"null", at):
        return "null"
    start = at - 1 if at and body[at - 1 : at] in (b"-", b"+") else at
    if _NONFINITE_TOKEN.match(body[start : start + 16].decode("latin-1")):
        return "a non-finite number (NaN and Infinity are not allowed)"
    return f"{excerpt(body[at : at + 16].decode('latin-1'))}, which is not a number"


def _decode_error(
    exc: orjson.JSONDecodeError,
    max_depth: int,
    body: bytes,
    cuts: list[tuple[int, int]],
    placeholders: list[str],
) -> InvalidInput | MalformedBody:
    """orjson's error on the envelope as ours, at the character of the body it happened at,
    recognising the failures a client can act on."""
    text, pos = exc.doc, exc.pos
    position = _body_position(text, pos, cuts, placeholders)
    if "depth limit exceeded" in exc.msg:
        return InvalidInput(
            f"JSON nesting is too deep; the limit is {max_depth} levels",
            {"max_depth": max_depth},
        )
    if "infinity" in exc.msg:  # "number is infinity when parsed as double", e.g. 1e400
        return InvalidInput(
            f"number out of range at character {position}: non-finite numbers are not allowed",
            {"position": position},
        )
    # orjson rejects NaN/Infinity tokens with a generic "unexpected character" at the token, or
    # "no digit after sign" just after a sign; say what is really wrong.
    start = pos - 1 if text[pos - 1 : pos] in ("-", "+") else pos
    if _NONFINITE_TOKEN.match(text, start):
        return InvalidInput(
            f"non-finite number at character {position}: NaN and Infinity are not allowed in JSON",
            {"position": position},
        )
    return MalformedBody(
        f"request body is not valid JSON: {exc.msg} at character {position}",
        {"position": position},
    )


def _body_position(text: str, pos: int, cuts: list[tuple[int, int]], names: list[str]) -> int:
    """The character of the body at character `pos` of the envelope."""
    if not cuts:
        return pos
    envelope_byte = len(text[:pos].encode("utf-8"))
    shift = 0
    for (start, end), name in zip(cuts, names, strict=True):
        placeholder = len(name.replace("\x00", "\\u0000")) + 2
        if envelope_byte < start - shift:
            break
        if envelope_byte < start - shift + placeholder:
            envelope_byte = start - shift
            break
        shift += (end - start) - placeholder
    return envelope_byte + shift


# Characters that matter for nesting depth: brackets, quotes, and backslash plus every character
# that can follow a backslash in a JSON escape (so escape pairs survive the deletion intact).
_SKELETON_KEEP = frozenset(b'[]{}"\\/bfnrtu')
_SKELETON_DELETE = bytes(c for c in range(256) if c not in _SKELETON_KEEP)


def _json_depth(body: bytes) -> int:
    """Maximum container nesting of a *valid* JSON document, in linear time and no recursion.

    Every step is a C-level bytes operation or a numpy reduction: delete irrelevant bytes, drop
    escape pairs that could hide a quote (`\\\\` first, left to right, matching how a JSON
    tokenizer pairs them; then `\\"`), so the remaining quotes alternate open/close and string
    contents are every odd piece of a split on `"`. What is left is brackets (and the letters of
    true/false/null); depth is the running maximum of +1/-1 steps.
    """
    skeleton = body.translate(None, _SKELETON_DELETE)
    if b"\\" in skeleton:
        skeleton = skeleton.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    if not skeleton:
        return 0
    steps = _DEPTH_STEP[np.frombuffer(skeleton, dtype=np.uint8)]
    return max(0, int(np.cumsum(steps, dtype=np.int64).max()))
