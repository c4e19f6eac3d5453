"""What an operator of ``infermodes up`` follows a failed request by: the id its client got
(``x-amzn-RequestId``) in the gateway's log line and in the model server's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import AbaloneModel
from tests.support.async_plane import to_csv
from tests.support.batch import FAULTS
from tests.support.local import manifest, running_up
from tests.support.processes import wait_until


def test_a_request_failing_at_the_model_server_shows_one_id_in_the_answer_and_both_logs(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway made an id, answered it and logged it, but did not send it to the replica:
    the model server's traceback had nothing to join it with (``faults/``: every prediction
    of ``up``'s processes raises, as a bug would)."""
    faults = os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", faults)  # up's processes get its environment
    monkeypatch.setenv("INFERMODES_TEST_FAILING_PREDICTS", "1000000")
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    state = tmp_path / "state"
    with running_up(state, files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["phase"] == "InService", 60, "InService")
        answer = up.invoke("abalone", to_csv(abalone_model.test_rows[:1]))
        assert answer.status_code == 502, answer.text
        named = answer.headers["x-amzn-requestid"]
        server_logs = list((state / "logs" / "abalone").glob("*.log"))

        def logged_by_the_server() -> bool:
            return any(f"(request {named})" in log.read_text() for log in server_logs)

        wait_until(logged_by_the_server, 30, "the model server's line naming the request")
        gateway_lines = [line for line in up.log.splitlines() if named in line]
    assert any("answered 502" in line for line in gateway_lines), up.log
    server_text = "\n".join(log.read_text() for log in server_logs)
    assert f"unexpected error in /invocations (request {named})" in server_text, server_text
    assert "RuntimeError: injected transient failure" in server_text, server_text
