"""`inv soak` itself (tasks.soak): its printed report and its failure exit, with a real server.

A time limit of 0 s ends the soak before its first switch, which is a failure, so the task's
whole path runs in a few seconds: the soak's server and traffic, the summary, the report line
and the exit. The soak that switches versions under load is in test_updates.py."""
from __future__ import annotations

import json

import pytest
from invoke import MockContext
from invoke.exceptions import Exit

import tasks


def test_inv_soak_reports_and_fails_when_it_made_no_switch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_BUILD_DIR", str(tmp_path / "build"))
    with pytest.raises(Exit) as stopped:
        tasks.soak(MockContext(), switches=1, seconds=0, rest_clients=1, grpc_clients=1)
    assert stopped.value.message == "soak: no switch was made before the time limit"
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "build" / "soak" / "summary.json").read_text())
    assert summary["switches"] == 0 and summary["requests"] > 0 and summary["failed"] == 0
    assert (f"replicas 1, requests {summary['requests']}, failed 0, retries 0, wrong version after ack 0, "
            "switches 0 of 1, ") \
        in out
    assert "no switch made" in out and "[soak] time limit of 0 s reached" in out
