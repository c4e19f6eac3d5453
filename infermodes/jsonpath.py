"""The JSONPath subset the managed platform defines for ``inputFilter`` and ``outputFilter``.

``$`` (everything), then segments: ``.name``, ``['a','b']`` (one key: its value; several: an
object of those keys), ``[i]``, ``[i,j,k]`` and ``[a:b]`` (negative indices count from the end).
A CSV record is the list of its columns, so ``$[1:]`` drops the first column and ``$[0,2,4]``
keeps three; a JSON record is the parsed value, so ``$.features`` picks an attribute and
``$['id','SageMakerOutput']`` keeps two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

from infermodes.errors import InvalidInput
from infermodes.settings import CONTROL, SPACE

# The pieces are ASCII's (no \s or \d, which Python reads as Unicode's and the API server's RE2
# as ASCII's): the parser and GRAMMAR, the CRD's check, take the same filters.
_BLANK = " *"  # other white space is a control character, which the spec refuses
_INTEGER = r"-?[0-9]+"
_NAME_TEXT = r"[A-Za-z_][A-Za-z0-9_-]*"
_NAME = re.compile(r"\.(" + _NAME_TEXT + ")")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_QUOTED = re.compile(_BLANK + r"""(?:'([^']*)'|"([^"]*)")""" + _BLANK)
_INDEX = re.compile(_BLANK + "(" + _INTEGER + ")" + _BLANK)
_SLICE_TEXT = _BLANK + f"({_INTEGER})?" + _BLANK + ":" + _BLANK + f"({_INTEGER})?" + _BLANK
_SLICE = re.compile(_SLICE_TEXT)


def _listed(item: str) -> str:
    return f"{item}(,{item})*"


# what ``JsonPath.parse`` reads, whole, as one regular expression (and no control character,
# the spec's own rule): a name in a bracket ends at its ',' or ']', as the parser splits it;
# the parser strips white space at the end
_KEY = "'[^'," + CONTROL + r"\]]*'|" + '"[^",' + CONTROL + r'\]]*"'
_INDICES = _listed(f"{_BLANK}{_INTEGER}{_BLANK}")
_KEYS = _listed(f"{_BLANK}({_KEY}){_BLANK}")
GRAMMAR = rf"^\$(\.{_NAME_TEXT}|\[({_SLICE_TEXT}|{_INDICES}|{_KEYS})\])*[{SPACE}]*$"


@dataclass(frozen=True)
class Keys:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Indices:
    positions: tuple[int, ...]


@dataclass(frozen=True)
class Slice:
    start: int | None
    stop: int | None


Segment = Keys | Indices | Slice


def _bracket(body: str, path: str) -> Segment:
    sliced = _SLICE.fullmatch(body)
    if sliced:
        start, stop = sliced.groups()
        return Slice(None if start is None else int(start), None if stop is None else int(stop))
    parts = body.split(",")
    if all(_INDEX.fullmatch(part) for part in parts):
        return Indices(tuple(int(part) for part in parts))
    names: list[str] = []
    for part in parts:
        quoted = _QUOTED.fullmatch(part)
        if not quoted:
            raise ValueError(f"unsupported JSONPath selector [{body}] in {path!r}")
        names.append(quoted.group(1) if quoted.group(1) is not None else quoted.group(2))
    return Keys(tuple(names))


@dataclass(frozen=True)
class JsonPath:
    """A parsed filter; ``JsonPath.parse("$")`` selects the whole record. ``field``, the
    spec's name of the filter (``inputFilter``), starts its errors, with its text: a job's
    two filters fail apart."""

    text: str
    segments: tuple[Segment, ...]
    prefixes: tuple[str, ...] = ()  # the path up to each segment's end: what it looked at
    field: str = ""

    @classmethod
    def parse(cls, text: str, field: str = "") -> JsonPath:
        path = text.strip()
        if not path.startswith("$"):
            raise ValueError(f"a JSONPath filter starts with $: {text!r}")
        segments: list[Segment] = []
        prefixes: list[str] = []
        position = 1
        while position < len(path):
            name = _NAME.match(path, position)
            if name:
                segments.append(Keys((name.group(1),)))
                position = name.end()
            else:
                bracket = _BRACKET.match(path, position)
                if not bracket:
                    raise ValueError(f"unsupported JSONPath {text!r} at {path[position:]!r}")
                segments.append(_bracket(bracket.group(1), text))
                position = bracket.end()
            prefixes.append(path[:position])
        return cls(text, tuple(segments), tuple(prefixes), field)

    @property
    def is_identity(self) -> bool:
        return not self.segments

    def refusal(self, problem: str) -> InvalidInput:
        """``problem`` as this filter's: ``inputFilter $[1:]: problem``."""
        name = f"{self.field} {self.text}" if self.field else self.text
        return InvalidInput(f"{name}: {problem}")

    def select(self, value: object, record: str = "the record") -> object:
        """The part of ``value`` this path names; InvalidInput when it is not there, saying
        what was looked at: ``record`` (``the input record``), or a part of it (named only
        then: a record selected from costs no message)."""
        for index, segment in enumerate(self.segments):
            try:
                value = _apply(segment, value)
            except _Unselectable as exc:
                looked_at = f"{self.prefixes[index - 1]} of {record}" if index else record
                raise self.refusal(exc.problem.replace("{}", looked_at, 1)) from None
        return value

    def select_columns(self, columns: list[bytes], record: str = "the record") -> list[bytes]:
        """A CSV record's columns: a single selected column stays a one-column row."""
        selected = self.select(columns, record)
        return selected if isinstance(selected, list) else [cast(bytes, selected)]


class _Unselectable(Exception):
    """What ``_apply`` cannot select, as ``problem`` starting with or holding ``{}`` (its
    first) for what it looked at: named only on a refusal."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _apply(segment: Segment, value: object) -> object:
    if isinstance(segment, Keys):
        if not isinstance(value, dict):
            raise _Unselectable("selects keys, but {} is not a JSON object")
        missing = [name for name in segment.names if name not in value]
        if missing:
            raise _Unselectable(f"{{}} has no {missing[0]!r}")
        if len(segment.names) == 1:
            return value[segment.names[0]]
        return {name: value[name] for name in segment.names}
    if not isinstance(value, list):
        raise _Unselectable("selects positions, but {} is not a list")
    if isinstance(segment, Slice):
        return value[segment.start : segment.stop]
    try:
        picked = [value[position] for position in segment.positions]
    except IndexError:
        raise _Unselectable(
            f"{{}} has {len(value)} columns, fewer than the filter selects"
        ) from None
    return picked[0] if len(picked) == 1 else picked
