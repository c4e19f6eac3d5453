"""The batch summary's formats, the terminal progress bar, and in-order concurrency."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from infermodes.endpoints.status import Progress as JobProgress
from infermodes.endpoints.status import ended_progress
from infermodes.workers.batch.runner import Progress
from infermodes.workers.batch.summary import (
    TERMINATION_MESSAGE_LIMIT,
    Failure,
    RangeOutcome,
    Summary,
)


def test_summary_document_for_the_operator() -> None:
    summary = Summary(1, 2, assigned=3, succeeded=2, failed=1, objects_written=2, records=500)
    summary.seconds = 2.0
    summary.cpu_seconds = 1.5
    summary.failures.append(Failure("s3://b/in/c.csv", 17, "column 3: bad"))
    document = json.loads(summary.to_json())
    assert document == {
        "version": 1, "index": 1, "count": 2, "state": "Failed",
        "units": {"assigned": 3, "succeeded": 2, "skipped": 0, "failed": 1},
        "objectsWritten": 2, "records": 500, "seconds": 2.0, "recordsPerSecond": 250.0,
        "cpuSeconds": 1.5,
        "failures": [{"object": "s3://b/in/c.csv", "line": 17, "reason": "column 3: bad"}],
        "ranges": [], "error": None,
    }  # fmt: skip
    assert "FAILED s3://b/in/c.csv line 17: column 3: bad" in summary.line()


BIG, SMALL = "s3://b/in/big.csv", "s3://b/in/small.csv"


def test_a_split_object_counts_once_in_the_job_s_progress_done_or_failed_as_its_ranges() -> None:
    """Two objects, the large one split over both instances, one of its ranges failed: the
    job was reported as 3 objects, 2 done, with the records of the range whose part the
    failure deleted. Then the same job whose ranges both succeeded, and one whose range's
    instance has not ended yet."""
    first = Summary(0, 2, assigned=2, succeeded=2, objects_written=1, records=105)
    first.ranges.append(RangeOutcome(BIG, 0, 2, "succeeded", 100))
    second = Summary(1, 2, assigned=1, failed=1)
    second.failures.append(Failure(BIG, 2001, "column 3: bad"))
    second.ranges.append(RangeOutcome(BIG, 1, 2, "failed", 0))
    documents = [json.loads(summary.termination_message()) for summary in (first, second)]
    assert ended_progress(documents)[0] == JobProgress(total=2, done=1, failed=1, records=5)
    second = Summary(1, 2, assigned=1, succeeded=1, objects_written=1, records=90)
    second.ranges.append(RangeOutcome(BIG, 1, 2, "skipped", 0))  # its part existed
    documents[1] = json.loads(second.to_json())
    assert ended_progress(documents)[0] == JobProgress(total=2, done=2, failed=0, records=195)
    # the first instance ended, the second runs on: its ended range is a unit (as the running
    # instance's is), not the whole object not done: done and records do not step back from
    # what the running instances said (1 done, 105 records, to 0 done and 5)
    assert ended_progress(documents[:1])[0] == JobProgress(total=2, done=2, failed=0, records=105)


def test_range_entries_not_of_this_release_are_left_out() -> None:
    """A summary's ranges are read in the operator's reconcile: an entry that is no range is
    left out, not an exception that stops the job's status."""
    summary = json.loads(Summary(0, 1, assigned=2, succeeded=2, records=12).to_json())
    summary["ranges"] = [{"object": BIG, "range": "x"}, "not a range", None,
                         {"object": BIG, "range": 0, "of": 1, "outcome": "succeeded",
                          "records": 7}]  # fmt: skip
    assert ended_progress([summary])[0] == JobProgress(total=2, done=2, failed=0, records=12)


def test_ranges_that_do_not_fit_the_termination_message_leave_it_whole() -> None:
    """Dropped all together (then counted as units), not cut mid-JSON."""
    summary = Summary(0, 2, assigned=300, succeeded=300)
    summary.ranges += [RangeOutcome(f"s3://b/in/big-{i:03d}.csv", 0, 2, "succeeded", 1)
                       for i in range(300)]  # fmt: skip
    message = json.loads(summary.termination_message())
    assert message["ranges"] == []
    assert ended_progress([message])[0] == JobProgress(total=300, done=300, failed=0, records=0)


def test_states() -> None:
    assert Summary(0, 1).state == "Completed"
    assert Summary(0, 1, error="cannot list").state == "Failed"
    assert Summary(0, 1, stopped=True).state == "Stopped"


def test_termination_message_fits_kubernetes_limit_dropping_failures_from_the_end() -> None:
    summary = Summary(0, 1, failed=500)
    summary.failures.extend(Failure(f"s3://b/in/{i}.csv", i, "x" * 40) for i in range(500))
    message = json.loads(summary.termination_message())
    assert len(summary.termination_message()) <= TERMINATION_MESSAGE_LIMIT
    assert message["units"]["failed"] == 500
    assert 0 < len(message["failures"]) < 500
    assert message["failures"][0]["object"] == "s3://b/in/0.csv"


def test_the_message_of_many_failures_serialises_only_the_few_that_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dropping one failure at a time re-serialised the whole list each time: 4,000 failed
    objects took 43 s at the instance's end, 20,000 about 18 minutes."""
    summary = Summary(0, 1, failed=20_000)
    summary.failures.extend(Failure(f"s3://b/in/{i}.csv", i, "bad") for i in range(20_000))
    sizes: list[int] = []
    compact = Summary._compact

    def counted(self: Summary, failures: list[Failure], ranges: bool) -> bytes:
        sizes.append(len(failures))
        return compact(self, failures, ranges)

    monkeypatch.setattr(Summary, "_compact", counted)
    message = json.loads(summary.termination_message())
    kept = len(message["failures"])
    assert 0 < kept < 100 and message["failures"][-1]["object"] == f"s3://b/in/{kept - 1}.csv"
    assert sizes == list(range(kept + 2))  # none, each that fit, and the one that did not


def test_a_failure_too_long_for_the_message_is_cut_short_and_the_job_still_reads_failed() -> None:
    """A 4,000-character path (or reason, or error) used to leave a message with no failure at
    all, which ``up`` read as Completed."""
    from infermodes.endpoints.status import summary_progress

    summary = Summary(0, 2, failed=4, error="e" * 9_000)
    summary.failures.append(Failure("file:///" + "p/" * 2_000 + "x.csv", 3, "r" * 5_000))
    message = json.loads(summary.termination_message())
    assert len(summary.termination_message()) <= TERMINATION_MESSAGE_LIMIT
    assert message["state"] == "Failed"
    assert message["failures"][0]["line"] == 3 and message["failures"][0]["object"].endswith("...")
    assert len(message["error"]) < 1_000
    _, failures = summary_progress(message)
    assert failures
    # a summary whose failures were all dropped still names a failure
    _, failures = summary_progress({"index": 1, "state": "Failed", "units": {"failed": 4},
                                    "failures": [], "error": None})  # fmt: skip
    assert failures == [{"object": None, "line": None, "reason": "instance 1: 4 unit(s) failed "
                         "(see its summary under the output prefix)", "units": 4}]  # fmt: skip
    assert summary_progress({"state": "Completed", "failures": []})[1] == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    terminal = Terminal()
    progress = Progress(4, terminal)
    progress.advance(records=1000, units=1)
    progress.close()
    assert "1/4 objects" in terminal.getvalue()
    assert "1,000 records" in terminal.getvalue()
    piped = io.StringIO()
    quiet = Progress(4, piped)
    quiet.advance(records=1000, units=1)
    quiet.close()
    assert piped.getvalue() == ""


def test_ordered_keeps_input_order_and_reads_only_as_room_frees_up() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from infermodes.workers.batch.runner import InFlight, ordered

    read: list[int] = []

    def items() -> Iterator[int]:
        for item in range(20):
            read.append(item)
            yield item

    with ThreadPoolExecutor(3) as executor:
        results = ordered(lambda x: x * x, items(), executor, 3, InFlight())
        assert next(results) == 0
        assert len(read) == 3  # the window, no more
        assert list(results) == [x * x for x in range(1, 20)]
    assert list(ordered(lambda x: -x, iter([1, 2]), None, 1, InFlight())) == [-1, -2]
