"""XGBoost's C API, called directly for loading and in-place prediction.

Why not ``import xgboost``: the Python package imports scipy and more (~0.4-0.5 s of a cold
start whose budget is 0.8 s), and its ``Booster.inplace_predict`` spends ~100 µs of Python per
call (type dispatch, JSON building) around a C call that scores one row in a few µs. Here the
same C functions (``XGBoosterLoadModelFromBuffer``, ``XGBoosterPredictFromDense``: what
``inplace_predict`` calls for a numpy array) are called with a fixed configuration and a reused
proxy matrix. The shared
library is the one the installed ``xgboost`` (or ``xgboost-cpu``) wheel ships.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import re
import threading
from pathlib import Path

import numpy as np

from infermodes.errors import ModelLoadError

_bst_ulong = ctypes.c_uint64
# type 0: plain prediction values; iteration range (0, 0): all trees; NaN marks missing values.
_PREDICT_CONFIG = (
    b'{"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, '
    b'"missing": NaN, "strict_shape": false, "cache_id": 0}'
)
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def library_path() -> Path:
    """``libxgboost.so`` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("xgboost")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("xgboost is not installed (pip install xgboost-cpu)")
    for folder in spec.submodule_search_locations:
        for name in ("libxgboost.so", "libxgboost.dylib", "xgboost.dll"):
            candidate = Path(folder) / "lib" / name
            if candidate.exists():
                return candidate
    raise ModelLoadError("the installed xgboost package has no libxgboost shared library")


def library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.cdll.LoadLibrary(str(library_path()))
            lib.XGBGetLastError.restype = ctypes.c_char_p
            _lib = lib
        return _lib


def library_version() -> str:
    lib = library()
    major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.XGBoostVersion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    return f"{major.value}.{minor.value}.{patch.value}"


_ERROR_ORIGIN = re.compile(r"^\[[0-9:]+\] [^ ]+:[0-9]+: ")  # "[06:21:06] /src/gbm.h:109: "


def _last_error(lib: ctypes.CDLL) -> str:
    """XGBoost's last error, its first line, without the time and source line it starts with."""
    message = (lib.XGBGetLastError() or b"unknown error").decode("utf-8", "replace").strip()
    return _ERROR_ORIGIN.sub("", message.splitlines()[0]) if message else "unknown error"


def float32_rows(rows: np.ndarray) -> np.ndarray:
    """The rows as the C predictors read them: C-contiguous float32 (the same array when it
    already is)."""
    if rows.dtype != np.float32 or not rows.flags.c_contiguous:
        return np.ascontiguousarray(rows, dtype=np.float32)
    return rows


class _ProxyMatrix:
    """XGBoost's proxy DMatrix, one per thread and reused across calls. Without it every
    prediction builds a fresh proxy whose context reads the cgroup CPU quota files: ten
    system calls and ~90 µs of a one-row prediction's ~125 µs, measured."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self.handle = ctypes.c_void_p()
        if lib.XGProxyDMatrixCreate(ctypes.byref(self.handle)) != 0:
            raise RuntimeError(f"cannot create a proxy matrix: {_last_error(lib)}")

    def __del__(self) -> None:
        if self.handle.value:
            self._lib.XGDMatrixFree(self.handle)


_per_thread = threading.local()


def _thread_proxy(lib: ctypes.CDLL) -> ctypes.c_void_p:
    proxy = getattr(_per_thread, "proxy", None)
    if proxy is None:
        proxy = _per_thread.proxy = _ProxyMatrix(lib)
    return proxy.handle


class NativeBooster:
    """A loaded booster. Prediction is thread-safe (XGBoost's in-place predict is lock-free)."""

    def __init__(self, raw: bytes) -> None:
        lib = library()
        self._lib = lib
        self._handle = ctypes.c_void_p()
        if lib.XGBoosterCreate(None, _bst_ulong(0), ctypes.byref(self._handle)) != 0:
            raise ModelLoadError(f"cannot create an XGBoost booster: {_last_error(lib)}")
        buffer = ctypes.create_string_buffer(raw, len(raw))
        if lib.XGBoosterLoadModelFromBuffer(self._handle, buffer, _bst_ulong(len(raw))) != 0:
            raise ModelLoadError(_last_error(lib))
        count = _bst_ulong()
        if lib.XGBoosterGetNumFeature(self._handle, ctypes.byref(count)) != 0:
            raise ModelLoadError(f"cannot read the feature count: {_last_error(lib)}")
        self.num_features = int(count.value)
        self.objective, self.num_class = self._objective()

    def _objective(self) -> tuple[str, int]:
        """The learner's objective name and number of classes (0 unless multi-class), read
        from its JSON configuration as the platform's container reads them."""
        length = _bst_ulong()
        text = ctypes.c_char_p()
        status = self._lib.XGBoosterSaveJsonConfig(
            self._handle, ctypes.byref(length), ctypes.byref(text)
        )
        if status != 0 or text.value is None:
            raise ModelLoadError(f"cannot read the model's configuration: {_last_error(self._lib)}")
        learner = json.loads(ctypes.string_at(text, length.value))["learner"]
        num_class = int(learner["learner_model_param"].get("num_class", "0"))
        return str(learner["objective"]["name"]), num_class

    def save_ubj(self) -> bytes:
        """The model as XGBoost saves it in UBJSON: the in-memory values, floats as their
        float32 bits (JSON text would round-trip them through decimal)."""
        length = _bst_ulong()
        data = ctypes.POINTER(ctypes.c_char)()
        status = self._lib.XGBoosterSaveModelToBuffer(
            self._handle, b'{"format": "ubj"}', ctypes.byref(length), ctypes.byref(data)
        )
        if status != 0:
            raise ModelLoadError(f"cannot save the model: {_last_error(self._lib)}")
        return ctypes.string_at(data, length.value)

    def set_threads(self, threads: int) -> None:
        if self._lib.XGBoosterSetParam(self._handle, b"nthread", str(threads).encode()) != 0:
            raise ValueError(f"cannot set nthread={threads}: {_last_error(self._lib)}")

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predictions for a 2-D float32 matrix (NaN = missing); one value (or row) per row."""
        rows = float32_rows(rows)
        interface = (
            b'{"data": [%d, true], "shape": [%d, %d], "strides": null, '
            % (rows.ctypes.data, rows.shape[0], rows.shape[1])
            + b'"typestr": "<f4", "version": 3}'
        )
        shape = ctypes.POINTER(_bst_ulong)()
        dims = _bst_ulong()
        out = ctypes.POINTER(ctypes.c_float)()
        status = self._lib.XGBoosterPredictFromDense(
            self._handle, interface, _PREDICT_CONFIG, _thread_proxy(self._lib),
            ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out),
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"XGBoost prediction failed: {_last_error(self._lib)}")
        out_shape = tuple(int(shape[axis]) for axis in range(dims.value))
        # the result buffer belongs to the booster and is reused by the next call: copy it
        # (string_at copies once, without building a ctypes array type per call)
        copied = ctypes.string_at(out, math.prod(out_shape) * 4)
        return np.frombuffer(copied, dtype=np.float32).reshape(out_shape)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.XGBoosterFree(handle)
