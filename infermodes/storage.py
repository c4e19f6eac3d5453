"""Object storage over ``file://`` (or plain paths) and ``s3://``.

Payloads may be up to 1 GB, so the interface is streams: callers read and write in chunks
and nothing here reads a whole object into memory unless asked to (``get_bytes``).
Writes look atomic: a reader sees the old object or the whole new one, never a prefix. A file
being written is a hidden ``.<name>.<random>.partial`` beside its target (S3: an incomplete
multipart upload), invisible to ``list``; ``remove_partials`` clears those a killed writer left.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import math
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast
from urllib.parse import unquote

from infermodes.errors import InputNotAllowed, ObjectNotFound, StorageError

CHUNK_SIZE = 1024 * 1024
MULTIPART_CHUNK = 8 * CHUNK_SIZE  # S3 parts are at least 5 MiB (but the last)
MIN_PART = 5 * CHUNK_SIZE  # S3's smallest part but the last, copied or uploaded
MAX_COPY_PART = 5 * 1024 * CHUNK_SIZE  # S3's largest part copy (UploadPartCopy)
PARTIAL_SUFFIX = ".partial"


class NotAFile(StorageError):
    """The URI names a directory, a device or a pipe: a mistake of whoever gave it, which no
    retry mends."""

    status_code = 400


class StorageRefused(StorageError):
    """The store refuses this process the object: no credentials, or credentials it does not
    take or that may not reach that object. No retry mends it (an async request ends at once,
    not after its every attempt)."""

    status_code = 403


class UnusableLocation(StorageError):
    """The URI names what the store cannot hold or does not take: a name too long, a path
    through a file, a key an S3 server refuses. A mistake of whoever gave it (the spec's
    path, a request's location), which no retry mends."""

    status_code = 400


# errno of a file operation no retry mends: the file system refuses this process, or the name
REFUSED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
UNUSABLE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP})


def one_error(what: str, failures: list[StorageError]) -> StorageError:
    """Several failures of one pass as one error: the first's words, and how many more."""
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return StorageError(f"{what}: {failures[0]}{more}")


def file_error(action: str, uri: str, exc: OSError) -> StorageError:
    """An OSError on a file as the storage error that says whether a retry can mend it (a
    full disk, an I/O error may mend; a refusal or an unusable name does not)."""
    message = f"cannot {action} {uri}: {exc.strerror or exc}"
    if exc.errno in REFUSED_ERRNOS:
        return StorageRefused(message)
    if exc.errno in UNUSABLE_ERRNOS:
        return UnusableLocation(message)
    return StorageError(message)


# S3's error codes of a refusal (AWS's and S3-compatible servers')
S3_REFUSALS = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
    "AccountProblem", "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "403",
})  # fmt: skip
# S3's error codes of a name the store never takes, whoever asks (AWS's and S3-compatible
# servers'), and of a request it never takes: a read of a location a caller gave (SeaweedFS
# answers InvalidRequest to a key with a '..' segment). On a write, which the caller names only
# by its prefix, the request's codes say how the store wants writes made (encryption, Object
# Lock's checksums): the operator's to mend, a StorageError, not the caller's 400.
S3_UNUSABLE_NAMES = frozenset({
    "KeyTooLongError", "InvalidBucketName", "InvalidObjectName", "InvalidURI",
})  # fmt: skip
S3_UNUSABLE_READS = frozenset({"InvalidRequest", "InvalidArgument"})


@dataclass(frozen=True)
class ObjectRef:
    """A parsed storage URI: ``scheme`` is ``file`` or ``s3``."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The URI ``parse_uri`` reads back as this object: a file path's '%' (and '?', '#',
        which URI readers take for a query or fragment) percent-encoded; an S3 key as is."""
        if self.scheme == "file":
            quoted = self.key.replace("%", "%25").replace("?", "%3F").replace("#", "%23")
            return f"file://{quoted}"
        return f"s3://{self.bucket}/{self.key}"


def parse_uri(uri: str) -> ObjectRef:
    """Parse ``file:///abs/path`` (percent-decoded, as file URIs are), a plain path, or
    ``s3://bucket/key`` (the key as written: S3 decodes nothing). Nothing after a '?' or '#'
    is dropped as a query or fragment: an object may have them in its name, and a name read
    back as another object's would read or overwrite that one."""
    if not uri:
        raise StorageError("empty storage URI")
    if "://" not in uri:
        return ObjectRef("file", "", str(Path(uri).resolve()))
    scheme, rest = uri.split("://", 1)
    if scheme.lower() == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise StorageError(f"file URI must be file:///absolute/path, got {uri!r}")
        return ObjectRef("file", "", _file_path(uri, path))
    if scheme.lower() == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise StorageError(f"s3 URI has no bucket: {uri!r}")
        return ObjectRef("s3", bucket, key.lstrip("/"))
    raise StorageError(
        f"unsupported storage scheme {scheme.lower()!r} in {uri!r} (use file:// or s3://)"
    )


def _file_path(uri: str, path: str) -> str:
    """The path a ``file://`` URI names, percent-decoded: refused when it decodes to what no
    file name holds (a NUL), or to bytes that are not UTF-8 (read as U+FFFD, it would name
    another file)."""
    try:
        decoded = unquote("/" + path, errors="strict")
    except UnicodeDecodeError:
        raise StorageError(f"file URI {uri!r} percent-encodes bytes that are not UTF-8") from None
    if "\x00" in decoded:
        raise StorageError(f"file URI {uri!r} has a NUL (%00), which no file name holds")
    return decoded


def normalised(uri: str) -> ObjectRef:
    """``uri`` parsed, a file path with ``.``, ``..`` and repeated '/' resolved (S3 keys are
    taken as written: they name distinct objects); raises StorageError."""
    ref = parse_uri(uri)
    return ObjectRef("file", "", posixpath.normpath(ref.key)) if ref.scheme == "file" else ref


def resolved(uri: str) -> str:
    """A normalised ``uri`` as a store that resolves its key would read it: S3 takes ``.``,
    ``..`` and empty segments as written, but S3-compatible servers may not (SeaweedFS reads
    ``a//b`` as ``a/b``)."""
    ref = parse_uri(uri)
    if ref.scheme != "s3" or not ref.key:
        return ref.uri
    return ObjectRef("s3", ref.bucket, posixpath.normpath("/" + ref.key).lstrip("/")).uri


def prefix_base(prefix: str) -> str:
    """A prefix written as a spec or setting allows (``FILE:///...``, ``file://localhost/...``,
    ``S3://...``) spelt as normalised URIs are: no trailing '/' but at the root (``file:///``).
    A scheme alone (``s3://``: any bucket) is taken as written."""
    try:
        return normalised(prefix).uri
    except StorageError:
        return prefix


def dot_segment(uri: str) -> str | None:
    """The first ``.`` or ``..`` segment of a parsed ``uri`` (``ObjectRef.uri``), None when it
    has none: an S3 key keeps them as written, and an S3-compatible server or a proxy may
    resolve them, as a file path's are resolved when it is opened, so one location has two
    spellings that compare unequal."""
    return next((part for part in uri.split("/")[3:] if part in (".", "..")), None)


def dotted(uri: str) -> bool:
    """Whether a normalised ``uri`` has a ``.`` or ``..`` segment (``dot_segment``; file
    paths have none left)."""
    return dot_segment(uri) is not None


def lies_under(uri: str, base: str) -> bool:
    """Whether a normalised ``uri`` names something under ``base`` (from ``prefix_base``); a
    ``dotted`` one lies under nothing."""
    return not dotted(uri) and uri.startswith(base.rstrip("/") + "/")


def prefix_within(prefix: str, folder: str) -> bool:
    """Whether all a listing of ``prefix`` finds lies under ``folder``, or it is ``folder``
    itself: an S3 prefix is a prefix of keys as written (``s3://b/data`` lists ``data-2024/``
    too), a file:// one (or a path) a folder, compared as this machine's file system resolves
    both (``.``, ``..``, repeated '/' and symbolic links: a folder reached by another name is
    the same folder). False when either names no storage."""
    try:
        given, outer = _real(parse_uri(prefix)), _real(parse_uri(folder))
    except StorageError:
        return False
    listed = given.uri if given.scheme == "s3" else given.uri.rstrip("/") + "/"
    return listed.startswith(outer.uri.rstrip("/") + "/") or listed == outer.uri


def _real(ref: ObjectRef) -> ObjectRef:
    """A file path as the file system resolves it (the part that exists; the rest
    normalised); an S3 key as written."""
    return ObjectRef("file", "", os.path.realpath(ref.key)) if ref.scheme == "file" else ref


def folder_uri(path: str) -> str | None:
    """A folder path as normalised URIs spell what lies in it (ending in '/'); None when it is
    not a storage URI."""
    try:
        return normalised(path).uri.rstrip("/") + "/"
    except StorageError:
        return None


def file_in_the_way(folder: str) -> str | None:
    """The path of a file that stands where the ``file://`` folder ``folder`` (or the nearest
    of its ancestors that exists) should be a folder: no object can be written under it, and
    this is sure without writing. None when nothing is found in the way (an S3 folder, or a
    file path whose nearest existing ancestor is a folder, or one that cannot be looked at)."""
    try:
        ref = normalised(folder)
    except StorageError:
        return None
    if ref.scheme != "file":
        return None
    for path in (ref.key, *map(str, Path(ref.key).parents)):
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there yet (or under a file): its ancestor says
        except OSError:
            return None  # cannot be looked at: writing will say
        return None if stat.S_ISDIR(info.st_mode) else path
    return None


def join_uri(prefix: str, name: str) -> str:
    """``join_uri("s3://b/out", "x.out") == "s3://b/out/x.out"``; works for paths too."""
    return prefix.rstrip("/") + "/" + name.lstrip("/")


class ObjectStore(Protocol):
    """What async and batch need from storage."""

    def open_read(
        self, ref: ObjectRef, start: int = 0, within: ObjectRef | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def open_write(
        self, ref: ObjectRef, content_type: str | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def create(
        self, ref: ObjectRef, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool: ...
    def exists(self, ref: ObjectRef) -> bool: ...
    def modified(self, ref: ObjectRef) -> float | None: ...
    def size(self, ref: ObjectRef) -> int: ...
    def list(self, prefix: ObjectRef) -> Iterator[ObjectRef]: ...
    def list_stats(
        self, prefix: ObjectRef, shallow: bool = False
    ) -> Iterator[tuple[ObjectRef, float, int]]: ...
    def delete(self, ref: ObjectRef) -> None: ...
    def remove_partials(
        self, prefix: ObjectRef, before: float, owned: Callable[[str], bool]
    ) -> int: ...


def _outside(ref: ObjectRef, within: ObjectRef) -> InputNotAllowed:
    return InputNotAllowed(f"{ref.uri} is not under {within.uri}")


def partial_target(name: str) -> str | None:
    """The name of the object a partial file ``.<name>.<random>.partial`` was writing (None
    for any other name): ``tempfile.mkstemp``'s random part holds no '.'."""
    if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)):
        return None
    target, dot, _random = name[1 : -len(PARTIAL_SUFFIX)].rpartition(".")
    return target if dot and target else None


def _link_new(partial: str, name: str) -> None:
    """Give a complete partial file a name that must not exist yet (FileExistsError)."""
    os.link(partial, name)
    os.unlink(partial)


def _sync_folders(target: Path, created: list[Path]) -> None:
    """Make a new name durable: the file's own fsync does not cover its entry in the folder
    (nor the entries of folders this write created), which a power loss could otherwise undo
    after the caller was told the object is stored (an acknowledged async result, say)."""
    for folder in [target.parent, *(made.parent for made in created)]:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.cache
def object_mode() -> int:
    """The mode of every object written: what ``open()`` would create under the process's
    umask (0644 under the usual 022), so a reader of another user (a job reading outputs
    from a shared volume) can read them when the umask allows it. Read from /proc, as
    ``os.umask`` can only be read by setting it, which other threads would see."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # no /proc, or a kernel before 4.7
        umask = 0o077
    return 0o666 & ~umask


def _make_folders(ref: ObjectRef) -> list[Path]:
    """Make the folders an object's file needs; returns those made, outermost first."""
    target = Path(ref.key)
    try:
        if target.parent.is_dir():
            return []
        created = [folder for folder in target.parents if not folder.exists()][::-1]
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # not the object's: a file where a folder would be
        in_the_way = f"cannot write {ref.uri}: a file is in the way of its folder"
        raise UnusableLocation(in_the_way) from None
    except FileNotFoundError:  # parents are made as needed and we remove none: a file system
        # that makes no folder there (/proc, /sys), which no retry mends
        no_folder = f"cannot write {ref.uri}: the file system makes no folder there"
        raise UnusableLocation(no_folder) from None
    except OSError as exc:
        raise file_error("write", ref.uri, exc) from exc
    return created


class FileStore:
    """Local files. Writes go to a temporary name in the same folder, then ``os.replace``;
    the file and then its folder are fsynced before a write returns."""

    @contextlib.contextmanager
    def open_read(
        self, ref: ObjectRef, start: int = 0, within: ObjectRef | None = None
    ) -> Iterator[IO[bytes]]:
        """Only regular files. ``within``: the file actually opened must lie under this
        prefix's real path, checked on the open descriptor, so neither a symbolic link (to a
        file or a folder, swapped in at any time) nor ``..`` leads elsewhere. O_NONBLOCK: a
        named pipe must not hang the reader before it is refused (regular files ignore it)."""
        try:
            fd = os.open(ref.key, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):  # as exists() says: a path through a file
            raise ObjectNotFound(f"no such object: {ref.uri}") from None
        except OSError as exc:
            raise file_error("read", ref.uri, exc) from exc
        try:
            # where it leads first: a link to /dev/zero leads out of the prefix, as any other
            if within is not None and not _under(_opened_path(fd), os.path.realpath(within.key)):
                raise _outside(ref, within)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotAFile(f"{ref.uri} is a directory or a special file, not an object")
        except BaseException:
            os.close(fd)
            raise
        # from here the file object alone closes the descriptor: closing it here too after an
        # exception (a SIGTERM's) could close another thread's file that got its number since
        with os.fdopen(fd, "rb") as handle:
            if start:
                try:
                    handle.seek(start)
                except OSError as exc:  # a file that is not one: /proc's say
                    raise StorageError(f"cannot read {ref.uri} from byte {start}: {exc}") from exc
            yield handle

    def open_write(
        self, ref: ObjectRef, content_type: str | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """``content_type``: a file has none to keep."""
        return self._published(ref, os.replace)

    @contextlib.contextmanager
    def _published(
        self,
        ref: ObjectRef,
        publish: Callable[[str, str], None],
        durable: bool = True,
        private: bool = False,
    ) -> Iterator[IO[bytes]]:
        """A partial file to write, fsynced when the block ends (if ``durable``), then given
        the object's name by ``publish`` (``os.replace``, or ``_link_new``), which consumes the
        partial file, and the name fsynced; on any failure the partial file is removed. Its
        mode is ``object_mode()``'s, or 0600 if ``private``."""
        fd, tmp_name, created = self._partial(ref)
        try:
            with os.fdopen(fd, "wb") as handle:
                if not private:  # mkstemp's 0600 is for temporary files
                    os.fchmod(fd, object_mode())
                yield handle
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            try:
                publish(tmp_name, ref.key)
                if durable:
                    _sync_folders(Path(ref.key), created)
            except FileExistsError:  # _link_new's answer: the object exists
                raise
            except OSError as exc:
                raise file_error("write", ref.uri, exc) from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def _partial(self, ref: ObjectRef) -> tuple[int, str, list[Path]]:
        """A new hidden file beside the target, named so that ``remove_partials`` knows it;
        also the folders made for it, outermost first."""
        target = Path(ref.key)
        created = _make_folders(ref)
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent
            )
        except OSError as exc:
            raise file_error("write", ref.uri, exc) from exc
        return fd, name, created

    def create(
        self, ref: ObjectRef, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool:
        """Write a new object whole, unless one exists (then False): a hard link of a complete
        temporary file, so a concurrent reader never sees it half written; an empty object,
        which cannot be seen half written, in one exclusive create. Not ``durable``: without
        the fsyncs, for a marker a power loss may take. ``content_type``: a file has none."""
        try:
            if data:
                with self._published(ref, _link_new, durable) as handle:
                    handle.write(data)
            else:
                created = _make_folders(ref)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                os.close(os.open(ref.key, flags, object_mode()))  # not executable
                if durable:
                    _sync_folders(Path(ref.key), created)
        except FileExistsError:
            return False
        except OSError as exc:
            raise file_error("write", ref.uri, exc) from exc
        return True

    def exists(self, ref: ObjectRef) -> bool:
        try:
            return Path(ref.key).is_file()
        except OSError as exc:  # a name too long, say: is_file passes only "no such file"
            raise file_error("read", ref.uri, exc) from exc

    def modified(self, ref: ObjectRef) -> float | None:
        """When the object was last written (the store's clock, seconds since the epoch); None
        when there is none."""
        try:
            found = os.stat(ref.key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise file_error("read", ref.uri, exc) from exc
        return found.st_mtime if stat.S_ISREG(found.st_mode) else None

    def size(self, ref: ObjectRef) -> int:
        try:
            return Path(ref.key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):  # as exists() says
            raise ObjectNotFound(f"no such object: {ref.uri}") from None
        except OSError as exc:
            raise file_error("read", ref.uri, exc) from exc

    def list(self, prefix: ObjectRef) -> Iterator[ObjectRef]:
        """Objects whose path starts with the prefix, sorted; hidden (partial) files are
        skipped."""
        for path, name in _walk(prefix.key):
            if not name.startswith("."):
                yield ObjectRef("file", "", path)

    def list_stats(
        self, prefix: ObjectRef, shallow: bool = False
    ) -> Iterator[tuple[ObjectRef, float, int]]:
        """``list`` with each object's modification time and size; ``shallow``: only the
        files directly in the folder ``prefix`` names (a sweep of a folder that may be a
        whole file system's root)."""
        refs = self._folder(prefix) if shallow else self.list(prefix)
        for ref in refs:
            try:
                found = os.stat(ref.key)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise file_error("read", ref.uri, exc) from exc
            yield ref, found.st_mtime, found.st_size

    def _folder(self, prefix: ObjectRef) -> Iterator[ObjectRef]:
        for entry in _entries(prefix):
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                yield ObjectRef("file", "", entry.path)

    def delete(self, ref: ObjectRef) -> None:
        try:
            os.unlink(ref.key)
        except (FileNotFoundError, NotADirectoryError):  # as exists() says: no such object
            pass
        except OSError as exc:  # a refusal, a folder: a storage error, as every call raises
            raise file_error("delete", ref.uri, exc) from exc

    def remove_partials(
        self, prefix: ObjectRef, before: float, owned: Callable[[str], bool]
    ) -> int:
        """Remove the partial files of writers that died, last written to before ``before``,
        directly in the folder ``prefix`` names, of the targets whose names ``owned`` takes."""
        removed, refused = 0, []
        for entry in _entries(prefix):
            target = partial_target(entry.name)
            if target is not None and owned(target):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < before:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:  # the others are still removed
                    refused.append(file_error("delete", ObjectRef("file", "", entry.path).uri, exc))
        if refused:  # of the first one's kind: a refusal does not mend by retrying
            raise type(refused[0])(
                f"removed {removed} partial file(s); {len(refused)} could not be: {refused[0]}"
            )
        return removed


def write_local(path: Path, data: bytes) -> None:
    """A local file written as every ``file://`` object is, whole and durably (a partial file
    fsynced, renamed over it, its folder fsynced): for state a process reads back after a crash
    or a power loss (``infermodes up``'s state dir), readable by this user alone (a platform
    record may hold a container's environment). Raises StorageError."""
    with FileStore()._published(
        ObjectRef("file", "", str(path)), os.replace, private=True
    ) as handle:
        handle.write(data)


def _entries(prefix: ObjectRef) -> list[os.DirEntry[str]]:
    """What the folder ``prefix`` names holds directly, by name (none when it is no folder)."""
    try:
        return sorted(os.scandir(prefix.key), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise file_error("list", prefix.uri, exc) from exc


def _walk(prefix: str) -> Iterator[tuple[str, str]]:
    """(path, file name) of every file whose path starts with ``prefix``, sorted."""
    base = Path(prefix)
    try:
        root = base if base.is_dir() else base.parent
        if not root.is_dir():
            return
    except OSError as exc:  # a name too long, say: is_dir passes only "no such file"
        raise file_error("list", f"file://{prefix}", exc) from exc
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path.startswith(prefix):
                yield path, name


def _opened_path(fd: int) -> str:
    """The real path of an open file (Linux, where infermodes runs: pods and hosts alike)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _under(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")


def s3_error_code(exc: Exception) -> str:
    """The error code S3 answered with; "" for a failure with no answer: botocore's
    connection errors carry ``response = None`` (a connection closed before the answer)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Store:
    """S3 or any S3-compatible store. boto3 reads the endpoint and credentials from the standard
    AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...): nothing to configure here.
    """

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # deferred: boto3 costs ~0.3 s to import and file:// users never need it

            self._client = boto3.client("s3")
        return self._client

    def _translate(self, exc: Exception, ref: ObjectRef, writing: bool = False) -> StorageError:
        """``writing``: a bucket that does not exist cannot hold what is written (a mistake
        of the location, which no retry mends); read, it holds no such object."""
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        code = s3_error_code(exc)
        if writing and code == "NoSuchBucket":
            return UnusableLocation(
                f"s3 cannot hold {ref.uri}: the bucket {ref.bucket} does not exist"
            )
        if code == "NoSuchBucket":  # said so: the key is not what to look at
            return ObjectNotFound(
                f"no such object: {ref.uri} (the bucket {ref.bucket} does not exist)"
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(f"no such object: {ref.uri}")
        if code in S3_REFUSALS or isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageRefused(f"s3 refused access to {ref.uri}: {exc}")
        if code in S3_UNUSABLE_NAMES or (code in S3_UNUSABLE_READS and not writing):
            what = "cannot hold" if writing else "does not take the location"
            return UnusableLocation(f"s3 {what} {ref.uri}: {exc}")
        return StorageError(f"s3 error on {ref.uri}: {exc}")

    @contextlib.contextmanager
    def open_read(
        self, ref: ObjectRef, start: int = 0, within: ObjectRef | None = None
    ) -> Iterator[IO[bytes]]:
        """``within``: the key must lie under this prefix (S3 keys are plain names: no links,
        no ``..``)."""
        if within is not None and (ref.bucket != within.bucket or not _under(ref.key, within.key)):
            raise _outside(ref, within)
        extra = {"Range": f"bytes={start}-"} if start else {}
        try:
            body = self.client.get_object(Bucket=ref.bucket, Key=ref.key, **extra)["Body"]
        except Exception as exc:
            raise self._translate(exc, ref) from exc
        try:
            yield body
        finally:
            body.close()

    @contextlib.contextmanager
    def open_write(self, ref: ObjectRef, content_type: str | None = None) -> Iterator[IO[bytes]]:
        """Stream parts of a multipart upload as they fill (a single PUT when small), so memory
        and local disk stay at one part whatever the size. The object appears only when the
        upload completes at the end; on any failure the upload is aborted and nothing appears.
        ``content_type``: the object's ``Content-Type`` (else the store guesses one)."""
        writer = _MultipartWriter(self.client, ref, content_type)
        try:
            yield cast(IO[bytes], writer)
            writer.finish()
        except BaseException as exc:
            writer.abort()
            if writer.failed and isinstance(exc, Exception):
                raise self._translate(exc, ref, writing=True) from exc
            raise

    def create(
        self, ref: ObjectRef, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool:
        """A conditional PUT (``If-None-Match: *``): False when the key exists. Always
        durable. ``content_type``: as ``open_write``'s."""
        typed = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(
                Bucket=ref.bucket, Key=ref.key, Body=data, IfNoneMatch="*", **typed
            )
        except Exception as exc:
            code = s3_error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise self._translate(exc, ref, writing=True) from exc
        return True

    def exists(self, ref: ObjectRef) -> bool:
        try:
            self.size(ref)
        except ObjectNotFound:
            return False
        return True

    def modified(self, ref: ObjectRef) -> float | None:
        try:
            head = self.client.head_object(Bucket=ref.bucket, Key=ref.key)
        except Exception as exc:
            translated = self._translate(exc, ref)
            if isinstance(translated, ObjectNotFound):
                return None
            raise translated from exc
        return float(head["LastModified"].timestamp())

    def size(self, ref: ObjectRef) -> int:
        try:
            return int(self.client.head_object(Bucket=ref.bucket, Key=ref.key)["ContentLength"])
        except Exception as exc:
            raise self._translate(exc, ref) from exc

    def list(self, prefix: ObjectRef) -> Iterator[ObjectRef]:
        for ref, _modified, _size in self.list_stats(prefix):
            yield ref

    def list_stats(
        self, prefix: ObjectRef, shallow: bool = False
    ) -> Iterator[tuple[ObjectRef, float, int]]:
        """Times and sizes come with the listing: no request per object; ``shallow``: only
        the keys with no '/' after the prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        more = {"Delimiter": "/"} if shallow else {}
        try:
            for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key, **more):
                for item in page.get("Contents", []):
                    ref = ObjectRef("s3", prefix.bucket, item["Key"])
                    yield ref, item["LastModified"].timestamp(), int(item["Size"])
        except Exception as exc:
            raise self._translate(exc, prefix) from exc

    def remove_partials(
        self, prefix: ObjectRef, before: float, owned: Callable[[str], bool]
    ) -> int:
        """Abort the multipart uploads of writers that died (started before ``before``): S3
        keeps, and bills, their parts until then. Only uploads of keys directly under the
        prefix whose names ``owned`` takes: the bucket may hold other writers' uploads."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        removed = 0
        try:
            pages = paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key, Delimiter="/")
            for page in pages:
                for upload in page.get("Uploads", []):
                    name = str(upload["Key"]).removeprefix(prefix.key)
                    if "/" in name or not owned(name):
                        continue
                    if upload["Initiated"].timestamp() < before:
                        self.client.abort_multipart_upload(
                            Bucket=prefix.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        except Exception as exc:
            raise self._translate(exc, prefix) from exc
        return removed

    def delete(self, ref: ObjectRef) -> None:
        try:
            self.client.delete_object(Bucket=ref.bucket, Key=ref.key)
        except Exception as exc:
            raise self._translate(exc, ref) from exc

    def concatenate(
        self, sources: Sequence[ObjectRef], target: ObjectRef, content_type: str | None = None
    ) -> bool:
        """Write ``target`` as ``sources`` one after the other, copied by the store itself (a
        multipart upload of UploadPartCopy parts of at most 5 GiB), so no byte of them passes
        through this process; completed only at the end, aborted on any failure. False, with
        nothing written, when S3's rule that every part but the last holds at least 5 MiB does
        not allow it (a source but the last under 5 MiB). ``content_type``: as ``open_write``'s."""
        sizes = [self.size(ref) for ref in sources]
        if not sources or any(size < MIN_PART for size in sizes[:-1]):
            return False
        pieces: list[tuple[ObjectRef, int, int]] = []  # (source, first byte, end)
        for ref, size in zip(sources, sizes, strict=True):
            count = max(1, math.ceil(size / MAX_COPY_PART))  # equal pieces: each >= 2.5 GiB
            bounds = [size * i // count for i in range(count + 1)]
            pieces += [(ref, bounds[i], bounds[i + 1]) for i in range(count) if bounds[i + 1]]
        upload_id: str | None = None
        try:
            typed = {"ContentType": content_type} if content_type else {}
            created = self.client.create_multipart_upload(
                Bucket=target.bucket, Key=target.key, **typed
            )
            upload_id = created["UploadId"]
            parts = []
            for number, (ref, first, end) in enumerate(pieces, 1):
                answer = self.client.upload_part_copy(
                    Bucket=target.bucket, Key=target.key, UploadId=upload_id,
                    PartNumber=number, CopySource={"Bucket": ref.bucket, "Key": ref.key},
                    CopySourceRange=f"bytes={first}-{end - 1}",
                )  # fmt: skip
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=target.bucket, Key=target.key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )  # fmt: skip
        except BaseException as exc:
            if upload_id is not None:
                with contextlib.suppress(Exception):  # the original error matters more
                    self.client.abort_multipart_upload(
                        Bucket=target.bucket, Key=target.key, UploadId=upload_id
                    )
            if isinstance(exc, Exception):
                raise self._translate(exc, target, writing=True) from exc
            raise
        return True


class _MultipartWriter(io.RawIOBase):
    """The file-like side of ``S3Store.open_write``. Parts are 8 MiB, growing by 8 MiB every
    1000 parts, so S3's 10,000-part limit allows objects of several hundred GB."""

    def __init__(self, client: Any, ref: ObjectRef, content_type: str | None = None) -> None:
        self.client = client
        self.ref = ref
        # given when the object is created: by its one PUT, or by the upload that makes it
        self.typed = {"ContentType": content_type} if content_type else {}
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.failed = False  # an S3 call failed (rather than the caller's code)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        if len(self.buffer) >= MULTIPART_CHUNK * (1 + len(self.parts) // 1000):
            self._upload_part()
        return len(data)

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.ref.bucket, Key=self.ref.key, **kwargs)
        except Exception:
            self.failed = True
            raise

    def _upload_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self._call("create_multipart_upload", **self.typed)["UploadId"]
        number = len(self.parts) + 1
        answer = self._call(
            "upload_part", UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.buffer.clear()

    def finish(self) -> None:
        if self.upload_id is None:
            self._call("put_object", Body=bytes(self.buffer), **self.typed)
            return
        if self.buffer:
            self._upload_part()
        self._call(
            "complete_multipart_upload",
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        self.upload_id = None

    def abort(self) -> None:
        if self.upload_id is not None:
            with contextlib.suppress(Exception):  # the original error matters more
                self._call("abort_multipart_upload", UploadId=self.upload_id)
            self.upload_id = None


class Storage:
    """One entry point for every scheme: methods take URIs and pick the store."""

    def __init__(
        self, file_store: FileStore | None = None, s3_store: S3Store | None = None
    ) -> None:
        self._stores: dict[str, ObjectStore] = {
            "file": file_store or FileStore(),
            "s3": s3_store or S3Store(),
        }

    def _resolve(self, uri: str) -> tuple[ObjectStore, ObjectRef]:
        ref = parse_uri(uri)
        return self._stores[ref.scheme], ref

    def open_read(
        self, uri: str, start: int = 0, within: str | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """``start``: read from this byte offset on (a ranged GET on S3). ``within``: refuse
        (InputNotAllowed) an object that is not under this prefix, links resolved."""
        store, ref = self._resolve(uri)
        root = parse_uri(within) if within is not None else None
        if root is not None and root.scheme != ref.scheme:
            raise _outside(ref, root)
        return store.open_read(ref, start, root)

    def open_write(
        self, uri: str, content_type: str | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """``content_type``: the object's media type, where the store keeps one (S3)."""
        store, ref = self._resolve(uri)
        return store.open_write(ref, content_type)

    def create(
        self, uri: str, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool:
        """Write a new object whole unless one exists: True when this call created it (of
        two concurrent callers, exactly one wins). ``durable=False`` may skip making it
        survive a power loss (local files), never the exclusion. ``content_type``: as
        ``open_write``'s."""
        store, ref = self._resolve(uri)
        return store.create(ref, data, durable, content_type)

    def exists(self, uri: str) -> bool:
        store, ref = self._resolve(uri)
        return store.exists(ref)

    def modified(self, uri: str) -> float | None:
        """When the object was last written, by the store's clock; None when there is none."""
        store, ref = self._resolve(uri)
        return store.modified(ref)

    def size(self, uri: str) -> int:
        store, ref = self._resolve(uri)
        return store.size(ref)

    def list_folder_times(self, prefix_uri: str) -> list[tuple[str, float]]:
        """The objects directly in the folder ``prefix_uri`` names (a key with no further
        '/'), with their modification times (seconds since the epoch)."""
        store, ref = self._resolve(prefix_uri)
        stats = store.list_stats(ref, shallow=True)
        return [(item.uri, modified) for item, modified, _size in stats]

    def list_with_sizes(self, prefix_uri: str) -> list[tuple[str, int]]:
        """Objects under the prefix with their sizes in bytes, from the listing itself."""
        store, ref = self._resolve(prefix_uri)
        return [(item.uri, size) for item, _modified, size in store.list_stats(ref)]

    def list(self, prefix_uri: str) -> list[str]:
        store, ref = self._resolve(prefix_uri)
        return [item.uri for item in store.list(ref)]

    def delete(self, uri: str) -> None:
        store, ref = self._resolve(uri)
        store.delete(ref)

    def remove_partials(self, prefix_uri: str, before: float, owned: Callable[[str], bool]) -> int:
        """Remove what writers that died left directly under the folder ``prefix_uri`` names
        (partial files, incomplete multipart uploads), started or last written before
        ``before``, of the objects whose names ``owned`` takes; returns how many."""
        store, ref = self._resolve(prefix_uri)
        return store.remove_partials(ref, before, owned)

    def concatenate(
        self, sources: Sequence[str], target: str, content_type: str | None = None
    ) -> bool:
        """Write ``target`` as ``sources`` one after the other, whole or not at all (as
        ``open_write``, ``content_type`` too); True when the store copied them itself (S3,
        ``S3Store.concatenate``: no byte passes through this process), False when they were
        streamed through it."""
        store, ref = self._resolve(target)
        refs = [parse_uri(uri) for uri in sources]
        copyable = all(r.scheme == "s3" for r in refs)
        if isinstance(store, S3Store) and copyable and store.concatenate(refs, ref, content_type):
            return True
        with self.open_write(target, content_type) as sink:
            for uri in sources:
                with self.open_read(uri) as source:
                    shutil.copyfileobj(source, sink, CHUNK_SIZE)
        return False

    def remove_partials_of(self, uris: Iterable[str]) -> int:
        """Remove every partial write of the objects ``uris`` name (partial files, incomplete
        multipart uploads), however recent: for a caller that alone writes those objects and
        is not writing them now, so that any found is a dead writer's (a SIGKILLed batch
        instance's), which nothing else would ever remove. One sweep per folder; returns how
        many were removed. Raises StorageError once every folder was tried."""
        folders: dict[str, set[str]] = {}
        for uri in uris:
            ref = parse_uri(uri)
            head, slash, name = ref.key.rpartition("/")
            folder = ObjectRef(ref.scheme, ref.bucket, head + slash).uri
            folders.setdefault(folder, set()).add(name)
        removed, failures = 0, []
        for folder, names in sorted(folders.items()):
            try:
                removed += self.remove_partials(folder, math.inf, names.__contains__)
            except StorageError as exc:
                failures.append(exc)
        if failures:
            raise one_error(f"removed {removed} partial write(s)", failures)
        return removed

    def get_bytes(self, uri: str, limit: int | None = None) -> bytes:
        """Read a whole object; ``limit`` guards memory for objects that should be small."""
        with self.open_read(uri) as handle:
            data = handle.read(-1 if limit is None else limit + 1)
        if limit is not None and len(data) > limit:
            raise StorageError(f"{uri} is larger than {limit} bytes")
        return data

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        with self.open_write(uri, content_type) as handle:
            handle.write(data)

    def copy_to_file(self, uri: str, dest: Path) -> None:
        """Stream an object to a local file in chunks."""
        with self.open_read(uri) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK_SIZE)
