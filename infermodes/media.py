"""Media types as the platform's container reads its headers: a Content-Type's type (aliases
folded, case ignored) and the parameters it must honour (a charset other than UTF-8, CSV's
``header=present``), and the output an Accept header prefers. One reading for the model
server, the async plane and the platform API's ``TransformInput.ContentType`` and
``TransformOutput.Accept``, which the platform sends each mini-batch as those headers."""

from __future__ import annotations

import re

from infermodes.errors import InvalidInput, NotAcceptable, UnsupportedContentType, clipped

CSV = "text/csv"
JSON = "application/json"
LIBSVM = "text/libsvm"
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"
INPUT_TYPES = (CSV, JSON, LIBSVM, RECORDIO)
OUTPUT_TYPES = (CSV, JSON, JSONLINES)  # in order of preference for a wildcard
_ALIASES = {"application/x-libsvm": LIBSVM, "text/x-libsvm": LIBSVM, "application/csv": CSV}
_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
# what may follow a type in a header a schema checks (a spec's contentType and accept): any
# parameters and list elements, but no control character, which no header carries
_REST = r"[^\x00-\x1f\x7f]*"
_BLANK = r"[ \t]*"  # what surrounds a type: RE2 (the API server's) reads \s as ASCII's alone


def _any_ascii_case(name: str) -> str:
    """``name`` as a regex (Python's, RE2's and a CEL string's alike) in any ASCII case, as
    ``media_type`` lowers it: ``(?i)`` would also fold other letters (RE2 and Python read
    U+017F, the long s, as ``s`` and U+212A, the Kelvin sign, as ``k``), so a ``text/csv``
    spelled with the long s would pass a schema the spec then refuses; ``*`` in a class, since
    CEL has no ``\\*`` escape."""
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else "[*]" if c == "*" else c
        for c in name
    )


def _spellings(types: tuple[str, ...], aliases: bool = True) -> str:
    """The types (and their Content-Type aliases), as a regex alternation in any ASCII case."""
    folded = [alias for alias, kind in _ALIASES.items() if aliases and kind in types]
    names = sorted({*types, *folded})
    return "(?:" + "|".join(_any_ascii_case(name) for name in names) + ")"


def content_type_pattern(types: tuple[str, ...]) -> str:
    """A Content-Type of one of ``types`` (or an alias) with any parameters, or a blank one (a
    missing header: CSV): what a schema can check of ``content_type_of``'s reading (a charset
    it refuses, it cannot)."""
    return f"^({_BLANK}|{_BLANK}{_spellings(types)}{_BLANK}(;{_REST})?)$"


def accept_pattern() -> str:
    """An Accept list naming at least one output type or a wildcard for them, or an empty list
    (CSV): what a schema can check of ``accept_of``'s reading (a q-value of 0 on every such
    range, it cannot)."""
    ranges = _spellings((*OUTPUT_TYPES, *_WILDCARDS), aliases=False)
    return f"^([ \\t,]*|({_REST},)?{_BLANK}{ranges}{_BLANK}([;,]{_REST})?)$"


def type_is_cel(field: str, types: tuple[str, ...], aliases: bool = True) -> str:
    """CEL: whether the header in ``field`` names one of ``types`` (or an alias) first; a
    blank one is CSV, as a missing header."""
    blank = f"{_BLANK}$|" if CSV in types else ""
    return f"{field}.matches('^({blank}{_BLANK}{_spellings(types, aliases)}{_BLANK}(;|$))')"


def _show(value: str, limit: int) -> str:
    return repr(clipped(value, limit))


def media_type(header: str | None, default: str = CSV) -> str:
    """``"text/csv; charset=utf-8"`` -> ``"text/csv"``; a missing header means ``default``."""
    if not header:
        return default
    base = header.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base) or default


def content_type_of(header: str | None, accepted: tuple[str, ...] = INPUT_TYPES) -> str:
    """The type of a Content-Type header among ``accepted``; UnsupportedContentType (a 415 on
    the data plane) for other types and for charsets the decoders do not read."""
    kind = media_type(header)
    if kind not in accepted:
        raise UnsupportedContentType(
            f"unsupported content type {_show(kind, 60)}; use one of {', '.join(accepted)}"
        )
    if header and ";" in header:
        for parameter in header.split(";")[1:]:
            name, _, value = parameter.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"').lower()
            if name == "charset" and value not in _CHARSETS:
                raise UnsupportedContentType(f"unsupported charset {_show(value, 30)}; send UTF-8")
            if name == "header" and value == "present" and kind == CSV:  # RFC 4180's parameter
                raise UnsupportedContentType(
                    "text/csv with header=present: a header row is not read (nor by the "
                    "platform's container); send the rows without it"
                )
    return kind


_SIMPLE_ACCEPT = {"text/csv": CSV, "application/json": JSON, JSONLINES: JSONLINES, "*/*": CSV}
_WILDCARDS = {"*/*": OUTPUT_TYPES, "text/*": (CSV,), "application/*": (JSON, JSONLINES)}
_QUALITY = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")


def _quality(parameters: list[str], header: str) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            if not _QUALITY.fullmatch(value):
                raise InvalidInput(
                    f"Accept {_show(header, 60)}: q must be a number from 0 to 1, "
                    f"got {_show(value, 20)}"
                )
            return float(value)
    return 1.0


def accept_of(header: str | None) -> str:
    """The output type an Accept header prefers (CSV when absent, blank or ``*/*``): the
    highest q-value wins; among equals a more specific range, then the one listed first.
    Several Accept headers are one list joined with commas."""
    if not header:
        return CSV
    simple = _SIMPLE_ACCEPT.get(header)
    if simple is not None:
        return simple
    # (q, specificity, -position) of the range that decides each output type
    best: dict[str, tuple[float, int, int]] = {}
    for position, element in enumerate(header.split(",")):
        kind, *parameters = element.split(";")
        kind = kind.strip().lower()
        if not kind:
            continue  # empty list elements are allowed
        quality = _quality(parameters, header)
        matches = (kind,) if kind in OUTPUT_TYPES else _WILDCARDS.get(kind, ())
        specificity = 2 if kind in OUTPUT_TYPES else 0 if kind == "*/*" else 1
        for output in matches:
            # the most specific range naming a type sets its q (RFC 9110, 12.5.1)
            known = best.get(output)
            if known is None or specificity > known[1]:
                best[output] = (quality, specificity, -position)
    acceptable = [
        (rank, -OUTPUT_TYPES.index(output), output) for output, rank in best.items() if rank[0] > 0
    ]
    if not acceptable:
        if not header.strip(" \t,"):  # an empty list asks for no type in particular
            return CSV
        raise NotAcceptable(
            f"cannot produce {_show(header, 80)}; accept one of {', '.join(OUTPUT_TYPES)}"
        )
    return max(acceptable)[2]
