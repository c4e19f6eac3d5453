"""``infermodes batch``: one instance of a batch transform (one Job index, or a user's shell).

List the inputs, take this instance's shard (``plan``), and for each object or byte range:
stream it (``records``), transform ``maxConcurrentTransforms`` mini-batches at a time
(``worker``, ``transform``), and write the outputs in input order to an atomic writer, so
``<key>.out`` appears whole or not at all. An object that
fails is reported and the others go on. With a run id (the operator's, ``up``'s), an output
from before the job is written over, as the platform does, and one the job wrote is skipped
when an instance runs again; without one, a re-run skips every ``.out`` that exists.

Memory: at most ``maxConcurrentTransforms + 1`` mini-batches of ``maxPayloadInMB`` exist at once
(in flight, or read and waiting), each held about three times (input bytes, float32 rows,
output text, and a copy in transit to and from a worker process), plus one 1 MiB read block and
the storage writer's buffer (8 MiB on S3): about ``3 x (maxConcurrentTransforms + 1) x
maxPayloadInMB + 10`` MB beyond the interpreters and models, so ~400 MB at the platform's
limits and ~50 MB at the defaults, whatever the input's size.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry

from infermodes.errors import (
    EXIT_CANNOT_START,
    EXIT_MODEL_LOAD_FAILED,
    EXIT_OBJECTS_FAILED,
    EXIT_STOPPED,
    EXIT_STORE_FAILED,
    EXIT_WORKERS_DIED,
    ModelLoadError,
    ObjectNotFound,
    StorageError,
    clipped,
    store_failed,
)
from infermodes.logs import configure_logging
from infermodes.metrics import LIVENESS_PATH, BatchMetrics, serve_metrics
from infermodes.predict import codecs, fastcsv
from infermodes.predict.codecs import JSON_BYTES_EXPANSION
from infermodes.predict.memory import InputCap, log_input_caps, process_input_caps
from infermodes.predict.model import XGBoostModel
from infermodes.settings import warn_of_unknown_variables
from infermodes.storage import CHUNK_SIZE, Storage, parse_uri, prefix_within
from infermodes.workers.batch import plan, records
from infermodes.workers.batch.records import BadRecord, MiniBatch
from infermodes.workers.batch.summary import Failure, RangeOutcome, Summary
from infermodes.workers.batch.worker import Done, MiniBatchWorker, concurrent_workers

if TYPE_CHECKING:
    from infermodes.settings import BatchSettings

log = logging.getLogger("infermodes.batch")

BLOCK_BYTES = CHUNK_SIZE
LISTING_LIMIT = 1024 * records.MIB  # a stored listing of millions of objects is read whole
# why an input whose key has a '.' or '..' segment below the input prefix fails (S3 keeps such
# a key as written; a file path, an S3-compatible server or a proxy may resolve it)
DOTTED_KEY = (
    "its key has a '.' or '..' segment below the input prefix: its output would not lie under "
    "the output path (a file path resolves the segment, as an S3-compatible server or a proxy "
    "may); rename the object"
)
# A whole JSON document (splitType None) peaks at up to this many times its size: the codecs'
# decode, plus the object read whole and the transform's own parse and re-encoding of what
# the input filter selects (measured in the runner: 39 for rows of one one-digit feature, 29
# for ten, 12 for ten 3-digit decimals), plus its copies in transit to a worker process.
WHOLE_JSON_EXPANSION = JSON_BYTES_EXPANSION + 6
WHOLE_JSON_COST = codecs.ReadCost(0, WHOLE_JSON_EXPANSION, 1)  # its rows are not counted
T = TypeVar("T")
R = TypeVar("R")


class Stopped(BaseException):
    """SIGTERM arrived: unwind through every writer so that none leaves a partial object."""


class OutputUnusable(Exception):
    """The job's records under its output path cannot be read or written (a bucket that does
    not exist, access refused): the job fails saying so, not as a listing of its inputs."""


class InFlight:
    """When each mini-batch in flight was handed out, oldest first: the liveness probe's
    (``stuck``). An attempt cannot be interrupted in process and is judged when it ends, so one
    that never ends (a hung predict, a wedged worker process) would hold the instance, and its
    Job, for ever; one merely long does not pass what its attempts may take."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: deque[float] = deque()  # appended and popped by the runner's thread

    def stuck(self, bound: float) -> str | None:
        """Why the instance is stuck: its oldest mini-batch in flight for over ``bound``."""
        try:
            age = self.clock() - self.started[0]
        except IndexError:  # none in flight (listing, reading, writing, loading the model)
            return None
        if age <= bound:
            return None
        return f"a mini-batch has been in flight for {age:.1f} s, past the {bound:g} s allowed"


def ordered(
    run: Callable[[T], R],
    items: Iterator[T],
    executor: Executor | None,
    window: int,
    in_flight: InFlight,
) -> Iterator[R]:
    """``map(run, items)`` with up to ``window`` items in flight on ``executor``, results in
    input order; items are read only as room frees up, so memory stays bounded. ``in_flight``
    holds when each item not yet collected was handed out."""
    started = in_flight.started
    if executor is None:
        for item in items:
            started.append(in_flight.clock())
            try:
                result = run(item)
            finally:
                started.popleft()
            yield result
        return
    pending: deque[Future[R]] = deque()

    def collect() -> R:
        try:
            return pending.popleft().result()
        finally:
            started.popleft()

    try:
        for item in items:
            started.append(in_flight.clock())
            pending.append(executor.submit(run, item))
            if len(pending) >= window:
                yield collect()
        while pending:
            yield collect()
    finally:
        for future in pending:
            future.cancel()
        started.clear()  # what is left was this call's: a runner works on one unit at a time


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total
        self.done = 0
        self.records = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def advance(self, records: int = 0, units: int = 0) -> None:
        self.records += records
        self.done += units
        now = time.monotonic()
        if self.enabled and (units or now - self.shown >= 0.2):
            self.shown = now
            rate = self.records / max(now - self.started, 1e-9)
            width = 30
            filled = width * self.done // max(self.total, 1)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} objects  "
                f"{self.records:,} records  {rate:,.0f}/s "
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class Runner:
    def __init__(
        self,
        settings: BatchSettings,
        storage: Storage,
        model: XGBoostModel,
        metrics: BatchMetrics,
        in_flight: InFlight | None = None,
    ) -> None:
        self.settings = settings
        self.in_flight = in_flight or InFlight()
        self.storage = storage
        self.metrics = metrics
        self.output_prefix = parse_uri(settings.output_uri).uri.rstrip("/")
        self.limit = settings.payload_mb * records.MIB
        self.model = model
        self.worker = MiniBatchWorker(settings, model)
        self.work: Callable[[MiniBatch], Done] = self.worker
        self.summary = Summary(settings.instance_index, settings.instance_count)
        self.run_started: float | None = None  # by the store's clock; None: no run id
        self.progress = Progress(0)
        # the exit code of an end a new run may mend (EXIT_WORKERS_DIED, EXIT_STORE_FAILED):
        # the instance leaves no summary and runs again, as a killed one does
        self.runs_again: int | None = None
        # the memory a mini-batch Python's readers decode may take (run() measures it); None:
        # no cap
        self.memory_cap: InputCap | None = None

    # -- what to do ------------------------------------------------------------------------

    def inputs(self) -> list[plan.InputObject]:
        """The job's input objects (the output prefix excluded, should it lie inside, the
        summaries a job leaves in its output: its output may be another job's input, and S3's
        folder markers, keys ending in '/': a console's "Create folder", no records)."""
        settings = self.settings
        if settings.input_data_type == "ManifestFile":
            data = self.storage.get_bytes(settings.input_uri, limit=64 * records.MIB)
            pairs = plan.parse_manifest(data, settings.input_uri)
            return [plan.InputObject(uri, key, self.storage.size(uri)) for uri, key in pairs]
        prefix = parse_uri(settings.input_uri)
        base = prefix.uri
        if prefix.scheme == "file" and Path(prefix.key).is_dir():
            base = base.rstrip("/") + "/"
        listed = [  # sizes from the listing: no request per object
            plan.InputObject(uri, plan.relative_key(base, uri), size)
            for uri, size in self.storage.list_with_sizes(base)
            if not uri.startswith(self.output_prefix + "/") and not uri.endswith("/")
        ]
        # a key with a '.' or '..' segment stays: it fails alone (``unit``), not the job
        return [obj for obj in listed if plan.SUMMARY_FOLDER not in obj.key.split("/")[:-1]]

    def job_inputs(self) -> list[plan.InputObject]:
        """The job's one listing of its inputs (``plan.listing_uri``): the one stored by the
        first instance to start, or this instance's, stored if none is yet. Without a run id,
        this instance's own."""
        run_id = self.settings.run_id
        if not run_id:
            return self.inputs()
        listing = plan.listing_uri(self.output_prefix, run_id)
        try:
            return plan.load_listing(self.storage.get_bytes(listing, LISTING_LIMIT))
        except ObjectNotFound:
            pass
        except StorageError as exc:
            raise OutputUnusable(str(exc)) from None
        objects = self.inputs()
        try:
            stored = plan.dump_listing(objects)
            if objects and not self.storage.create(listing, stored, content_type=plan.RECORD_TYPE):
                return plan.load_listing(self.storage.get_bytes(listing, LISTING_LIMIT))  # a peer's
        except StorageError as exc:
            raise OutputUnusable(str(exc)) from None
        return objects

    def shard(self, objects: list[plan.InputObject]) -> list[plan.WorkUnit]:
        settings = self.settings
        splittable = (
            settings.split_type == "Line"
            and settings.compression_type == "None"
            and self.worker.transform.per_record_output
        )
        units = plan.plan_units(
            objects, settings.instance_count, splittable, settings.split_min_bytes
        )
        return plan.assign(units, settings.instance_count)[settings.instance_index]

    # -- doing it --------------------------------------------------------------------------

    def run(self) -> Summary:
        started, cpu = time.monotonic(), time.process_time()
        executor: Executor | None = None
        # measured before the input listing, whose peak is not the model's or the runtime's
        self.memory_cap = self.python_read_cap()
        try:
            try:
                objects = self.job_inputs()
            except OutputUnusable as exc:
                self.summary.error = f"cannot use the output path {self.settings.output_uri}: {exc}"
                return self.summary
            except (StorageError, ValueError, UnicodeDecodeError) as exc:
                self.summary.error = f"cannot list the inputs: {exc}"
                return self.summary
            if not objects:  # a mistyped prefix must not look like a job that succeeded
                self.summary.error = no_inputs(self.settings)
                return self.summary
            try:
                self.run_started = self.mark_run()
            except StorageError as exc:
                self.summary.error = f"cannot mark the job's start under its output: {exc}"
                return self.summary
            units = self.shard(objects)
            own = plan.summary_uri(self.output_prefix, self.settings.instance_index,
                                   self.settings.instance_count)  # fmt: skip
            self.clear_partials([self.target(u) for u in units if not plan.dotted(u.obj.key)]
                                + [own])  # fmt: skip
            self.summary.assigned = len(units)
            self.metrics.units_assigned.set(len(units))
            log.info(
                "instance %d of %d: %d units (%d bytes)",
                self.settings.instance_index,
                self.settings.instance_count,
                len(units),
                sum(u.size for u in units),
            )
            self.progress = Progress(len(units))
            if self.settings.max_concurrent_transforms > 1:
                executor, self.work = concurrent_workers(
                    self.settings, self.model, self.worker.transform
                )
            for unit in units:
                records_before = self.summary.records
                outcome = self.unit(unit, executor)
                self.metrics.units.labels(outcome).inc()
                setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)
                if unit.is_range:
                    records = self.summary.records - records_before
                    self.summary.ranges.append(
                        RangeOutcome(unit.obj.uri, unit.part, unit.parts, outcome, records)
                    )
                self.progress.advance(units=1)
        except BrokenExecutor as exc:
            self.summary.error = f"the worker processes died (out of memory?): {exc}"
            self.runs_again = EXIT_WORKERS_DIED
        except StorageError as exc:  # the store's own failure (``unit``): no object's fault
            self.summary.error = f"the object store failed: {exc}"
            log.error("%s: the instance ends without failing the object, to run again and skip "
                      "what the job wrote", self.summary.error)  # fmt: skip
            self.runs_again = EXIT_STORE_FAILED
        except Stopped:
            self.summary.stopped = True
        finally:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            self.progress.close()
            self.summary.seconds = time.monotonic() - started
            self.summary.cpu_seconds = time.process_time() - cpu
        return self.summary

    def python_read_cost(self) -> codecs.ReadCost | None:
        """What a mini-batch of this job costs when Python reads it: a whole JSON document's
        (``WHOLE_JSON_COST``), or libsvm's Python reader's, by its rows and bytes; None for
        JSON read by lines (a group of lines at a time) and for CSV, which the native reader
        takes (``stream.decode_chunk``: fastcsv, at about twice its size, when it is built):
        capping every CSV mini-batch at Python's cost shrank them all, and failed long lines
        that the native reader reads, for the rare one it declines."""
        if self.worker.transform.whole_documents:
            return WHOLE_JSON_COST
        kind = self.settings.content_type
        if kind == codecs.LIBSVM or (kind == codecs.CSV and not fastcsv.AVAILABLE):
            return codecs.PYTHON_READ_COST[kind]  # no native reader takes it
        return None

    def python_read_cap(self) -> InputCap | None:
        """The memory a mini-batch read in Python may take in this instance (and the length
        its narrowest rows may have in it): its memory shared by the concurrent transforms
        (each in a worker process of its own, which loads the model too, unless they are
        threads: ``concurrent_workers``), never above maxPayloadInMB."""
        cost = self.python_read_cost()
        if cost is None:
            return None
        concurrency = self.settings.max_concurrent_transforms
        threads = self.worker.transform.native or concurrency == 1
        processes = 1 if threads else 1 + concurrency
        kind = self.settings.content_type
        caps = process_input_caps(
            self.limit,
            self.settings.memory_bytes,
            concurrency,
            {kind: cost.worst_per_byte},
            processes=processes,
        )
        cap = caps[kind]
        if cost.per_row and cap.budget is not None:  # its rows are counted as it is packed: the
            # length its narrowest rows may have is no cap of it, and not logged as one
            log.info(
                "%s mini-batches are packed within %d bytes of memory each, at an estimated %d "
                "a row + %d a byte: a line alone up to %d bytes",
                kind,
                cap.budget,
                cost.per_row,
                cost.per_byte,
                min(self.limit, (cap.budget - cost.per_row) // cost.per_byte),
            )
        else:
            log_input_caps(caps)
        return cap

    def memory_budget(self, unit: plan.WorkUnit) -> records.MemoryBudget | None:
        """What ``unit``'s mini-batches read in Python may take, when the memory binds before
        maxPayloadInMB does: their estimate (rows and bytes) is held to the memory's share."""
        cap, cost = self.memory_cap, self.python_read_cost()
        if cap is None or cap.budget is None or cost is None or cap.bytes >= self.limit:
            return None
        return records.MemoryBudget(
            cost,
            cap.budget,
            functools.partial(self.over_memory, unit, cap, cap.budget),
            self.worker.transform.num_features,
        )

    def over_memory(
        self,
        unit: plan.WorkUnit,
        cap: InputCap,
        budget: int,
        line: int,
        size: int,
        rows: int,
        whole: bool,
    ) -> BadRecord:
        """Why ``unit``'s record at ``line`` (its whole object, with splitType None), of
        ``size`` bytes (at least, when not ``whole``) in ``rows`` rows, over the ``budget``
        of memory ``cap`` leaves a read, fails: instead of an OOM kill of the instance and
        every object it holds. The codecs' refusal (a model server's 413) says it."""
        more = (
            "give the instance more memory (its container's limit, or "
            "INFERMODES_BATCH_MEMORY_BYTES)"
        )
        if self.worker.transform.whole_documents:
            return self.over_json_memory(unit, cap, more)
        one_record = self.settings.split_type == "None"
        advice = f"split it into lines (splitType Line), or {more}" if one_record else more
        refusal = codecs.over_memory(
            self.settings.content_type,
            size,
            rows,
            budget,
            "and is read in Python",
            advice,
            record="object" if one_record else "line",
            read_so_far=not whole,
            shared=(
                f"the instance's memory, {cap.memory} bytes less what its model and runtime "
                f"hold, shared by {cap.concurrency} concurrent transform(s)"
            ),
            width=self.worker.transform.num_features,
        )
        return BadRecord(None if one_record else line, str(refusal))

    def over_json_memory(self, unit: plan.WorkUnit, cap: InputCap, more: str) -> BadRecord:
        """Why a whole JSON document (splitType None) over ``cap`` fails."""
        if self.settings.compression_type == "Gzip":
            size = f"decompresses to more than {cap.bytes} bytes"
        else:
            size = f"is {unit.obj.size} bytes"
        return BadRecord(
            None,
            f"the object {size}, over the {cap.bytes} bytes a whole JSON document may have "
            f"here: application/json with splitType None is parsed whole, at up to "
            f"{WHOLE_JSON_EXPANSION} times its size, by each of {cap.concurrency} concurrent "
            f"transform(s) within the instance's memory ({cap.memory} bytes, less what its "
            f"model and runtime hold); split it into lines (splitType Line, a JSON document "
            "per line), send it as text/csv, or " + more,
        )

    def mark_run(self) -> float | None:
        """When this job started, by the output store's clock (its marker, made by the first
        instance to start, found by the others and by a restart); None without a run id, or
        when the job keeps existing outputs: then any that exists is done."""
        run_id = self.settings.run_id
        if not run_id or self.settings.keep_existing:
            return None
        marker = plan.run_marker_uri(self.output_prefix, run_id)
        # False: another instance's, or this job's before
        self.storage.create(marker, b"", content_type=plan.MARKER_TYPE)
        started = self.storage.modified(marker)
        if started is None:
            raise StorageError(f"{marker} is gone right after it was made")
        return started

    def done(self, uri: str) -> bool:
        """Whether this job wrote ``uri`` (without a run id, or keeping existing outputs:
        whether it exists). An output of an earlier job under the same path is not this job's:
        it is written over. Written in the very second the job started, by a store of whole
        seconds (S3's times), it cannot be told apart: written again, which is never wrong."""
        if self.run_started is None:
            return self.storage.exists(uri)
        modified = self.storage.modified(uri)
        return modified is not None and modified > self.run_started

    def unit(self, unit: plan.WorkUnit, executor: Executor | None) -> str:
        """Transform one object or range; returns succeeded, skipped or failed. Bad input and
        a store's refusal of this object (missing, refused, a name it cannot hold) fail this
        object only; the store's own failure (not reached, a 5xx) is raised: every object
        after it would fail alike, and a run after it may mend (``run``)."""
        if plan.dotted(unit.obj.key):  # no request names its output, which may lie elsewhere
            return self.failed(unit, None, DOTTED_KEY)
        try:
            return self.transform_unit(unit, executor)
        except (BadRecord, StorageError) as exc:
            if isinstance(exc, StorageError) and store_failed(exc):
                raise
            line, reason = None, str(exc)
            if isinstance(exc, BadRecord):
                reason = exc.reason
                if exc.line is not None:
                    try:
                        line = self.absolute_line(unit, exc.line)
                    except StorageError:  # cannot count: say where in the range instead
                        reason += f" (line {exc.line} of the range from byte {unit.start})"
            self.remove(self.parts(unit), "the object will not assemble")
            return self.failed(unit, line, reason)

    def failed(self, unit: plan.WorkUnit, line: int | None, reason: str) -> str:
        """Record that ``unit``'s object failed (at ``line``; None: as a whole)."""
        where = f" at line {line}" if line else ""
        log.error("%s failed%s: %s", unit.obj.uri, where, reason)
        self.summary.failures.append(Failure(unit.obj.uri, line, reason))
        return "failed"

    @property
    def output_type(self) -> str:
        """The media type of every ``.out`` and part, kept by a store that keeps one (S3): the
        one its records are encoded as, the job's ``accept`` as ``media.accept_of`` reads it
        (the settings'), as the async worker stores its outputs."""
        return self.worker.transform.accept

    def target(self, unit: plan.WorkUnit) -> str:
        """What ``unit`` writes: its object's ``.out``, or a range's part."""
        if unit.is_range:
            return plan.part_uri(self.output_prefix, unit)
        return plan.output_uri(self.output_prefix, unit.obj.key)

    def clear_partials(self, uris: list[str]) -> None:
        """Remove what writers of ``uris`` killed mid-write left (an earlier attempt of this
        instance SIGKILLed, its node lost): hidden partial files on ``file://``, incomplete
        multipart uploads on S3, which S3 bills until they are aborted. Only this instance
        writes its outputs and parts, and it writes none of them yet, so any partial write of
        them is a dead writer's; a split object's ``.out`` is cleared once assembled (another
        assembler's write, if any, then fails and finds the ``.out``). At best: a store that
        refuses leaves them."""
        try:
            removed = self.storage.remove_partials_of(uris)
        except StorageError as exc:
            log.warning("cannot remove the partial writes a stopped instance left: %s", exc)
            return
        if removed:
            log.info("removed %d partial write(s) a stopped instance left", removed)

    def remove(self, uris: list[str], why: str) -> None:
        """Remove parts no longer needed, at best: a store that fails here (as it may have just
        failed the unit) leaves them, each a complete part, which a later run writes over (or,
        keeping existing outputs, uses)."""
        for uri in uris:
            try:
                self.storage.delete(uri)
            except StorageError as exc:
                log.warning("cannot remove %s (%s): %s", uri, why, exc)

    def transform_unit(self, unit: plan.WorkUnit, executor: Executor | None) -> str:
        out = plan.output_uri(self.output_prefix, unit.obj.key)
        if self.done(out):
            log.info("skipping %s: %s exists", unit.obj.uri, out)
            if unit.is_range:
                self.remove([plan.part_uri(self.output_prefix, unit)], f"{out} is written")
            return "skipped"
        target = self.target(unit)
        outcome = "succeeded"
        if unit.is_range and self.done(target):
            log.info("skipping range %d of %s: its part exists", unit.part, unit.obj.uri)
            outcome = "skipped"
        else:
            self.write(unit, target, executor)
        if not unit.is_range or self.assemble(unit):
            self.summary.objects_written += 1
        return outcome

    def write(self, unit: plan.WorkUnit, target: str, executor: Executor | None) -> None:
        settings = self.settings
        with (
            self.storage.open_read(unit.obj.uri, max(unit.start - 1, 0)) as source,
            self.storage.open_write(target, self.output_type) as sink,
        ):
            blocks = records.read_blocks(source, BLOCK_BYTES)
            if settings.compression_type == "Gzip":
                blocks = records.gunzip(blocks, BLOCK_BYTES)
            elif unit.start == 0:
                blocks = records.not_gzip(blocks)
            if unit.is_range:
                blocks = records.line_range(blocks, unit.start, unit.end)
            batches = records.minibatches(
                blocks,
                settings.split_type,
                settings.batch_strategy,
                self.limit,
                self.memory_budget(unit),
            )
            window = settings.max_concurrent_transforms
            written = 0
            for done in ordered(self.work, batches, executor, window, self.in_flight):
                self.record(done)
                sink.write(done.output)
                written += done.records
                self.progress.advance(records=done.records)
        # counted once the output is stored: a unit that fails or stops midway discards them
        self.summary.records += written

    def record(self, done: Done) -> None:
        metrics = self.metrics
        metrics.predict_duration.observe(done.predict_seconds)
        metrics.rows_predicted.inc(done.rows)
        metrics.records.inc(done.records)
        metrics.input_bytes.inc(done.input_bytes)
        metrics.minibatch_duration.labels("ok").observe(done.seconds)
        for seconds in done.failed_seconds:
            metrics.minibatch_duration.labels("failed").observe(seconds)
        metrics.retries.inc(len(done.failed_seconds))

    def absolute_line(self, unit: plan.WorkUnit, line: int) -> int:
        """Lines of a byte range count from the range's first record: count the object's
        lines before it (done only when reporting a failure)."""
        if unit.start == 0:
            return line
        before = 0
        with self.storage.open_read(unit.obj.uri) as source:
            remaining = unit.start - 1
            while remaining > 0 and (block := source.read(min(BLOCK_BYTES, remaining))):
                before += block.count(b"\n")
                remaining -= len(block)
        return before + 1 + line  # +1: the newline at or after start - 1 ends the last line

    def parts(self, unit: plan.WorkUnit) -> list[str]:
        """The part objects of a range's object (none for a whole object)."""
        if not unit.is_range:
            return []
        return [plan.part_uri(self.output_prefix, u) for u in plan.ranges(unit.obj, unit.parts)]

    def assemble(self, unit: plan.WorkUnit) -> bool:
        """Once every part of the object exists, concatenate them into ``<key>.out`` and delete
        every part of it, stale ones of earlier failed runs too. Two finishers may race here;
        each writes the same bytes atomically, and one that loses the parts to the other's
        cleanup finds the ``.out`` there."""
        parts = self.parts(unit)
        out = plan.output_uri(self.output_prefix, unit.obj.key)
        if self.done(out) or not all(self.done(p) for p in parts):
            return False
        try:
            copied = self.storage.concatenate(parts, out, self.output_type)
        except StorageError:
            if self.done(out):
                return False
            raise
        try:
            leftovers = self.storage.list(out + plan.PART_MARK)
        except StorageError as exc:
            log.warning("cannot list the parts of %s to remove them: %s", out, exc)
            leftovers = []
        self.remove(leftovers, f"assembled into {out}")
        self.clear_partials([out])  # of an assembler that died, or lost the race to this one
        how = "copied by the store" if copied else "streamed"
        log.info("assembled %s from %d parts (%s)", out, len(parts), how)
        return True


def no_inputs(settings: BatchSettings) -> str:
    """Why a job with nothing to transform fails (every instance lists the whole input, so
    each says it; one with no share of a non-empty input has nothing to say)."""
    if settings.input_data_type == "ManifestFile":
        return f"the manifest {settings.input_uri} lists no input object"
    found = f"no input objects under {settings.input_uri}"
    prefix = parse_uri(settings.input_uri)
    if prefix.scheme == "file" and "://" in settings.input_uri and "%" in settings.input_uri:
        # a name read as an escape (a plain path's '%' is not one)
        found += (
            f" (the path {clipped(prefix.key, 300)!r}: a file:// URI's %-escapes are decoded; "
            "write a '%' of a name as %25)"
        )
    if prefix_within(settings.input_uri, settings.output_uri):  # as the spec refuses it
        found += (
            f": the input prefix lies inside the output prefix {settings.output_uri} (or is "
            "it), whose objects are never inputs; give the outputs a prefix of their own"
        )
    elif prefix_within(settings.output_uri, settings.input_uri):
        found += f" (objects under the output prefix {settings.output_uri} are not inputs)"
    return found


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped


def write_summary(settings: BatchSettings, storage: Storage, summary: Summary) -> None:
    output = parse_uri(settings.output_uri).uri
    uri = plan.summary_uri(output, settings.instance_index, settings.instance_count)
    try:
        storage.put_bytes(uri, summary.to_json(), plan.RECORD_TYPE)
    except StorageError as exc:
        log.error("cannot write the summary %s: %s", uri, exc)
    if settings.termination_message_path:
        try:
            Path(settings.termination_message_path).write_bytes(summary.termination_message())
        except OSError as exc:
            log.error("cannot write the termination message: %s", exc)


def run(settings: BatchSettings) -> int:
    """The process: returns its exit code."""
    configure_logging(settings.log_level)
    warn_of_unknown_variables(settings)
    registry = CollectorRegistry()
    metrics = BatchMetrics(registry)
    in_flight = InFlight()
    if settings.metrics_port:
        bound = settings.liveness_bound_seconds
        try:
            serve_metrics(settings.metrics_port, settings.metrics_host, registry,
                          stuck=functools.partial(in_flight.stuck, bound))  # fmt: skip
        except OSError as exc:  # e.g. two instances by hand on one machine: the work matters more
            log.warning("no metrics: cannot serve port %d: %s", settings.metrics_port, exc)
        else:
            log.info("metrics and liveness (%s: a mini-batch in flight over %g s fails it) on "
                     "%s:%d", LIVENESS_PATH, bound, settings.metrics_host,
                     settings.metrics_port)  # fmt: skip
    storage = Storage()
    try:
        model = XGBoostModel.load(
            settings.model_uri, storage, settings.allow_pickle, settings.predict_threads
        )
    except ModelLoadError as exc:  # a storage error reading it too (read_artifact)
        failed = Summary(settings.instance_index, settings.instance_count)
        named = "" if settings.model_uri in str(exc) else f" {settings.model_uri}"
        failed.error = f"cannot load the model{named}: {exc}"
        log.error("%s", failed.error)
        write_summary(settings, storage, failed)  # the job's status says why, not an exit code
        return EXIT_MODEL_LOAD_FAILED
    try:
        runner = Runner(settings, storage, model, metrics, in_flight)
    except ValueError as exc:  # a filter we cannot parse
        log.error("%s", exc)
        return EXIT_CANNOT_START
    signal.signal(signal.SIGTERM, _stop)
    # What exists now (modules, settings, the model) lives as long as the process: no garbage
    # collection walks it again, at exit either (measured: 4 % of a 2,000,000-row run's CPU).
    # The command turns collection off while it imports (~20 ms of CPU): on again from here.
    gc.freeze()
    gc.enable()
    summary = runner.run()
    if runner.runs_again is not None:  # no summary: the instance runs again, as one killed does
        print(summary.line(), file=sys.stderr)
        return runner.runs_again
    write_summary(settings, storage, summary)
    print(summary.line(), file=sys.stderr)
    if summary.stopped:
        return EXIT_STOPPED
    if summary.error:
        return EXIT_CANNOT_START
    return EXIT_OBJECTS_FAILED if summary.failures else 0
