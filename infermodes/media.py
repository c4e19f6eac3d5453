"""Media types as the platform's container reads a Content-Type header: the type (aliases
folded, case ignored) and the parameters it must honour (a charset other than UTF-8, CSV's
``header=present``). One reading for the model server, the async plane and the platform API's
``TransformInput.ContentType``, which the platform sends each mini-batch as that header."""

from __future__ import annotations

from infermodes.errors import UnsupportedContentType, clipped

CSV = "text/csv"
JSON = "application/json"
LIBSVM = "text/libsvm"
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"
INPUT_TYPES = (CSV, JSON, LIBSVM, RECORDIO)
_ALIASES = {"application/x-libsvm": LIBSVM, "text/x-libsvm": LIBSVM, "application/csv": CSV}
_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


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
