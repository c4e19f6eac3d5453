"""Pickled XGBoost boosters read without running the pickle.

The platform's training wrote ``pickle.dump(booster)`` until its 1.3 container. Such a pickle is
one object of class ``xgboost.core.Booster`` (protocol 2 and later: ``NEWOBJ`` then ``BUILD``)
whose state is a dict of plain values holding the serialised booster under ``handle``, as a
``bytearray``. This reader resolves exactly those two globals, to stand-ins that only store data,
and refuses any other global by name, so nothing a pickle names is ever imported or called.

What ``handle`` holds changed with the version that pickled it: XGBoost 0.90 the legacy binary
model; 1.0-1.2 ``CONFIG-offset:`` + an int64 size + that binary model + its JSON configuration;
1.3-1.5 a JSON ``{"Config": ..., "Model": ...}`` snapshot; 1.7 the same in UBJ. The model part
is returned; the configuration (training parameters) is not needed to predict.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
from collections.abc import Callable
from typing import Any

from infermodes.errors import ModelLoadError
from infermodes.predict import ubj

_BOOSTER = ("xgboost.core", "Booster")
_CONFIG_HEADER = b"CONFIG-offset:"


class PickleRefused(ModelLoadError):
    """The pickle is not an XGBoost Booster's: it names another global or holds another object."""


class _BoosterState:
    """Stands in for ``xgboost.core.Booster``: keeps the state ``BUILD`` hands it, nothing else."""

    state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


def _bytearray(*args: object) -> bytearray:
    """``bytearray`` as pickles call it: from bytes (protocol 3+) or latin-1 text (protocol 2)."""
    if len(args) == 1 and isinstance(args[0], bytes | bytearray):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin-1", "latin1"):
        return bytearray(args[0], "latin-1")
    raise PickleRefused("the pickle calls bytearray with arguments a Booster pickle never has")


def _latin1_encode(text: object, encoding: object = "utf-8") -> bytes:
    """``_codecs.encode``, which protocol 2 uses to rebuild ``bytes`` from latin-1 text."""
    if isinstance(text, str) and encoding in ("latin-1", "latin1"):
        return text.encode("latin-1")
    raise PickleRefused("the pickle calls _codecs.encode other than to rebuild bytes")


class _Callable:
    """One of the functions above as the pickle sees it: callable, but with no attribute a
    ``BUILD`` could set (a plain function's ``__defaults__`` would outlive this load)."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., bytes | bytearray]) -> None:
        self._function = function

    def __call__(self, *args: object) -> bytes | bytearray:
        return self._function(*args)

    def __setstate__(self, state: object) -> None:
        raise PickleRefused("it sets state on bytearray or _codecs.encode")


_ALLOWED: dict[tuple[str, str], Any] = {
    _BOOSTER: _BoosterState,
    ("builtins", "bytearray"): _Callable(_bytearray),
    ("__builtin__", "bytearray"): _Callable(_bytearray),  # protocol 2 names builtins as Python 2
    ("_codecs", "encode"): _Callable(_latin1_encode),
}


class _BoosterUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise PickleRefused(
                f"it names the global {module}.{name}, and only {'.'.join(_BOOSTER)} (with its "
                "model bytes) is read without running the pickle"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("it uses persistent ids, which a Booster pickle never has")


def booster_model_from_pickle(data: bytes) -> bytes:
    """The model inside a pickled Booster: legacy binary, JSON or UBJ bytes."""
    try:
        loaded = _BoosterUnpickler(io.BytesIO(data)).load()
    except PickleRefused:
        raise
    except Exception as exc:  # malformed pickles fail in many ways; none of them runs code
        raise ModelLoadError(f"cannot read the pickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, _BoosterState):
        raise PickleRefused(f"it holds a {type(loaded).__name__}, not an XGBoost Booster")
    state = loaded.state
    handle = state.get("handle") if isinstance(state, dict) else None
    if not isinstance(handle, bytes | bytearray) or not handle:
        raise ModelLoadError("the pickled XGBoost Booster holds no model bytes under 'handle'")
    return _unwrap(bytes(handle))


def _unwrap(raw: bytes) -> bytes:
    """The model part of what ``Booster.__getstate__`` stored, per the versions above."""
    if raw.startswith(_CONFIG_HEADER):
        start = len(_CONFIG_HEADER) + 8
        (size,) = struct.unpack_from("<q", raw.ljust(start, b"\0"), len(_CONFIG_HEADER))
        if not 0 < size <= len(raw) - start:
            raise ModelLoadError(
                f"the pickled XGBoost 1.0 Booster says its model has {size} bytes; "
                f"{len(raw) - start} follow"
            )
        return raw[start : start + size]
    if raw.startswith(b'{"'):
        try:
            snapshot = json.loads(raw)
        except ValueError as exc:
            raise ModelLoadError(f"the pickled Booster's JSON is malformed: {exc}") from exc
        except RecursionError:  # an untrusted document: nested deeper than any model's
            raise ModelLoadError("the pickled Booster's JSON nests too deep") from None
        model = snapshot.get("Model", snapshot) if isinstance(snapshot, dict) else None
        if not isinstance(model, dict):
            raise ModelLoadError("the pickled Booster's JSON holds no model")
        return json.dumps(model).encode()
    if raw.startswith(b"{"):
        try:
            return ubj.member(raw, "Model") or raw
        except ubj.UBJError as exc:
            problem = f"{exc.problem} (at byte {exc.at})"
            raise ModelLoadError(f"the pickled Booster's UBJ {problem}") from exc
    return raw
