from pathlib import Path

import pytest

from infermodes.errors import ObjectNotFound, StorageError
from infermodes.storage import Storage, join_uri, parse_uri


def test_parse_uris(tmp_path: Path) -> None:
    assert parse_uri("s3://bucket/a/b.csv").bucket == "bucket"
    assert parse_uri("s3://bucket/a/b.csv").key == "a/b.csv"
    assert parse_uri("file:///tmp/x").key == "/tmp/x"
    assert parse_uri("relative/x").key == str(Path("relative/x").resolve())
    assert join_uri("s3://b/out/", "/id.out") == "s3://b/out/id.out"


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
