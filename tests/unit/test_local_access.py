"""``infermodes up``'s token: written for its user alone, read back only from such a file, and
required (compared whole) by its API and platform API; invocations need none."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from infermodes.http import Message
from infermodes.local.access import (
    ACCESS_KEY_ID,
    TokenFileError,
    read_token,
    start_token,
    token_guard,
    write_token,
)
from infermodes.local.up import state_lock


def test_each_start_writes_a_new_token_its_user_alone_may_read(tmp_path: Path) -> None:
    token, path = write_token(tmp_path)
    assert path == tmp_path.resolve() / "token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_token(path) == token and len(token) >= 40
    path.chmod(0o644)  # a file left open by hand is written 0600 again, not reused
    again, _ = write_token(tmp_path)
    assert again != token and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


def test_a_restart_keeps_the_token_while_its_user_alone_may_read_it(tmp_path: Path) -> None:
    """A boto3 client or a script given the token went on failing with 401 after every
    restart of ``up``: the token stays while the file is private; removed, or opened to
    others (who may have read it), or not a file of this user's, it is new."""
    token, path = start_token(tmp_path)
    assert start_token(tmp_path) == (token, path) and read_token(path) == token
    path.unlink()
    new, _ = start_token(tmp_path)
    assert new != token and path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    opened, _ = start_token(tmp_path)
    assert opened != new and path.stat().st_mode & 0o777 == 0o600
    path.unlink()
    path.symlink_to(tmp_path / "planted")
    (tmp_path / "planted").write_text("chosen-by-someone-else\n")
    (tmp_path / "planted").chmod(0o600)
    linked, _ = start_token(tmp_path)
    assert linked != "chosen-by-someone-else" and not path.is_symlink()
    path.write_text("")
    assert start_token(tmp_path)[0] not in ("", linked)  # an empty file is no token


def test_a_link_in_the_tokens_place_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("kept")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "token").symlink_to(elsewhere)
    _, path = write_token(tmp_path / "state")
    assert not path.is_symlink() and elsewhere.read_text() == "kept"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_token_file_others_may_read_is_refused_naming_it(tmp_path: Path, mode: int) -> None:
    _, path = write_token(tmp_path)
    path.chmod(mode)
    with pytest.raises(TokenFileError, match=f"{path}.*open to other users"):
        read_token(path)


def test_a_missing_token_file_says_where_up_writes_it(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"no-such.*<state dir>/token"):
        read_token(tmp_path / "no-such")


def call(
    guard: Any, path: str, *headers: tuple[bytes, bytes], method: str = "POST"
) -> tuple[bool, list[Message]]:
    """Whether the guard let the request through, and what it answered if not."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": list(headers)}  # fmt: skip
    passed = asyncio.run(guard(scope, receive, send)) is not None
    return passed, sent


def refusal(sent: list[Message]) -> tuple[int, dict[str, str]]:
    body: dict[str, str] = json.loads(sent[1]["body"])
    return sent[0]["status"], body


@pytest.mark.parametrize("path", ["/_infermodes", "/_infermodes/endpoints", "/_infermodes/x/y"])
def test_the_api_needs_the_whole_token_and_says_where_it_is(tmp_path: Path, path: str) -> None:
    token, file = write_token(tmp_path)
    guard = token_guard(token, file)
    assert call(guard, path, (b"authorization", f"Bearer {token}".encode()))[0]
    assert call(guard, path, (b"authorization", f"bearer  {token} ".encode()))[0]
    for given in ([], [(b"authorization", b"Bearer " + token[:-1].encode())],
                  [(b"authorization", token.encode())],
                  [(b"authorization", b"Bearer " + token.encode() + b"x")],
                  [(b"authorization", b"Bearer \xff")]):  # fmt: skip
        passed, sent = call(guard, path, *given)
        status, body = refusal(sent)
        assert not passed and status == 401, given
        assert str(file) in body["message"] and token not in json.dumps(body)


def test_the_platform_api_needs_a_signature_with_the_token(tmp_path: Path) -> None:
    """Unsigned: 401 naming the file and the access key id; signed by another key: the
    verifier's own refusal."""
    token, file = write_token(tmp_path)
    guard = token_guard(token, file)
    passed, sent = call(guard, "/")
    status, body = refusal(sent)
    assert not passed and status == 401
    assert str(file) in body["message"] and ACCESS_KEY_ID in body["message"]
    forged = (b"authorization", b"AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sagemaker/"
              b"aws4_request, SignedHeaders=host, Signature=00")  # fmt: skip
    passed, sent = call(guard, "/", forged)
    assert not passed and refusal(sent)[0] in (400, 403)


@pytest.mark.parametrize(
    "path", ["/endpoints/a/invocations", "/endpoints/a/async-invocations", "/readyz", "/metrics"]
)
def test_invocations_health_and_metrics_need_no_token(tmp_path: Path, path: str) -> None:
    token, file = write_token(tmp_path)
    assert call(token_guard(token, file), path)[0]


def test_a_visit_to_slash_says_what_answers_there_and_names_no_secret(tmp_path: Path) -> None:
    """``GET /`` (a browser, or curl on the port ``up`` printed) answered 401 about a signed
    platform API: it says what this is and where to look; ``POST /`` still needs a signature."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from infermodes.local.api import index_router

    token, file = write_token(tmp_path)
    guard = token_guard(token, file)
    assert call(guard, "/", method="GET")[0] and call(guard, "/", method="HEAD")[0]
    passed, sent = call(guard, "/", method="POST")
    assert not passed and refusal(sent)[0] == 401
    app = FastAPI()
    app.include_router(index_router("http://127.0.0.1:8080", file, ACCESS_KEY_ID))
    answer = TestClient(app).get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    for said in ("infermodes up", "/endpoints/<name>/invocations", "infermodes apply", str(file),
                 ACCESS_KEY_ID, "README.md"):  # fmt: skip
        assert said in answer.text
    assert token not in answer.text


def test_a_state_dir_others_may_enter_becomes_private(tmp_path: Path) -> None:
    """Its logs, the embedded queue (async payloads) and the platform records are the user's:
    a state dir left 0755 by an earlier version is made 0700 when up takes it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    with state_lock(state):
        assert state.stat().st_mode & 0o777 == 0o700
    made = tmp_path / "new" / "state"
    with state_lock(made):
        assert made.stat().st_mode & 0o777 == 0o700
