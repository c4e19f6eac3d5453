"""Who may drive a running ``infermodes up``: only who can read its token file.

``up`` runs what a manifest or the platform API asks for as the user who started it (and a
spec's ``allowPickle`` is code execution), so its ``/_infermodes`` API and the platform API on
its port must not answer every user of the machine, as loopback alone would. At its first
start ``up`` writes a random token to ``<state dir>/token``, readable by its user only (0600),
and keeps it across restarts while the file stays so (removing it makes a new one at the next
start); the CLI reads it and sends it as ``Authorization: Bearer <token>``; boto3 signs with it
as the secret access key of the access key id ``infermodes-up`` (AWS Signature V4, as on the
gateway). Invocations stay open on loopback, as the model servers' own loopback ports are.

The token is compared in constant time and never logged; messages name the file, not its
content.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from infermodes.gateway.auth import Guard, refusal_log, refuse, verified
from infermodes.http import Receive, Scope, Send, header
from infermodes.local.api import INDEX_METHODS, PREFIX
from infermodes.platform.router import MAX_REQUEST_BYTES
from infermodes.platform.sigv4 import AuthError, Verifier

TOKEN_FILE = "token"  # noqa: S105  # the file's name, not a secret
ACCESS_KEY_ID = "infermodes-up"  # boto3's aws_access_key_id; the token is its secret
BEARER = "bearer "


class TokenFileError(OSError):
    """The token file cannot be written, read, or is readable by other users (the message names
    the file and why, never the token)."""


class UnauthorizedException(AuthError):
    """A request to ``up``'s API without its token (or with another one)."""

    status_code = 401


def start_token(state_dir: Path) -> tuple[str, Path]:
    """The token of this start: the one ``<state dir>/token`` holds when only this user may
    read it (a restart must not break the scripts and boto3 clients given it), else a new one
    (``write_token``): none yet, or one others may have read."""
    path = state_dir.resolve() / TOKEN_FILE
    try:
        return read_token(path), path
    except TokenFileError:
        return write_token(state_dir)


def write_token(state_dir: Path) -> tuple[str, Path]:
    """A new token in ``<state dir>/token``, mode 0600 from its creation (written to a new file
    and renamed over the old one, so no other user ever reads it, nor a link redirects it); the
    mode and owner are checked after the write, for file systems that ignore modes."""
    path = state_dir.resolve() / TOKEN_FILE  # not resolved itself: a link there is replaced
    token = secrets.token_urlsafe(32)
    partial = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    try:
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise TokenFileError(f"cannot write the token file {path}: {exc.strerror or exc}") from None
    _check_private(path)
    return token, path


def read_token(path: Path) -> str:
    """The token ``up`` wrote to ``path``; refused when others may read the file (someone else
    could then act as its user, or have planted it)."""
    try:
        _check_private(path)
        token = path.read_text().strip()
    except TokenFileError:
        raise
    except OSError as exc:
        raise TokenFileError(
            f"cannot read the token of infermodes up from {path}: {exc.strerror or exc} (up "
            "writes it to <state dir>/token when it starts; for another state dir than "
            "./.infermodes, set INFERMODES_UP_TOKEN_FILE)"
        ) from None
    if not token:
        raise TokenFileError(f"the token file {path} is empty")
    return token


def _check_private(path: Path) -> None:
    """Owned by this user, a regular file, and neither group nor others may read or write it."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise TokenFileError(f"the token file {path} is not a regular file of this user")
    if info.st_mode & 0o077:
        raise TokenFileError(
            f"the token file {path} is open to other users (mode {info.st_mode & 0o777:04o}); "
            "up writes it 0600: remove it and restart up"
        )


def is_management(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def token_guard(token: str, path: Path) -> Guard:
    """The gateway's guard under ``up``: ``/_infermodes`` needs ``Authorization: Bearer
    <token>``, the platform API (``/``) a SigV4 signature by ``ACCESS_KEY_ID`` with the token
    as its secret; a visit (``GET /``) and anything else pass. Returns the ``receive`` to
    route with, or None when it refused (and answered) the request."""
    expected = token.encode()
    verifier = Verifier({ACCESS_KEY_ID: token})
    refusals = refusal_log()
    where = (
        f"infermodes up's API needs its token: send 'Authorization: Bearer <the token in "
        f"{path}>' (the infermodes CLI does; only the user who started up can read it)"
    )
    signed = (
        f"infermodes up's platform API needs requests signed with its token: "
        f"aws_access_key_id={ACCESS_KEY_ID!r}, aws_secret_access_key=<the token in {path}>"
    )

    async def guard(scope: Scope, receive: Receive, send: Send) -> Receive | None:
        if is_management(scope["path"]):
            given = header(scope, b"authorization") or ""
            if given[: len(BEARER)].lower() == BEARER and hmac.compare_digest(
                given[len(BEARER) :].strip().encode("latin-1"), expected
            ):
                return receive
            await refuse(scope, send, UnauthorizedException(where))
            return None
        if scope["path"] == "/" and scope["method"] in INDEX_METHODS:
            return receive  # a visit: what this is and where to look (``api.index_router``)
        if scope["path"] == "/":
            if header(scope, b"authorization") is None:
                await refuse(scope, send, UnauthorizedException(signed))
                return None
            return await verified(verifier, refusals, MAX_REQUEST_BYTES, scope, receive, send)
        return receive

    return guard
