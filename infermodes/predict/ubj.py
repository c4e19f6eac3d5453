"""UBJSON (https://ubjson.org, big-endian), one reader for both of its uses here.

- The trees' evaluator decodes what XGBoost's ``save_ubj`` writes (``src/common/json.cc``,
  ``UBJWriter``): objects with int64-length keys, strings, numbers, booleans, null, counted
  arrays and typed arrays (``[$<type>#<count>`` then big-endian values). Typed arrays of numbers
  decode to numpy views of the bytes, not copies: a model's trees are mostly such arrays, and
  most of them are never converted.
- The pickle reader finds one member of an UNTRUSTED document (a pickled Booster's
  ``{"Config": ..., "Model": ...}``) by skipping values by their size, never decoding them.

Both see the whole format: every marker (``C`` chars and ``H`` high-precision numbers too, the
latter decoded as their decimal text), optional ``$`` type and ``#`` count headers on arrays and
objects, no-ops (``N``) where a value may stand. Whatever the bytes, the reader raises only
``UBJError``: on truncation, an unknown marker, a count that is negative or larger than the bytes
left (refused before anything is allocated for it: so a typed array of values of no bytes,
``[$Z#<count>``, may count no more than that either; XGBoost writes none), text that is not
UTF-8, or containers nested deeper than ``MAX_DEPTH`` (a hostile ``[[[[...`` would otherwise
exhaust the stack).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

MAX_DEPTH = 64  # XGBoost's models nest about 6 deep

_NUMBERS = {
    ord(marker): struct.Struct(layout)
    for marker, layout in (
        ("i", ">b"), ("U", ">B"), ("I", ">h"), ("l", ">i"), ("L", ">q"), ("d", ">f"), ("D", ">d"),
    )
}  # fmt: skip
_INTEGERS = frozenset(b"iUIlL")
_OBJECT, _OBJECT_END, _ARRAY, _ARRAY_END = b"{}[]"
_STRING, _HIGH_PRECISION, _CHAR = b"SHC"
_TRUE, _FALSE, _NULL, _NO_OP = b"TFZN"
_TYPE, _COUNT = b"$#"
_CONSTANTS = {_TRUE: True, _FALSE: False, _NULL: None}
# the bytes each marker's value takes after it, where that is fixed
_SIZES = {
    **{marker: number.size for marker, number in _NUMBERS.items()},
    **dict.fromkeys(_CONSTANTS, 0),
    _CHAR: 1,
}
# what may follow ``$`` (``[`` and ``{``: each element a container whose opening is left out)
_ELEMENT_TYPES = frozenset({*_SIZES, _STRING, _HIGH_PRECISION, _OBJECT, _ARRAY})

_Read = TypeVar("_Read")


class UBJError(ValueError):
    """The bytes are not (complete, sane) UBJSON: ``problem`` says what, ``at`` at which byte."""

    def __init__(self, problem: str, at: int) -> None:
        super().__init__(f"the UBJSON {problem} (at byte {at})")
        self.problem = problem
        self.at = at


class UBJReader:
    """A cursor over one UBJSON document: ``value`` decodes the next value, ``skip`` passes
    over it, ``member`` finds one member of the top-level object."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def document(self) -> dict[str, Any]:
        """The whole document, which XGBoost always writes as an object."""
        document = self.value()
        if not isinstance(document, dict):
            raise UBJError("is not an object", 0)
        return document

    def value(self, marker: int | None = None, depth: int = 0) -> Any:
        """The next value, decoded; ``marker`` is its marker when already read (or when a typed
        container's header gave it), ``depth`` how many containers enclose it."""
        marker = self._value_marker() if marker is None else marker
        number = _NUMBERS.get(marker)
        if number is not None:
            return number.unpack_from(self.data, self._take(number.size))[0]
        if marker in _CONSTANTS:
            return _CONSTANTS[marker]
        if marker in (_STRING, _HIGH_PRECISION):
            return self._text(self._count())
        if marker == _CHAR:
            return self._text(1)
        if marker not in (_OBJECT, _ARRAY):
            raise UBJError(f"has an unknown marker {marker:#04x}", self.at - 1)
        kind, count = self._header(depth)
        if marker == _OBJECT:
            return dict(self._members(kind, count, depth + 1, self.value))
        if kind in _NUMBERS and count is not None:
            dtype = np.dtype(_NUMBERS[kind].format)
            start = self._take(count * dtype.itemsize)
            return np.frombuffer(self.data, dtype=dtype, count=count, offset=start)
        return list(self._elements(kind, count, depth + 1, self.value))

    def skip(self, marker: int | None = None, depth: int = 0) -> tuple[int, int]:
        """Passes over the next value without decoding it; where its bytes start and end
        (its marker included when it has one here)."""
        if marker is None:
            marker = self._value_marker()
            start = self.at - 1
        else:
            start = self.at
        size = _SIZES.get(marker)
        if size is not None:
            self._take(size)
        elif marker in (_STRING, _HIGH_PRECISION):
            self._take(self._count())
        elif marker in (_OBJECT, _ARRAY):
            kind, count = self._header(depth)
            element_size = _SIZES.get(kind) if kind is not None else None
            if marker == _ARRAY and element_size is not None and count is not None:
                self._take(count * element_size)  # a typed array: at once
            else:
                entries: Iterator[object] = (
                    self._members(kind, count, depth + 1, self.skip)
                    if marker == _OBJECT
                    else self._elements(kind, count, depth + 1, self.skip)
                )
                for _ in entries:
                    pass
        else:
            raise UBJError(f"has an unknown marker {marker:#04x}", self.at - 1)
        return start, self.at

    def member(self, key: str) -> bytes | None:
        """The bytes of the top-level object's member ``key``, as a UBJSON value of its own
        (None without one); members after it are not read."""
        if self._value_marker() != _OBJECT:
            raise UBJError("is not an object", self.at - 1)
        kind, count = self._header(0)
        for name, (start, end) in self._members(kind, count, 1, self.skip):
            if name == key:  # a typed object's values leave out their marker: put it back
                marker = b"" if kind is None else bytes([kind])
                return marker + self.data[start:end]
        return None

    def _members(
        self,
        kind: int | None,
        count: int | None,
        depth: int,
        read: Callable[[int | None, int], _Read],
    ) -> Iterator[tuple[str, _Read]]:
        """An object's keys, each with ``read`` of its value, to the count or the ``}``."""
        for _ in range(count) if count is not None else itertools.repeat(None):
            if count is None and self._peek() == _OBJECT_END:
                self.at += 1
                return
            key = self._text(self._count())
            yield key, read(kind, depth)

    def _elements(
        self,
        kind: int | None,
        count: int | None,
        depth: int,
        read: Callable[[int | None, int], _Read],
    ) -> Iterator[_Read]:
        """``read`` of each of an array's elements, to the count or the ``]``."""
        if count is not None:
            for _ in range(count):
                yield read(kind, depth)
            return
        while (marker := self._value_marker()) != _ARRAY_END:
            yield read(marker, depth)

    def _header(self, depth: int) -> tuple[int | None, int | None]:
        """A container's optional element type (``$``) and count (``#``); here, where a
        container opens, the depth is bounded."""
        if depth >= MAX_DEPTH:
            raise UBJError(f"nests containers more than {MAX_DEPTH} deep", self.at - 1)
        kind = count = None
        if self._peek() == _TYPE:
            self.at += 1
            kind = self._byte()
            if kind not in _ELEMENT_TYPES:
                raise UBJError(f"has a container of unknown type {kind:#04x}", self.at - 1)
            if self._peek() != _COUNT:
                raise UBJError("has a typed container without a count", self.at)
        if self._peek() == _COUNT:
            self.at += 1
            count = self._count()
        return kind, count

    def _count(self) -> int:
        """A length or count: an integer, at most the bytes left (every element or character
        takes one at least, and nothing is allocated for more)."""
        marker = self._byte()
        if marker not in _INTEGERS:
            raise UBJError(f"has {chr(marker)!r} for a length", self.at - 1)
        number = _NUMBERS[marker]
        count = int(number.unpack_from(self.data, self._take(number.size))[0])
        left = len(self.data) - self.at
        if not 0 <= count <= left:
            raise UBJError(f"has a count of {count} with {left} bytes left", self.at)
        return count

    def _text(self, size: int) -> str:
        """The next ``size`` bytes as text (a string's, a key's or a char's)."""
        start = self._take(size)
        try:
            return self.data[start : start + size].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UBJError("has text that is not UTF-8", start + exc.start) from None

    def _value_marker(self) -> int:
        """The next value's marker, past any no-ops."""
        marker = self._byte()
        while marker == _NO_OP:
            marker = self._byte()
        return marker

    def _peek(self) -> int:
        if self.at >= len(self.data):
            raise UBJError("is truncated", self.at)
        return self.data[self.at]

    def _byte(self) -> int:
        marker = self._peek()
        self.at += 1
        return marker

    def _take(self, size: int) -> int:
        """Where the next ``size`` bytes start; moves past them."""
        start = self.at
        if start + size > len(self.data):
            raise UBJError("is truncated", len(self.data))
        self.at = start + size
        return start


def member(data: bytes, key: str) -> bytes | None:
    """The top-level object's member ``key`` as UBJSON bytes, found without decoding."""
    return UBJReader(data).member(key)
