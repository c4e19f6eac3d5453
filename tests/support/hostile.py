"""Hostile input for the model server: hypothesis strategies for bodies and headers, a raw
HTTP/1.1 client (httpx would refuse to send much of this), and the contract every answer must
keep: a prediction, or a 4xx in the one error shape; never a 5xx.

Shared by the property tests (unit and live server) and by ``bench/hostile/run.py``.
"""

from __future__ import annotations

import json
import math
import socket
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.support import recordio

NUM_FEATURES = 10  # the Abalone model's

# A fixed seed (the same examples every run) and a random one (new examples every run); each
# property runs under both, with bounded examples, no database in the working tree.
FIXED_SEED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RANDOM_SEED = settings(FIXED_SEED, derandomize=False)
PROFILES = {"fixed-seed": FIXED_SEED, "random-seed": RANDOM_SEED}

ROUTES = ["/invocations", "/ping", "/metrics", "/", "/nope", "/openapi.json", "/docs"]
METHODS = ["POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
CONTENT_TYPES = [
    "text/csv",
    "text/csv; charset=utf-8",
    "text/csv; charset=utf-16",
    "application/json",
    "text/libsvm",
    "application/x-libsvm",
    "image/png",
    "",
    "text/csv;;;",
    "*/*",
]
ACCEPTS = [
    "text/csv",
    "application/json",
    "*/*",
    "text/*",
    "application/*",
    "text/html",
    "text/csv;q=0.1, application/json;q=0.9",
    "text/csv;q=0, */*",
    "application/json;q=2",
    "text/csv;q=abc",
    ",,,",
    "*/*;q=0",
]

# Numbers as clients write them, and as hostile or careless ones do.
_NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "nan",
            "NaN",
            "-nan",
            "inf",
            "-Infinity",
            "1_0",
            "0x10",
            "1e39",
            "-1e400",
            "1e-50",
            ".5",
            "5.",
            ".",
            "+",
            "-",
            "1.2.3",
            "1 2",
            "\t3\t",
            "\x0c1",
            "\u0661",
            "e5",
        ]
    ),
    st.integers(0, 5000).map(lambda n: "9" * n),
    st.text(max_size=8),
)


@st.composite
def csv_bodies(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(st.lists(_NUMBER_TEXT, min_size=0, max_size=12), max_size=6))
    if draw(st.booleans()):  # mostly rows of the right width
        rows = [row[:NUM_FEATURES] + ["0"] * (NUM_FEATURES - len(row)) for row in rows]
    ending = draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n", ""]))
    text = ending.join(",".join(row) for row in rows) + draw(st.sampled_from(["", "\n", "\r"]))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def libsvm_bodies(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        tokens = []
        if draw(st.booleans()):
            tokens.append(draw(_NUMBER_TEXT))
        for _ in range(draw(st.integers(0, 12))):
            index = draw(
                st.one_of(
                    st.integers(0, NUM_FEATURES - 1).map(str),
                    st.integers(0, 10**12).map(str),
                    st.sampled_from(["-1", "x", "", "qid", "9" * 4400, "0x1"]),
                )
            )
            separator = draw(st.sampled_from([":", ":", ":", "", "::", "="]))
            tokens.append(f"{index}{separator}{draw(_NUMBER_TEXT)}")
        lines.append(draw(st.sampled_from([" ", "\t", "  "])).join(tokens))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return ending.join(lines).encode("utf-8", "surrogatepass")


_JSON_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**400), 10**400),
    st.none(),
)
_ANY_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _JSON_NUMBER, st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    row = st.lists(_JSON_NUMBER, min_size=NUM_FEATURES, max_size=NUM_FEATURES)
    document = draw(
        st.one_of(
            _ANY_JSON,
            st.builds(lambda rows: {"instances": rows}, st.lists(row, max_size=4)),
            st.builds(
                lambda rows: {"instances": [{"features": r} for r in rows]},
                st.lists(row, max_size=4),
            ),
            st.lists(row, max_size=4),
            row,
        )
    )
    text = json.dumps(document)
    mangle = draw(st.sampled_from(["none", "none", "nest", "cut", "nan", "bom"]))
    if mangle == "nest":
        depth = draw(st.integers(1, 5000))
        text = "[" * depth + text + "]" * depth
    elif mangle == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif mangle == "nan":
        text = text.replace("null", draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])))
    elif mangle == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    return text.encode()


def write_body(matrix: np.ndarray, content_type: str, ending: str, missing: str) -> bytes:
    """``matrix`` as a client writes it: ``missing`` for NaN in CSV (libsvm leaves it out,
    JSON writes null), rows ending with ``ending``."""

    def text(value: np.float32) -> str:
        return missing if math.isnan(value) else repr(float(value))

    if content_type == "application/x-recordio-protobuf":
        return recordio.dense(matrix)  # NaN is a missing value there too
    if content_type == "text/csv":
        lines = [",".join(text(v) for v in row) for row in matrix]
    elif content_type == "text/libsvm":
        lines = [
            " ".join(["0"] + [f"{i}:{text(v)}" for i, v in enumerate(row) if not math.isnan(v)])
            for row in matrix
        ]
    else:
        rows = [[None if math.isnan(v) else float(v) for v in row] for row in matrix]
        return json.dumps({"instances": rows}).encode()
    return ending.join(lines).encode()


def matrices(width: int | None = None) -> st.SearchStrategy[np.ndarray]:
    """float32 matrices as clients send them: finite values, NaN for missing."""
    columns = st.integers(1, 8) if width is None else st.just(width)
    return hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), columns),
        elements=st.floats(width=32, allow_infinity=False),
    )


@st.composite
def valid_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A (content type, body) pair the server must predict (width: the Abalone model's)."""
    content_type = draw(st.sampled_from(["text/csv", "application/json", "text/libsvm"]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    body = write_body(draw(matrices(NUM_FEATURES)), content_type, ending, "")
    return content_type.encode(), body


BODIES = st.one_of(csv_bodies(), libsvm_bodies(), json_bodies(), st.binary(max_size=300))
HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60).map(
    lambda text: text.encode("latin-1")
)


@dataclass
class Request:
    """One request as bytes on the wire: any method, path, headers and body; with a
    ``transfer_encoding`` the body is sent chunked under that header, else with its length."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    transfer_encoding: bytes = b""

    def wire(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
        lines += [name + b": " + value for name, value in self.headers]
        if self.transfer_encoding:
            lines.append(b"Transfer-Encoding: " + self.transfer_encoding)
            chunk = b"%x\r\n%s\r\n" % (len(self.body), self.body) if self.body else b""
            framed = chunk + b"0\r\n\r\n"
        else:
            lines.append(b"Content-Length: %d" % len(self.body))
            framed = self.body
        return b"\r\n".join(lines) + b"\r\n\r\n" + framed


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """Mostly /invocations with a plausible or hostile body; sometimes any route and method;
    headers from the known values or any latin-1 text; sometimes a coding we do not undo."""
    kind = draw(st.integers(0, 9))
    if kind < 3:  # a well-formed invocation, to keep the success path under fire too
        content_type, body = draw(valid_bodies())
        accept = draw(st.sampled_from(ACCEPTS[:5])).encode()
        headers = [(b"Content-Type", content_type), (b"Accept", accept)]
        return Request("POST", "/invocations", headers, body)
    method = "POST" if kind < 8 else draw(st.sampled_from(METHODS))
    path = "/invocations" if kind < 8 else draw(st.sampled_from(ROUTES))
    headers = []
    for name, known in ((b"Content-Type", CONTENT_TYPES), (b"Accept", ACCEPTS)):
        for _ in range(draw(st.integers(0, 2))):
            value = draw(st.one_of(st.sampled_from(known).map(str.encode), HEADER_TEXT))
            headers.append((name, value))
    if draw(st.integers(0, 9)) == 0:
        coding = draw(st.sampled_from([b"gzip", b"identity", b"br, gzip", b"x"]))
        headers.append((b"Content-Encoding", coding))
    if draw(st.integers(0, 19)) == 0:
        headers.append((b"X-" + draw(st.sampled_from([b"A", b"Junk"])), draw(HEADER_TEXT)))
    body = draw(BODIES) if method in ("POST", "PUT", "PATCH") else b""
    chunked = draw(
        st.sampled_from([b"", b"", b"", b"", b"", b"", b"", b"chunked", b"gzip, chunked"])
    )
    return Request(method, path, headers, body, chunked)


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Connection:
    """A raw HTTP/1.1 connection on loopback, reading responses by their Content-Length."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, head: bool = False) -> Response | None:
        """The next response, or None when the server closed the connection first."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                if self.buffer:
                    raise AssertionError(f"connection closed mid-response: {self.buffer[:200]!r}")
                return None
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise AssertionError("connection closed mid-body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        """True when the server closes its side (what it still sends is read and dropped: an
        error written before the method was parsed has a body even for HEAD); False when it
        keeps the connection open past the socket's timeout."""
        try:
            self.read_to_eof()
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    def read_to_eof(self) -> None:
        """Read and drop what the server still sends until it closes its side; a reset
        raises: on a real network it can destroy an answer the client has not read yet."""
        while self._fill():
            pass


def check_contract(response: Response, head: bool = False) -> None:
    """The contract of every answer: never a 5xx; an error is JSON with exactly a string
    ``error`` and a string ``message``; a 200 from /invocations carries predictions in the
    type the client accepts. An answer to HEAD has the headers only."""
    assert response.status < 500, response
    content_type = response.headers.get(b"content-type", b"")
    if head:
        assert not response.body and (response.status < 400 or content_type == b"application/json")
    elif response.status >= 400:
        assert content_type == b"application/json", response
        shape = json.loads(response.body)
        assert set(shape) == {"error", "message"}, response
        assert isinstance(shape["error"], str) and isinstance(shape["message"], str), response
        assert shape["error"] and shape["message"], response
    elif content_type == b"application/json" and response.body.startswith(b'{"predictions"'):
        assert json.loads(response.body)["predictions"], response
    elif content_type == b"text/csv":
        assert [float(line) for line in response.body.decode().splitlines()], response


def probe(port: int, request: Request) -> Response:
    """Send ``request`` with a ``GET /ping`` pipelined behind it; check the contract of the
    answer, and that the connection then serves the next request unless the answer said
    ``connection: close`` (a request must never take its successor down with it)."""
    with Connection(port) as connection:
        connection.send(request.wire() + b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = request.method == "HEAD"
        response = connection.response(head)
        assert response is not None, f"no answer to {request!r}"
        check_contract(response, head)
        if response.headers.get(b"connection") == b"close":
            assert connection.closed_by_server(), "connection: close, yet still open"
        else:
            ping = connection.response()
            assert ping is not None and ping.status == 200, (request, response, ping)
    return response
