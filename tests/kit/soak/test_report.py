"""kit/soak/report.py: the verdict on a soak (summarize() counts what it saw, report() words it for
`inv soak` and says when the soak failed). Answers, switches and kills are made up here, so that
the right counts are known: the soak itself runs in tests/e2e."""
from __future__ import annotations

import json
import re

import pytest

from kit.soak import report as soak_report

T0 = 100.0
B_OF = {1: 1.0, 2: 2.0}  # version -> the b its answers carry
EVENTS = [  # times in seconds since T0, as run() records them
    {"action": "canary", "started": 2.0, "acknowledged": 2.5, "stable": 1, "rss_mb": {"0": 200.0, "1": 100.0}},
    {"action": "promote", "started": 4.0, "acknowledged": 4.6, "stable": 2, "rss_mb": {"0": 210.0, "1": 100.0}},
]


def answer(at: float, b, protocol="rest", ms: float = 10.0, replica=None, retries=0):
    return soak_report.Answer(T0 + at, T0 + at + ms / 1000, protocol, b, "" if b is not None else "ConnectionError()",
                              replica, retries)


def test_a_clean_soak_passes_and_says_what_it_saw(tmp_path):
    answers = [answer(1.0, 1.0), answer(2.7, 1.0, "grpc"), answer(4.2, 1.0), answer(5.0, 2.0, "grpc")]
    summary = soak_report.summarize(tmp_path, answers, EVENTS, B_OF, T0)
    assert (summary["requests"], summary["failed"], summary["wrong_version_after_ack"], summary["switches"]) == (
        4, 0, 0, 2)
    assert json.loads((tmp_path / "summary.json").read_text())["requests"] == 4
    assert (tmp_path / "latency.png").stat().st_size > 1000
    line, failure = soak_report.report(summary, tmp_path)
    assert failure is None
    assert re.fullmatch(
        r"replicas 1, requests 4, failed 0, retries 0, wrong version after ack 0, switches 2, p50 10\.0 ms, "
        r"p99 10\.0 ms; "
        rf"rss after switches 300 -> 310 MB; {tmp_path}/summary.json, {tmp_path}/latency.png", line), line


def test_failed_requests_and_wrong_versions_after_a_switch_fail_the_soak(tmp_path):
    answers = [
        answer(1.0, 2.0),          # before the first switch: nothing is promised yet
        answer(2.7, 1.0),          # stable is 1 after the canary was acknowledged: right
        answer(3.0, 2.0, "grpc"),  # the canary's answer on the stable label: wrong
        answer(4.2, 1.0),          # the promotion started but is not acknowledged yet: not judged
        answer(5.0, 1.0),          # after the promotion was acknowledged, 1 is wrong
        answer(5.5, None),         # failed
    ]
    summary = soak_report.summarize(tmp_path, answers, EVENTS, B_OF, T0)
    assert (summary["failed"], summary["wrong_version_after_ack"]) == (1, 2)
    assert summary["first_errors"] == ["ConnectionError()"]
    line, failure = soak_report.report(summary, tmp_path)
    assert line.startswith("replicas 1, requests 6, failed 1, retries 0, wrong version after ack 2, switches 2, ")
    assert failure == "soak: 1 request(s) failed, 2 answered by the wrong version after a switch"


def test_a_soak_that_made_no_switch_fails_without_a_crash(tmp_path):
    summary = soak_report.summarize(tmp_path, [answer(1.0, 1.0)], [], B_OF, T0)
    line, failure = soak_report.report(summary, tmp_path)
    assert "switches 0" in line and "no switch made" in line
    assert failure == "soak: no switch was made before the time limit"


def test_a_wrong_version_alone_fails_the_soak(tmp_path):
    summary = soak_report.summarize(tmp_path, [answer(2.7, 1.0), answer(5.0, 1.0, "grpc")], EVENTS, B_OF, T0)
    assert (summary["failed"], summary["wrong_version_after_ack"]) == (0, 1)
    assert soak_report.report(summary, tmp_path)[1] == (
        "soak: 0 request(s) failed, 1 answered by the wrong version after a switch")


def test_fewer_switches_than_asked_for_fail_the_soak(tmp_path):
    answers = [answer(1.0, 1.0), answer(5.0, 2.0, "grpc")]
    summary = soak_report.summarize(tmp_path, answers, EVENTS, B_OF, T0)
    line, failure = soak_report.report(summary, tmp_path, wanted=3)
    assert "switches 2 of 3" in line
    assert failure == "soak: only 2 of 3 switches within the time limit"
    assert soak_report.report(summary, tmp_path, wanted=2)[1] is None


KILLS = [{"signal": "SIGTERM", "replica": 1, "at": 1.5, "back": 2.0},
         {"signal": "SIGKILL", "replica": 2, "at": 4.2, "back": 6.0}]


def test_replicas_are_counted_apart_and_each_kill_gets_its_window(tmp_path):
    grpc = [answer(9.0 + i / 100, 2.0, "grpc", replica=r) for i, r in enumerate([0] * 10 + [1] * 9 + [2] * 11)]
    answers = [answer(1.0, 1.0, replica=0), answer(1.2, 1.0, replica=1), answer(2.7, 1.0, "grpc", replica=2),
               answer(4.3, 1.0, replica=0, retries=1, ms=30.0), answer(5.0, 2.0, replica=1), *grpc]
    summary = soak_report.summarize(tmp_path, answers, EVENTS, B_OF, T0, KILLS, replicas=3, duration=10.0)
    assert summary["requests_per_replica"] == {"rest": [2, 2, 0], "grpc": [10, 9, 12]}
    assert summary["grpc_per_replica_all_up"] == [10, 9, 11]  # the one at 2.7 s came while replica 1 was away
    assert summary["retries"] == {"rest": 1, "grpc": 0} and summary["throughput_rps"] == 3.5
    assert summary["grpc_spread"] == {"mean": 10.0, "deviation": [0.0, -0.1, 0.1], "max_deviation": 0.1,
                                      "within_limit": True}
    term, lost = summary["kills"]
    assert (term["requests"], term["retries"], term["failed"]) == (3, 0, 0)  # 0.5 s to 3.0 s
    assert (lost["requests"], lost["retries"], lost["p99_ms"]) == (2, 1, pytest.approx(29.8))  # 3.2 s to 7.0 s
    line, failure = soak_report.report(summary, tmp_path, wanted=2)
    assert failure is None and line.startswith("replicas 3, requests 35, failed 0, retries 1,")
    assert "latency.png" in line and (tmp_path / "latency.png").stat().st_size > 1000


def test_a_retry_around_a_graceful_stop_fails_the_soak(tmp_path):
    answers = [answer(1.8, 1.0, replica=0, retries=1)]  # inside the SIGTERM's window
    summary = soak_report.summarize(tmp_path, answers, EVENTS, B_OF, T0, KILLS, replicas=3)
    assert soak_report.report(summary, tmp_path)[1] == (
        "soak: 1 request(s) needed a retry around a graceful stop (SIGTERM)")


def test_grpc_spread_beyond_a_quarter_of_the_mean_fails_the_soak(tmp_path):
    answers = [answer(1.0, 1.0, "grpc", replica=r) for r in [0] * 13 + [1] * 10 + [2] * 7]
    summary = soak_report.summarize(tmp_path, answers, EVENTS, B_OF, T0, replicas=3)
    assert summary["grpc_spread"]["max_deviation"] == 0.3
    assert soak_report.report(summary, tmp_path)[1] == (
        "soak: gRPC requests per replica while all were up [13, 10, 7] deviate up to 30% from the mean (limit 25%)")


def test_a_wrong_version_is_counted_against_the_replica_that_answered(tmp_path):
    summary = soak_report.summarize(tmp_path, [answer(5.0, 1.0, replica=2), answer(5.1, 1.0, "grpc")], EVENTS,
                                    B_OF, T0, replicas=3)
    assert summary["wrong_version_after_ack"] == 2 and summary["wrong_version_by_replica"] == {"2": 1, "None": 1}


def test_soaks_side_by_side(tmp_path):
    one = soak_report.summarize(tmp_path, [answer(1.0, 1.0), answer(2.7, 1.0, "grpc", ms=40)], EVENTS, B_OF, T0,
                                duration=2.0)
    lines = soak_report.comparison({3: one, 1: one}, tmp_path / "comparison.json")
    assert lines[0].split() == ["replicas", "requests", "req/s", "p50", "ms", "p99", "ms", "failed", "retries",
                                "wrong"]
    assert [line.split()[:3] for line in lines[1:3]] == [["1", "2", "1"], ["3", "2", "1"]]
    assert json.loads((tmp_path / "comparison.json").read_text())["1"]["p99_ms"] == 39.7
