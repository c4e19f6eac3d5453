"""Model artifacts: fetch from storage, unpack, recognise the format, load a Booster.

Accepted: the managed platform's ``model.tar.gz`` (booster in the member ``xgboost-model``, or the
one model-looking member), and bare XGBoost JSON, UBJ and legacy binary files (translated to JSON
in ``legacy``, since XGBoost 3 no longer reads them). A pickled ``Booster`` is read without running
the pickle (``safe_pickle``); any other pickle is refused unless the server's operator opts in,
because unpickling an untrusted artifact runs its code.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
from enum import StrEnum
from typing import IO, cast

import numpy as np

from infermodes.errors import ModelLoadError, StorageError
from infermodes.predict import ubj
from infermodes.predict.legacy import legacy_to_json
from infermodes.predict.native import NativeBooster
from infermodes.predict.safe_pickle import PickleRefused, booster_model_from_pickle
from infermodes.storage import Storage

PLATFORM_MEMBER = "xgboost-model"
MAX_MODEL_BYTES = 2 * 1024**3
MAX_ARCHIVE_MEMBERS = 10_000
"""A ``model.tar.gz`` holds a handful of files; each member's header stays in memory while the
archive is read."""


class ModelFormat(StrEnum):
    JSON = "json"
    UBJ = "ubj"
    PICKLE = "pickle"
    LEGACY_BINARY = "legacy-binary"


def sniff_format(data: bytes) -> ModelFormat:
    """Recognise a model by its first bytes (file names in tarballs are not trustworthy)."""
    head = data[:16].lstrip()
    if head.startswith(b"{"):
        return (
            ModelFormat.JSON
            if head[1:2] in (b'"', b"\n", b" ", b"\r", b"\t", b"}")
            else ModelFormat.UBJ
        )
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return ModelFormat.PICKLE
    return ModelFormat.LEGACY_BINARY


# XGBoost's JSON and UBJ readers recurse once per level, and a document nested deep enough (a
# few KiB of '[') overflows the process's stack: a SIGSEGV, not an error. Its models nest about
# 6 deep; JSON's bound is looser, since brackets inside strings (feature names) count too.
MAX_JSON_NESTING = 1000
NESTING_CHUNK_BYTES = 16 * 1024 * 1024


_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")


def json_nesting(data: bytes) -> int:
    """How deep brackets and braces nest in ``data`` (in strings too: an upper bound). The
    brackets alone are kept (a C pass), then summed in chunks, so that a document of nothing
    else costs no more than a chunk's memory."""
    brackets = data.translate(None, _NOT_BRACKETS)
    deepest = depth = 0
    for start in range(0, len(brackets), NESTING_CHUNK_BYTES):
        codes = np.frombuffer(
            brackets, np.uint8, min(NESTING_CHUNK_BYTES, len(brackets) - start), start
        )
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
        levels = np.cumsum(steps, dtype=np.int64) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def check_nesting(data: bytes, kind: ModelFormat) -> None:
    """Refuse a JSON or UBJ document nested deeper than any model before XGBoost reads it."""
    if kind is ModelFormat.JSON and json_nesting(data) > MAX_JSON_NESTING:
        raise ModelLoadError(
            f"the JSON model nests deeper than {MAX_JSON_NESTING} levels: not an XGBoost model"
        )
    if kind is ModelFormat.UBJ:
        try:
            ubj.UBJReader(data).skip()
        except ubj.UBJError as exc:
            raise ModelLoadError(f"not a loadable XGBoost ubj model: {exc}") from None


def _is_gzip_tar(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b"


def _is_platform_member(name: str) -> bool:
    return name.lstrip("./") == PLATFORM_MEMBER


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    return "a directory" if member.isdir() else "not a regular file"


def _link_target(link: tarfile.TarInfo, files: list[tarfile.TarInfo]) -> tarfile.TarInfo:
    """The regular file of the archive a link member leads to (a symbolic link's target is
    relative to its own folder, a hard link's to the archive's root); ModelLoadError when it
    leads out of the archive or to no regular file in it."""
    folder = posixpath.dirname(link.name) if link.issym() else ""
    target = posixpath.normpath(posixpath.join(folder, link.linkname))
    if not posixpath.isabs(target) and target.split("/", 1)[0] != "..":
        for member in files:
            if posixpath.normpath(member.name) == target:
                return member
    raise ModelLoadError(
        f"model.tar.gz's member {link.name!r} is {_member_kind(link)}, which is no regular "
        "file in the archive: the model must be a regular file in the archive, or a link to "
        "one (a link out of the archive is refused)"
    )


class _Unpacked:
    """The decompressed stream of a ``.tar.gz``, refused (ModelLoadError) once it would go past
    ``limit`` bytes: a few KiB of gzip may unpack to gigabytes (a decompression bomb), and
    ``tarfile`` itself reads some headers whole (PAX, GNU long names), whatever size they
    declare. What ``tarfile`` needs of a file: read, seek (forward, past a member) and tell."""

    def __init__(self, archive: bytes, limit: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=io.BytesIO(archive), mode="rb")
        self._limit = limit

    def refusal(self) -> ModelLoadError:
        return ModelLoadError(f"model archive unpacks to more than {self._limit} bytes")

    def read(self, size: int | None = -1) -> bytes:
        room = self._limit - self._gzip.tell()
        if size is not None and 0 <= size <= room:
            return self._gzip.read(size)
        data = self._gzip.read(room)
        if self._gzip.read(1):  # more than the limit
            raise self.refusal()
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._gzip.tell() + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target > self._limit:
            raise self.refusal()
        return self._gzip.seek(target)

    def tell(self) -> int:
        return self._gzip.tell()


def extract_member(archive: bytes) -> bytes:
    """The booster inside a ``model.tar.gz`` (``extract_named_member``'s bytes)."""
    return extract_named_member(archive)[1]


def extract_named_member(archive: bytes) -> tuple[str, bytes]:
    """The booster inside a ``model.tar.gz`` and its member's name: ``xgboost-model`` if present,
    else the only regular file (ignoring hidden files), as the platform's container takes any
    one file. An ``xgboost-model`` that is a link (``ln -s model.ubj xgboost-model``) is read
    as the regular file it leads to inside the archive, as the container's open follows it; a
    link out of the archive is refused, never followed. Members are read, never extracted to
    disk; the archive unpacks to at most ``MAX_MODEL_BYTES`` (what a bare model may be) in at most
    ``MAX_ARCHIVE_MEMBERS`` members, or it is refused before more is read."""
    unpacked = _Unpacked(archive, MAX_MODEL_BYTES)
    try:
        with tarfile.open(fileobj=cast(IO[bytes], unpacked), mode="r:") as tar:
            files: list[tarfile.TarInfo] = []
            links: list[tarfile.TarInfo] = []
            count = 0
            while (member := tar.next()) is not None:
                count += 1
                if count > MAX_ARCHIVE_MEMBERS:
                    raise ModelLoadError(
                        f"model archive holds more than {MAX_ARCHIVE_MEMBERS} members"
                    )
                if member.isfile():
                    if member.size > MAX_MODEL_BYTES:  # a sparse member's size is unpacked
                        raise unpacked.refusal()
                    files.append(member)
                elif (member.issym() or member.islnk()) and _is_platform_member(member.name):
                    links.append(member)
                elif _is_platform_member(member.name) and not member.isdir():
                    raise ModelLoadError(
                        f"model.tar.gz's member {member.name!r} is {_member_kind(member)}: "
                        "the model must be a regular file in the archive"
                    )
            named = [m for m in files if _is_platform_member(m.name)]
            named = named or [_link_target(link, files) for link in links]
            candidates = named or [
                m for m in files if not m.name.rsplit("/", 1)[-1].startswith(".")
            ]
            if len(candidates) != 1:
                names = ", ".join(m.name for m in files) or "none"
                raise ModelLoadError(
                    f"model.tar.gz must hold the member {PLATFORM_MEMBER!r} or exactly one model "
                    f"file; found: {names}"
                )
            handle = tar.extractfile(candidates[0])
            if handle is None:
                raise ModelLoadError(f"cannot read {candidates[0].name} from the archive")
            return candidates[0].name, handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelLoadError(f"model archive is not a readable tar.gz: {exc}") from exc


def read_artifact(uri: str, storage: Storage) -> tuple[bytes, str | None]:
    """The raw booster bytes behind a model URI (unpacked when it is a tar.gz), and the
    archive member they came from (None: the file itself)."""
    try:
        data = storage.get_bytes(uri, limit=MAX_MODEL_BYTES)
    except StorageError as exc:
        raise ModelLoadError(f"cannot read model {uri}: {exc}") from exc
    if not data:
        raise ModelLoadError(f"model {uri} is empty")
    if not _is_gzip_tar(data):
        return data, None
    member, model = extract_named_member(data)
    return model, member


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def guessed_source(uri: str, member: str | None) -> str | None:
    """What a load failure must say was read as the model, where that was a guess: the one
    file of an archive without ``xgboost-model``, or a file named as an archive that is not
    one (read as a bare model). None: what was read is what was asked for."""
    if member is not None and not _is_platform_member(member):
        return (
            f"model.tar.gz holds no {PLATFORM_MEMBER!r}; its one file, {member!r}, was read as "
            "the model"
        )
    if member is None and uri.lower().endswith(ARCHIVE_SUFFIXES):
        return (
            f"model {uri} is named as a .tar.gz but is not a gzip archive (it does not start "
            "with 1f 8b), so it was read as a bare model"
        )
    return None


MAX_FEATURES = 1 << 24
"""Rows are decoded dense, so a model's feature count bounds every row's memory: a corrupt
header (one flipped byte of a legacy model's ``num_feature``) must not ask for gigabytes."""


def booster_from_bytes(data: bytes, allow_pickle: bool = False) -> NativeBooster:
    """Build a booster from raw model bytes in any accepted format."""
    kind = sniff_format(data)
    if kind is ModelFormat.PICKLE:
        data = _model_from_pickle(data, allow_pickle)
        kind = sniff_format(data)
    if kind is ModelFormat.LEGACY_BINARY:
        try:
            data = legacy_to_json(data)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"the model is not XGBoost JSON or UBJ, and not a readable legacy binary model "
                f"either: {exc}"
            ) from exc
    check_nesting(data, kind)
    try:
        booster = NativeBooster(data)
    except ModelLoadError as exc:
        raise ModelLoadError(f"not a loadable XGBoost {kind} model: {exc}") from exc
    if booster.num_features > MAX_FEATURES:
        raise ModelLoadError(
            f"the model declares {booster.num_features} features; rows are scored dense, and "
            f"infermodes serves at most {MAX_FEATURES} features (a {MAX_FEATURES * 4 >> 20} MiB "
            "row): a corrupt or foreign model?"
        )
    try:  # what XGBoost loads may still fail every prediction (a corrupt legacy tree count)
        booster.predict(np.zeros((1, booster.num_features), dtype=np.float32))
    except RuntimeError as exc:
        raise ModelLoadError(f"the {kind} model loads but cannot predict: {exc}") from exc
    return booster


PICKLE_OPT_INS = (
    "or, if you trust its source: for an endpoint (a manifest or a custom resource), "
    "spec.model.allowPickle: true, which a cluster's operator takes only with the chart's "
    "operator.allowPickle; for infermodes serve or infermodes batch, --allow-pickle "
    "(INFERMODES_SERVE_ALLOW_PICKLE, INFERMODES_BATCH_ALLOW_PICKLE); the platform API's "
    "CreateModel has no such setting, so re-saving is the only way there"
)
"""Every opt-in there is, in the one refusal: the process that refuses cannot tell which way
its user came (the operator and ``up`` pass the spec's ``allowPickle`` to it as the setting)."""


def _model_from_pickle(data: bytes, allow_pickle: bool) -> bytes:
    """A Booster pickle's model, read without running it; other pickles only with the opt-in."""
    try:
        return booster_model_from_pickle(data)
    except PickleRefused as exc:
        if not allow_pickle:
            raise ModelLoadError(
                f"the model is a Python pickle that is not an XGBoost Booster's: {exc}. "
                "Unpickling an untrusted artifact runs arbitrary code, so it is refused. Re-save "
                f"it with Booster.save_model('model.json' or 'model.ubj'); {PICKLE_OPT_INS}"
            ) from exc
    return _unpickle_to_ubj(data)


def _unpickle_to_ubj(data: bytes) -> bytes:
    """Unpickle (opt-in only) and re-serialise as UBJ for the native loader."""
    import pickle

    import xgboost

    try:
        obj = pickle.loads(data)  # noqa: S301 - only with an explicit opt-in
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle the model: {exc}") from exc
    if hasattr(obj, "get_booster"):
        obj = obj.get_booster()
    if not isinstance(obj, xgboost.Booster):
        raise ModelLoadError(f"the pickle holds a {type(obj).__name__}, not an XGBoost Booster")
    return bytes(obj.save_raw("ubj"))


def load_booster(uri: str, storage: Storage, allow_pickle: bool = False) -> NativeBooster:
    data, member = read_artifact(uri, storage)
    try:
        return booster_from_bytes(data, allow_pickle=allow_pickle)
    except ModelLoadError as exc:
        guess = guessed_source(uri, member)
        if guess is None:
            raise
        raise ModelLoadError(f"{guess}: {exc}") from exc
