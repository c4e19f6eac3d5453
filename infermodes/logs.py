"""Log setup shared by every infermodes process (kept free of heavy imports: the model server
configures logging before anything imports prometheus_client)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    quiet_client_logs(level)


def quiet_client_logs(level: str) -> None:
    """pika logs every lost connection at ERROR with a traceback, also the idle ones we reopen
    without the caller noticing, and each channel it opens or the broker closes at INFO; our
    own code logs one line per real outage instead. Every process, since any may reach a
    broker (``up --broker-url``, a gateway with one). httpx logs each request's whole URL at
    INFO, a webhook's path and query with it (where its token is), at any level: its own
    warnings only (our lines name a webhook by scheme and host, ``redacted_url``)."""
    if level.lower() != "debug":
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def redacted_url(url: str, keep_path: bool = True) -> str:
    """``url`` fit for a log line, an error message or a status: never its password, query or
    fragment, and with ``keep_path=False`` neither its path nor its user name (where webhooks
    keep their tokens)."""
    if not url:
        return "<an empty URL>"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<a URL that cannot be parsed>"
    if "@" in parts.path + parts.query + parts.fragment:  # where the password ends is a guess
        return f"{parts.scheme}:..." if parts.scheme else "..."
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username and keep_path:  # a webhook's user name may be its token
        netloc = f"{parts.username}@{netloc}"
    path = parts.path if keep_path else "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{path}"


def printable(text: str, limit: int = 200) -> str:
    """A client's ``text`` (a decoded path, a header) fit for one log line: cut to ``limit``
    characters and its control characters escaped, so that a ``%0A`` cannot start a forged
    line of its own."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    if cut.isprintable():
        return cut
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in cut)


class Throttled:
    """One kind of log line about a request that a client can cause at will (a refused
    request), or that an outage repeats for every request (a replica that fails), logged at
    most once per ``interval`` seconds: the first at once, those in between counted and told
    with the next one logged, so that a client repeating it cannot flood the log. The count
    names the first and last request left out, so that an id a client was answered with can
    still be found in the log (the ones between lie in that span)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next = -math.inf
        self._skipped = 0
        self._first = self._last = ""  # the ids of the first and last line left out
        # the last line left out, as text: its arguments (an exception, say) are not kept alive
        self._last_line = (logging.INFO, "")

    def info(self, message: str, *args: object, request: str) -> None:
        self.log(logging.INFO, message, *args, request=request)

    def warning(self, message: str, *args: object, request: str) -> None:
        self.log(logging.WARNING, message, *args, request=request)

    def log(self, level: int, message: str, *args: object, request: str) -> None:
        """Log the line about ``request`` (its id) now, or count it for the next one."""
        now = self.clock()
        if now < self._next:
            if not self._skipped:
                self._first = request
            self._skipped += 1
            self._last = request
            self._last_line = (level, message % args if args else message)
            return
        self._next = now + self.interval
        if self._skipped:
            self.logger.log(level, message + "%s", *args, self._left_out("and"))
        else:
            self.logger.log(level, message, *args)

    @property
    def quiet(self) -> bool:
        """Whether its next line would be logged at once with nothing left out to tell:
        dropping it then loses nothing."""
        return not self._skipped and self.clock() >= self._next

    def flush(self) -> None:
        """Tell the lines left out now, as the last of them with their count, instead of with
        the next line (which will not come: it is being dropped)."""
        if not self._skipped:
            return
        level, text = self._last_line
        self.logger.log(level, "%s%s", text, self._left_out("the last of"))

    def _left_out(self, lead: str) -> str:
        """The note of how many lines were left out, naming the first's and the last's request;
        the count starts again."""
        skipped, self._skipped = self._skipped, 0
        named = f"request {self._first}"
        if skipped > 1:
            named = f"requests {self._first} (first) to {self._last} (last)"
        return f" ({lead} {skipped} more since the last such line, not logged: {named})"


# an outage (a model server, a broker) fails every request alike: each kind of line about one
# is logged at most once per this many seconds per endpoint, the first at once
OUTAGE_LOG_SECONDS = 10.0
# at most this many keys in a ``ThrottledPer``: endpoint names come and go, and may be a client's
MAX_THROTTLED_KEYS = 1024


class ThrottledPer:
    """A ``Throttled`` per key (an endpoint, and a kind of line): one endpoint's outage must
    not hide the first line of another's. ``forget`` drops an endpoint's keys with it. At most
    ``limit`` keys: a new key when full first drops those with nothing to tell (their next
    line would be logged at once anyway), else the oldest, telling its count then; so a new
    key's first line is always logged, and no count is lost."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = OUTAGE_LOG_SECONDS,
        limit: int = MAX_THROTTLED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.limit = limit
        self.clock = clock
        self._told: dict[tuple[str, ...], Throttled] = {}  # oldest first

    def __call__(self, *key: str) -> Throttled:
        told = self._told.get(key)
        if told is None:
            if len(self._told) >= self.limit:
                self._make_room()
            told = self._told[key] = Throttled(self.logger, self.interval, self.clock)
        return told

    def __len__(self) -> int:
        return len(self._told)

    def _make_room(self) -> None:
        quiet = [key for key, told in self._told.items() if told.quiet]
        for key in quiet or [next(iter(self._told))]:
            self._told.pop(key).flush()

    def forget(self, first: str) -> None:
        """Drop the keys of ``first`` (an endpoint gone), telling what they left out."""
        for key in [key for key in self._told if key[0] == first]:
            self._told.pop(key).flush()
