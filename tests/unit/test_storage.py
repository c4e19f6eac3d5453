import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from moto import mock_aws

from infermodes.errors import InputNotAllowed, ObjectNotFound, StorageError
from infermodes.storage import (
    MIN_PART,
    NotAFile,
    ObjectRef,
    S3Store,
    Storage,
    file_in_the_way,
    join_uri,
    object_mode,
    parse_uri,
    prefix_within,
    write_local,
)


def test_parse_uris(tmp_path: Path) -> None:
    assert parse_uri("s3://bucket/a/b.csv").bucket == "bucket"
    assert parse_uri("s3://bucket/a/b.csv").key == "a/b.csv"
    assert parse_uri("file:///tmp/x").key == "/tmp/x"
    assert parse_uri("relative/x").key == str(Path("relative/x").resolve())
    assert join_uri("s3://b/out/", "/id.out") == "s3://b/out/id.out"


@pytest.mark.parametrize("name", ["h#1.csv", "q?z.csv", "x%41.csv", "a b.csv", "run#1/c.csv"])
def test_a_name_with_uri_characters_reads_back_as_itself_not_another(name: str) -> None:
    """'#', '?' and '%XX' in a listed object's name used to make its URI name another object
    (``h#1.csv`` -> ``h``, ``x%41.csv`` -> ``xA.csv``), which was then read and overwritten."""
    for ref in (ObjectRef("file", "", f"/data/in/{name}"), ObjectRef("s3", "b", f"in/{name}")):
        assert parse_uri(ref.uri) == ref
    assert parse_uri("file:///data/run%231/a.csv").key == "/data/run#1/a.csv"
    assert parse_uri("s3://b/run%231/a.csv").key == "run%231/a.csv"  # S3 decodes nothing
    assert parse_uri("S3://b/k#x").key == "k#x"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://b/k", "unsupported storage scheme 'gs'"),
        ("s3:///k", "no bucket"),
        ("file://host/x", "file:///absolute/path"),
        ("", "empty"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        parse_uri(uri)


def test_file_roundtrip_listing_and_delete(tmp_path: Path) -> None:
    storage = Storage()
    base = f"file://{tmp_path}"
    storage.put_bytes(join_uri(base, "in/b.csv"), b"2")
    storage.put_bytes(join_uri(base, "in/a.csv"), b"1")
    storage.put_bytes(join_uri(base, "in/sub/c.csv"), b"3")
    storage.put_bytes(join_uri(base, "other.csv"), b"4")
    assert storage.list(join_uri(base, "in/")) == [
        f"{base}/in/a.csv",
        f"{base}/in/b.csv",
        f"{base}/in/sub/c.csv",
    ]
    assert storage.list(join_uri(base, "in/a")) == [f"{base}/in/a.csv"]
    assert storage.get_bytes(f"{base}/in/a.csv") == b"1"
    assert storage.size(f"{base}/in/a.csv") == 1
    storage.delete(f"{base}/in/a.csv")
    assert not storage.exists(f"{base}/in/a.csv")
    assert storage.list(join_uri(base, "missing/")) == []


def test_failed_write_leaves_old_object_and_no_temp(tmp_path: Path) -> None:
    storage = Storage()
    uri = f"file://{tmp_path}/out.bin"
    storage.put_bytes(uri, b"old")
    with pytest.raises(RuntimeError), storage.open_write(uri) as handle:
        handle.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert storage.get_bytes(uri) == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_streaming_copy_and_size_limit(tmp_path: Path) -> None:
    storage = Storage()
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (3 * 1024 * 1024 + 7))
    storage.copy_to_file(str(source), tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    with pytest.raises(StorageError, match="larger than 10 bytes"):
        storage.get_bytes(str(source), limit=10)


def test_missing_object(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="no such object"):
        Storage().get_bytes(f"file://{tmp_path}/nope")


def test_deleting_a_folder_is_a_storage_error_and_a_path_through_a_file_is_no_object(
    tmp_path: Path,
) -> None:
    """Every other call raises storage errors; a bare OSError from a delete ended the
    retention sweep's thread and looped an async request that had its output."""
    storage = Storage()
    (tmp_path / "folder.in").mkdir()
    with pytest.raises(StorageError, match=r"^cannot delete file://.*/folder\.in: "):
        storage.delete(f"file://{tmp_path}/folder.in")
    (tmp_path / "file").write_bytes(b"x")
    storage.delete(f"file://{tmp_path}/file/below")  # as exists() says: no such object
    storage.delete(f"file://{tmp_path}/missing")


def test_writes_in_progress_are_hidden_partial_files_that_list_never_shows(
    tmp_path: Path,
) -> None:
    storage = Storage()
    uri = f"file://{tmp_path}/out/x.out"
    with storage.open_write(uri) as handle:
        handle.write(b"half")
        [partial] = (tmp_path / "out").iterdir()
        assert partial.name.startswith(".x.out.") and partial.name.endswith(".partial")
        assert storage.list(f"file://{tmp_path}/out/") == []
        assert not storage.exists(uri)
    assert storage.list(f"file://{tmp_path}/out/") == [uri]


def test_remove_partials_takes_only_stale_partial_files_of_owned_names(tmp_path: Path) -> None:
    storage = Storage()
    (tmp_path / "sub").mkdir()
    stale, fresh = tmp_path / ".a.out.x1.partial", tmp_path / ".b.out.x2.partial"
    nested = tmp_path / "sub/.c.out.x3.partial"  # directly in the folder only
    another_writers = tmp_path / ".report.csv.x4.partial"
    hidden_but_not_partial, output = tmp_path / ".keep", tmp_path / "a.out"
    for path in (stale, fresh, nested, another_writers, hidden_but_not_partial, output):
        path.write_bytes(b"x")
        os.utime(path, (1000.0, 1000.0))
    os.utime(fresh, (5000.0, 5000.0))
    owned = lambda name: name.endswith(".out")  # noqa: E731
    assert storage.remove_partials(f"file://{tmp_path}/", before=2000.0, owned=owned) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        [".b.out.x2.partial", ".c.out.x3.partial", ".report.csv.x4.partial", ".keep", "a.out",
         "sub"]
    )  # fmt: skip
    assert storage.remove_partials(f"file://{tmp_path}/none/", 2000.0, owned) == 0
    deeper = tmp_path / "sub/deeper.out"
    deeper.write_bytes(b"yy")
    # the folder itself only (a sweep's); the whole tree under the prefix (a batch input's)
    assert storage.list_folder_times(f"file://{tmp_path}/") == [(f"file://{output}", 1000.0)]
    assert storage.list_with_sizes(f"file://{tmp_path}/") == [
        (f"file://{output}", 1),
        (f"file://{deeper}", 2),
    ]


def test_remove_partials_of_takes_every_partial_write_of_the_named_objects(
    tmp_path: Path,
) -> None:
    """However recent (a batch instance clears what its SIGKILLed predecessor left before it
    writes), in every folder the objects lie in, and nothing of other objects."""
    storage = Storage()
    (tmp_path / "sub").mkdir()
    mine = [tmp_path / ".a 100%.out.x1.partial", tmp_path / "sub/.b.out.x2.partial"]
    others = [tmp_path / ".c.out.x3.partial", tmp_path / "sub/.a 100%.out.x4.partial",
              tmp_path / "a 100%.out"]  # fmt: skip
    for path in mine + others:
        path.write_bytes(b"x")  # written just now
    named = [f"file://{tmp_path}/a 100%25.out", f"file://{tmp_path}/sub/b.out"]
    assert storage.remove_partials_of(named) == 2
    assert not any(path.exists() for path in mine)
    assert all(path.exists() for path in others)
    assert storage.remove_partials_of([f"file://{tmp_path}/none/x.out"]) == 0


@pytest.mark.parametrize("durable", [True, False])
def test_create_is_exclusive_even_when_racing(tmp_path: Path, durable: bool) -> None:
    """Without ``durable`` (no fsync) too: a reader sees a whole object or none."""
    storage = Storage()
    uri = f"file://{tmp_path}/r/id.request"
    contents = [f"writer {n}".encode() * 1000 for n in range(8)]
    barrier = threading.Barrier(len(contents))

    def create(data: bytes) -> bool:
        barrier.wait(10)
        return storage.create(uri, data, durable)

    with ThreadPoolExecutor(len(contents)) as pool:
        won = list(pool.map(create, contents))
    assert won.count(True) == 1
    assert storage.get_bytes(uri) == contents[won.index(True)]
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["id.request"]


@pytest.mark.parametrize("durable", [True, False])
def test_an_empty_object_is_created_once_in_a_new_folder(tmp_path: Path, durable: bool) -> None:
    storage = Storage()
    uri = f"file://{tmp_path}/new/deeper/id.result"
    barrier = threading.Barrier(8)

    def create(_: int) -> bool:
        barrier.wait(10)
        return storage.create(uri, b"", durable)

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(create, range(8)))
    assert won.count(True) == 1
    assert storage.get_bytes(uri) == b""
    assert [p.name for p in (tmp_path / "new/deeper").iterdir()] == ["id.result"]
    storage.create(f"file://{tmp_path}/whole.out", b"1")
    modes = {oct((tmp_path / name).stat().st_mode & 0o777) for name in ("new/deeper/id.result",
                                                                        "whole.out")}  # fmt: skip
    # not executable, as an open() without a mode would make it; readable as the umask says
    assert modes == {oct(object_mode())}


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_objects_are_written_with_the_mode_the_umask_gives(
    tmp_path: Path, umask: int, mode: int
) -> None:
    """Not mkstemp's 0600 whatever the umask: a job of another user reading the outputs from
    a shared volume could not read them."""
    object_mode.cache_clear()
    old = os.umask(umask)
    try:
        storage = Storage()
        storage.put_bytes(f"file://{tmp_path}/whole.out", b"1")
        storage.create(f"file://{tmp_path}/claim", b"")
        with storage.open_write(f"file://{tmp_path}/streamed.out") as sink:
            sink.write(b"2")
    finally:
        os.umask(old)
        object_mode.cache_clear()
    for name in ("whole.out", "claim", "streamed.out"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_local_state_is_written_for_its_user_alone(tmp_path: Path) -> None:
    """``up``'s state (a platform record may hold a container's environment) stays 0600."""
    old = os.umask(0o022)
    try:
        write_local(tmp_path / "state.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_a_directory_is_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(NotAFile, match="is a directory or a special file"):
        Storage().get_bytes(f"file://{tmp_path}")


def test_reads_within_a_prefix_follow_links_only_inside_it(tmp_path: Path) -> None:
    storage = Storage()
    inside, outside = tmp_path / "in", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (inside / "a.csv").write_bytes(b"a")
    (outside / "b.csv").write_bytes(b"b")
    (inside / "alias.csv").symlink_to(inside / "a.csv")
    (inside / "escape.csv").symlink_to(outside / "b.csv")
    within = f"file://{inside}"
    with storage.open_read(f"{within}/alias.csv", within=within) as handle:
        assert handle.read() == b"a"
    (inside / "zero").symlink_to("/dev/zero")  # a special file, outside: InvalidInput before
    (inside / "folder").symlink_to(outside)
    for name in ("escape.csv", "../elsewhere/b.csv", "zero", "folder"):
        with pytest.raises(InputNotAllowed, match=f"is not under {within}"):
            storage.open_read(f"{within}/{name}", within=within).__enter__()
    with pytest.raises(InputNotAllowed):
        storage.open_read("s3://b/in/x", within=within).__enter__()


@mock_aws
def test_s3_concatenates_parts_of_5_mib_and_more_by_the_store_s_copy() -> None:
    """The assembly of a split batch object: every part but the last at least 5 MiB (S3's
    smallest part), the store copies them, and no byte is read here; otherwise they stream
    through this process, as every assembly did."""
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="bkt")
    storage = Storage(s3_store=S3Store(client))
    big, small = bytes(range(256)) * (MIN_PART // 256 + 3), b"the last part\n"
    for key, data in (("a", big), ("b", big[::-1]), ("c", small), ("empty", b"")):
        client.put_object(Bucket="bkt", Key=f"out/x.out.{key}", Body=data)
    reads = []
    client.meta.events.register("before-call.s3.GetObject", lambda **kw: reads.append(kw))
    parts = [f"s3://bkt/out/x.out.{key}" for key in ("a", "b", "c")]
    assert storage.concatenate(parts, "s3://bkt/out/x.out")
    assert storage.concatenate([parts[0], "s3://bkt/out/x.out.empty"], "s3://bkt/out/e.out")
    assert reads == []
    assert storage.get_bytes("s3://bkt/out/x.out") == big + big[::-1] + small
    assert storage.get_bytes("s3://bkt/out/e.out") == big
    small_first = [f"s3://bkt/out/x.out.{key}" for key in ("c", "a")]
    assert not storage.concatenate(small_first, "s3://bkt/out/y.out")  # streamed
    assert storage.get_bytes("s3://bkt/out/y.out") == small + big
    with pytest.raises(ObjectNotFound):  # a part gone (another assembler's clean-up)
        storage.concatenate([parts[0], "s3://bkt/out/gone"], "s3://bkt/out/z.out")
    assert not storage.exists("s3://bkt/out/z.out")
    assert client.list_multipart_uploads(Bucket="bkt").get("Uploads", []) == []


@mock_aws
def test_s3_concatenation_keeps_the_content_type_it_is_given_copied_or_streamed() -> None:
    """A batch job's assembled ``.out`` was stored without one, whatever its ``accept``."""
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="bkt")
    storage = Storage(s3_store=S3Store(client))
    big, small = bytes(MIN_PART), b"{}\n"
    for key, data in (("a", big), ("b", small)):
        client.put_object(Bucket="bkt", Key=f"out/x.out.{key}", Body=data)
    parts = [f"s3://bkt/out/x.out.{key}" for key in ("a", "b")]
    assert storage.concatenate(parts, "s3://bkt/out/copied.out", "application/jsonlines")
    assert not storage.concatenate(parts[::-1], "s3://bkt/out/streamed.out", "application/json")
    typed = {
        key: client.head_object(Bucket="bkt", Key=f"out/{key}.out")["ContentType"]
        for key in ("copied", "streamed")
    }
    assert typed == {"copied": "application/jsonlines", "streamed": "application/json"}


@mock_aws
def test_s3_create_remove_partials_and_prefix_checks() -> None:
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bkt")
    storage = Storage(s3_store=S3Store(boto3.client("s3", region_name="us-east-1")))
    assert storage.create("s3://bkt/in/id.request", b"first")
    assert not storage.create("s3://bkt/in/id.request", b"second")
    assert storage.get_bytes("s3://bkt/in/id.request") == b"first"
    assert storage.create("s3://bkt/in/deeper/x.in", b"")
    [(uri, modified)] = storage.list_folder_times("s3://bkt/in/")
    assert uri == "s3://bkt/in/id.request" and abs(modified - time.time()) < 3600
    assert storage.list_with_sizes("s3://bkt/in/") == [("s3://bkt/in/deeper/x.in", 0),
                                                        (uri, len(b"first"))]  # fmt: skip
    client = storage._stores["s3"].client  # type: ignore[attr-defined]
    for key in ("out/dead.out", "out/report.csv", "out/sub/dead.out"):
        client.create_multipart_upload(Bucket="bkt", Key=key)
    # (moto dates every upload in 2010, so only the removal can be checked here; the age rule
    # is the file store's test above)
    owned = lambda name: name.endswith(".out")  # noqa: E731
    assert storage.remove_partials("s3://bkt/out/", before=time.time(), owned=owned) == 1
    uploads = client.list_multipart_uploads(Bucket="bkt").get("Uploads", [])
    assert sorted(u["Key"] for u in uploads) == ["out/report.csv", "out/sub/dead.out"]
    with pytest.raises(InputNotAllowed):
        storage.open_read("s3://bkt/other/x", within="s3://bkt/in").__enter__()


def test_a_file_write_fsyncs_the_file_then_every_folder_whose_entry_it_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power loss after a write returned keeps the object: its data, its name in its folder
    and the names of the folders the write made (each lives in its parent's entries)."""
    synced: list[str] = []
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    storage = Storage()
    storage.put_bytes(f"file://{tmp_path}/new/deeper/a.out", b"1")
    assert synced[1:] == [f"{tmp_path}/new/deeper", str(tmp_path), f"{tmp_path}/new"]
    assert synced[0].startswith(f"{tmp_path}/new/deeper/.a.out.")  # the data, before its name
    synced.clear()
    assert storage.create(f"file://{tmp_path}/new/deeper/b.out", b"2")
    assert synced[1:] == [f"{tmp_path}/new/deeper"]


def test_a_file_that_cannot_seek_to_a_range_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some of /proc's regular files cannot seek: a range of one fails that read (a batch
    fails that object), not the process with a traceback."""
    path = tmp_path / "a.csv"
    path.write_bytes(b"1,2\n" * 10)
    real_fdopen = os.fdopen

    def unseekable(fd: int, mode: str) -> object:
        handle = real_fdopen(fd, mode)

        def refuse(*_args: object) -> int:
            raise io.UnsupportedOperation("File or stream is not seekable.")

        handle.seek = refuse  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(os, "fdopen", unseekable)
    refused = pytest.raises(StorageError, match="from byte 8: File or stream is not seekable")
    with refused, Storage().open_read(path.as_uri(), start=8):
        pass
    with Storage().open_read(path.as_uri()) as whole:  # from the start: no seek needed
        assert whole.read(4) == b"1,2\n"


class RefusingClient:
    """An S3 client whose every call fails as ``error`` says."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> object:
        def call(*args: object, **kwargs: object) -> object:
            raise self.error

        return call


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_an_s3_refusal_is_storage_refused_which_no_retry_mends(code: str) -> None:
    from botocore.exceptions import ClientError

    from infermodes.queueing.messages import classify
    from infermodes.storage import StorageRefused

    error = ClientError({"Error": {"Code": code, "Message": "no"}}, "GetObject")
    storage = Storage(s3_store=S3Store(RefusingClient(error)))
    with pytest.raises(StorageRefused) as refused:
        storage.get_bytes("s3://bkt/in/x.csv")
    assert "s3 refused access to s3://bkt/in/x.csv" in str(refused.value)
    failure = classify(refused.value)
    assert (failure.reason, failure.retry) == ("StorageRefused", False)


@pytest.mark.parametrize("code", ["InvalidRequest", "InvalidArgument"])
def test_a_write_the_store_refuses_as_a_request_is_the_operators_to_mend_not_unusable(
    code: str,
) -> None:
    """S3 answers these to a write made against the bucket's rules (an SSE-KMS request not
    signed with SigV4, an Object Lock bucket's missing checksum): the output's location is
    fine, so it is a StorageError (503 on accept, retried by a worker), not a 400 blaming the
    caller. Read from a location a caller gave, they stay UnusableLocation (below)."""
    from botocore.exceptions import ClientError

    from infermodes.storage import StorageError, UnusableLocation

    error = ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")
    storage = Storage(s3_store=S3Store(RefusingClient(error)))
    with pytest.raises(StorageError) as failed:
        storage.put_bytes("s3://bkt/out/x.out", b"1")
    assert not isinstance(failed.value, UnusableLocation)
    reading = ClientError({"Error": {"Code": code, "Message": "no"}}, "GetObject")
    storage = Storage(s3_store=S3Store(RefusingClient(reading)))
    with pytest.raises(UnusableLocation, match="does not take the location s3://bkt/in/x"):
        storage.get_bytes("s3://bkt/in/x")


@pytest.mark.parametrize("code", ["KeyTooLongError", "InvalidBucketName", "InvalidObjectName"])
def test_an_s3_name_the_store_cannot_hold_is_unusable_which_no_retry_mends(code: str) -> None:
    from botocore.exceptions import ClientError

    from infermodes.queueing.messages import classify
    from infermodes.storage import UnusableLocation

    error = ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")
    storage = Storage(s3_store=S3Store(RefusingClient(error)))
    with pytest.raises(UnusableLocation, match="s3 cannot hold s3://bkt/out/x.out"):
        storage.put_bytes("s3://bkt/out/x.out", b"1")
    assert not classify(UnusableLocation("x")).retry


def test_no_credentials_is_storage_refused_and_other_s3_errors_stay_retryable() -> None:
    from botocore.exceptions import ClientError, NoCredentialsError

    from infermodes.queueing.messages import classify
    from infermodes.storage import StorageRefused

    storage = Storage(s3_store=S3Store(RefusingClient(NoCredentialsError())))
    with pytest.raises(StorageRefused):
        storage.get_bytes("s3://bkt/in/x.csv")
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "busy"}}, "GetObject")
    storage = Storage(s3_store=S3Store(RefusingClient(slow)))
    with pytest.raises(StorageError) as busy:
        storage.get_bytes("s3://bkt/in/x.csv")
    assert not isinstance(busy.value, StorageRefused)
    assert classify(busy.value).retry


def test_a_file_name_the_file_system_cannot_hold_is_unusable_which_no_retry_mends(
    tmp_path: Path,
) -> None:
    """A component longer than 255 bytes, a path through a file, a folder the file system
    will not make (/proc: ENOENT, which was retried for ever): 400-like, on every call
    (``is_file`` and ``is_dir`` pass only "no such file"; a name too long was a bare OSError)."""
    from infermodes.queueing.messages import classify
    from infermodes.storage import UnusableLocation

    storage = Storage()
    writes = (lambda u: storage.put_bytes(u, b"1"), lambda u: storage.create(u, b"1"),
              lambda u: storage.create(u, b""))  # fmt: skip
    too_long = f"file://{tmp_path}/{'a' * 300}/x.out"
    for call in (storage.exists, storage.size, storage.get_bytes, storage.list, *writes):
        with pytest.raises(UnusableLocation, match="cannot (read|write|list) file://"):
            call(too_long)
    (tmp_path / "plain").write_bytes(b"x")
    through_a_file = f"file://{tmp_path}/plain/x.out"
    for call in writes:
        with pytest.raises(UnusableLocation, match="in the way"):
            call(through_a_file)
    in_proc = f"file:///proc/infermodes-{'c' * 8}/x.out"  # ENOENT: /proc makes no folder
    for call in writes:
        with pytest.raises(UnusableLocation, match="the file system makes no folder there"):
            call(in_proc)
    assert not storage.exists(through_a_file)  # to a reader, no such object
    for read in (storage.get_bytes, storage.size):
        with pytest.raises(ObjectNotFound):
            read(through_a_file)
    with pytest.raises(UnusableLocation) as unusable:
        storage.put_bytes(f"file://{tmp_path}/{'b' * 250}", b"1")  # its partial file's is longer
    failure = classify(unusable.value)
    assert (failure.reason, failure.retry) == ("UnusableLocation", False)


def test_a_file_the_file_system_refuses_is_storage_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES, EPERM, EROFS (the tests run as root, who is refused nothing: the refusal is
    made up); a full disk stays retryable."""
    import errno

    from infermodes.storage import StorageRefused

    storage = Storage()
    uri = f"file://{tmp_path}/x.out"
    storage.put_bytes(uri, b"1")
    for code, kind in ((errno.EACCES, StorageRefused), (errno.EROFS, StorageRefused),
                       (errno.ENOSPC, StorageError)):  # fmt: skip

        def refuse(*_args: object, code: int = code) -> int:
            raise OSError(code, os.strerror(code))

        with monkeypatch.context() as patched:
            patched.setattr(os, "open", refuse)
            with pytest.raises(kind) as raised:
                storage.get_bytes(uri)
        assert type(raised.value) is kind and os.strerror(code) in str(raised.value)


@pytest.mark.parametrize(
    ("prefix", "folder", "within"),
    [("s3://b/out", "s3://b/out", True), ("s3://b/out/in", "s3://b/out", True),
     ("s3://b/out-in", "s3://b/out", False),  # a sibling: a key prefix as written
     ("s3://b/data", "s3://b/data/out", False), ("file:///d/in/", "file:///d", True),
     ("/d/in", "file:///d/", True), ("file:///d/input", "file:///d/in", False),
     ("ftp://x/y", "s3://b", False)],
)  # fmt: skip
def test_a_prefix_lies_within_a_folder_as_listings_read_it(
    prefix: str, folder: str, within: bool
) -> None:
    """The batch spec's refusal and the batch CLI's message ask the same question."""
    assert prefix_within(prefix, folder) is within


def test_a_file_prefix_lies_within_a_folder_as_the_file_system_resolves_both(
    tmp_path: Path,
) -> None:
    """A folder reached by another name, through a symbolic link, '.', '..' or a repeated
    '/', is the same folder: compared as written, a job whose output folder linked to its input
    folder, or to another job's output, passed the input-inside-output check and the hold."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in-link").symlink_to(tmp_path / "in")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "out").symlink_to(tmp_path / "in" / "out", target_is_directory=True)
    base = f"file://{tmp_path}"
    assert prefix_within(f"{base}/in/", f"{base}/in-link/")
    assert prefix_within(f"{base}/in-link/x/", f"{base}/in")
    assert prefix_within(f"{base}/elsewhere/out/", f"{base}/in/")  # a link to what is not yet
    assert prefix_within(f"{base}/in/", f"{base}/x/../in-link/")
    assert prefix_within(f"{base}//in/a", f"{base}/in")
    assert not prefix_within(f"{base}/in/", f"{base}/elsewhere/")
    assert not prefix_within(f"{base}/in-link-2/", f"{base}/in-link/")  # a sibling


@mock_aws
def test_an_s3_write_to_a_bucket_that_does_not_exist_is_unusable_not_a_missing_input() -> None:
    """S3 answers NoSuchBucket: read, the input is not there; written (an async output, an
    error object, a result claim or an inline body), the location cannot hold it. It read as
    "no such object", so a worker whose output bucket was missing failed its requests as
    ``InputNotFound`` and the gateway answered 503 ("retry later") for a store no retry mends."""
    import boto3

    from infermodes.queueing.messages import classify
    from infermodes.storage import UnusableLocation

    storage = Storage(s3_store=S3Store(boto3.client("s3", region_name="us-east-1")))
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("s3://no-such-bucket/in/x.csv")
    writes = {
        "put": lambda: storage.put_bytes("s3://no-such-bucket/out/x.out", b"1\n"),
        "create": lambda: storage.create("s3://no-such-bucket/in/x.request", b"{}"),
    }
    for write in writes.values():
        with pytest.raises(UnusableLocation, match="the bucket no-such-bucket does not exist") as e:
            write()
        assert (classify(e.value).reason, classify(e.value).retry) == ("UnusableLocation", False)


def test_a_file_in_the_way_of_a_folder_is_named_and_nothing_else_is(tmp_path: Path) -> None:
    """What the accept route refuses an endpoint's result folders for: sure without writing
    (a file at the folder, or at its nearest existing ancestor), never a guess."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    (tmp_path / "folder").mkdir()
    assert file_in_the_way(f"file://{blocker}/fail") == str(blocker)
    assert file_in_the_way(f"file://{blocker}/deeper/still/") == str(blocker)
    assert file_in_the_way(f"file://{blocker}") == str(blocker)
    assert file_in_the_way(f"file://{tmp_path}/folder/a/b") is None  # made when written
    assert file_in_the_way(f"file://{tmp_path}/folder") is None
    assert file_in_the_way(f"file://{tmp_path}/folder/../afile/x") == str(blocker)
    assert file_in_the_way("s3://bucket/afile/fail") is None
    assert file_in_the_way("file://host/not-local") is None  # not a usable URI: writing says


def test_an_s3_connection_lost_is_a_storage_error_a_retry_may_mend() -> None:
    """botocore's connection errors carry ``response = None``: read as an answer, they raised
    AttributeError out of the store (a batch instance's traceback, an async worker's crash)."""
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    from infermodes.errors import store_failed

    for error in (ConnectionClosedError(endpoint_url="http://127.0.0.1:1/bkt/x"),
                  EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bkt/x")):  # fmt: skip
        assert getattr(error, "response", None) is None
        storage = Storage(s3_store=S3Store(RefusingClient(error)))
        with pytest.raises(StorageError) as written:
            storage.put_bytes("s3://bkt/out/x.out", b"1")
        with pytest.raises(StorageError) as created:
            storage.create("s3://bkt/out/x.out", b"1")
        with pytest.raises(StorageError) as read:
            storage.get_bytes("s3://bkt/in/x.csv")
        assert all(store_failed(failed.value) for failed in (written, created, read))
