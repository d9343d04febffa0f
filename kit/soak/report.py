"""What a soak saw, in numbers and a picture: summary.json, the line `inv soak` prints, why it
failed, and latency.png. Pure over the answers and events the soak recorded (kit/soak/run.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SPREAD_LIMIT = 0.25  # gRPC round_robin: every replica within ±25 % of the mean


@dataclass
class Answer:
    started: float
    ended: float
    protocol: str
    b: Optional[float]  # the version's offset b (0.5 * x + b); None: failed
    error: str = ""
    replica: Optional[int] = None  # which replica answered
    retries: int = 0  # attempts beyond the first (REST: on another replica; gRPC: its retry policy, by channelz)


def _pct(values, q) -> Optional[float]:
    return float(np.percentile(values, q)) if len(values) else None


def _ms(answers) -> list[float]:
    return [(a.ended - a.started) * 1000 for a in answers]


def spread(counts: list[float]) -> dict:
    """How far each replica's share is from the mean (fractions)."""
    mean = float(np.mean(counts)) if counts else 0.0
    deviations = [(c - mean) / mean if mean else 0.0 for c in counts]
    worst = max((abs(d) for d in deviations), default=0.0)
    return {"mean": round(mean, 1), "deviation": [round(d, 3) for d in deviations], "max_deviation": round(worst, 3),
            "within_limit": worst <= SPREAD_LIMIT}


def summarize(out: Path, answers: list, events: list, b_of: dict, t0: float, kills: Optional[list] = None,
              replicas: int = 1, rss_mb: Optional[dict] = None, duration: Optional[float] = None) -> dict:
    """`events`: rollout steps {"action", "started", "acknowledged", "stable", ...} in seconds since t0;
    `kills`: {"signal", "replica", "at", "back"} (seconds since t0: the kill, the replica serving again)."""
    kills = kills or []
    ok = [a for a in answers if a.b is not None]
    failed = [a for a in answers if a.b is None]
    # A request that started after a switch was acknowledged, and before the next switch began,
    # must be answered by that switch's stable version.
    wrong, wrong_by_replica = 0, {}
    for i, event in enumerate(events):
        start = event["acknowledged"] + t0
        end = events[i + 1]["started"] + t0 if i + 1 < len(events) else float("inf")
        want = b_of[event["stable"]]
        for a in ok:
            if start <= a.started < end and a.b != want:
                wrong += 1
                wrong_by_replica[str(a.replica)] = wrong_by_replica.get(str(a.replica), 0) + 1

    def near_switch(a) -> bool:  # within 1 s of a switch starting, or before it was acknowledged
        return any(abs(a.started - (e["started"] + t0)) < 1.0
                   or (e["started"] + t0) <= a.started <= (e["acknowledged"] + t0) for e in events)

    near = _ms([a for a in answers if near_switch(a)])
    latencies = _ms(answers)
    per_replica = {p: [sum(1 for a in ok if a.protocol == p and a.replica == i) for i in range(replicas)]
                   for p in ("rest", "grpc")}
    # The balancing policy's spread: requests while every replica was up (a stopped replica's
    # share drops for as long as it is away, whatever the policy).
    away = [(k["at"] + t0, k["back"] + 1.0 + t0) for k in kills]
    steady = [a for a in ok if a.protocol == "grpc" and not any(lo <= a.started <= hi for lo, hi in away)]
    steady_grpc = [sum(1 for a in steady if a.replica == i) for i in range(replicas)]
    summary = {
        "replicas": replicas,
        "requests": len(answers), "failed": len(failed), "wrong_version_after_ack": wrong,
        "wrong_version_by_replica": wrong_by_replica,
        "retries": {p: sum(a.retries for a in answers if a.protocol == p) for p in ("rest", "grpc")},
        "switches": len(events),
        "throughput_rps": round(len(ok) / duration, 1) if duration else None,
        "latency_ms": {"p50": _pct(latencies, 50) or 0.0, "p99": _pct(latencies, 99) or 0.0},
        "latency_around_switches_ms": {"p50": _pct(near, 50), "p99": _pct(near, 99)},
        "agreement_s": [e.get("agreement_s") for e in events],
        "requests_per_replica": per_replica,
        "grpc_per_replica_all_up": steady_grpc,
        "grpc_spread": spread(steady_grpc) if replicas > 1 else None,
        "kills": [_kill_window(k, answers, t0) for k in kills],
        "rss_mb": rss_mb or {},
        # every replica's resident memory added up, after each switch (events keep it per replica)
        "rss_mb_after_each_switch": [_total(e["rss_mb"]) for e in events if "rss_mb" in e],
        "events": events,
        "first_errors": [a.error for a in failed[:5]],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(out / "latency.png", answers, events, t0, kills, replicas)
    return summary


def _kill_window(kill: dict, answers: list, t0: float) -> dict:
    """The requests from 1 s before the kill until 1 s after the replica served again."""
    lo, hi = kill["at"] - 1.0 + t0, kill["back"] + 1.0 + t0
    inside = [a for a in answers if lo <= a.started <= hi]
    ms = _ms(inside)
    return {**kill, "requests": len(inside), "failed": sum(a.b is None for a in inside),
            "retries": sum(a.retries for a in inside), "p50_ms": _pct(ms, 50), "p99_ms": _pct(ms, 99)}


def _total(rss) -> float:
    return round(sum(v for v in rss.values() if v), 1) if isinstance(rss, dict) else rss


def report(summary: dict, out: Path, wanted: int | None = None) -> tuple[str, str | None]:
    """What `inv soak` prints, and why the soak failed (None when it passed): a request that failed,
    an answer from another version than the stable one once a switch was acknowledged, no switch
    made at all (the time limit came first), fewer switches than `wanted`, a retry around a
    graceful stop (SIGTERM must need none), or gRPC requests spread unevenly over the replicas."""
    rss = summary["rss_mb_after_each_switch"]
    first, last = (rss[0], rss[-1]) if rss else (None, None)
    rss_text = f"rss after switches {first:.0f} -> {last:.0f} MB" if rss else "no switch made"
    line = (f"replicas {summary.get('replicas', 1)}"
            + (f" x {summary['workers']} workers" if summary.get("workers", 1) > 1 else "")
            + f", requests {summary['requests']}, failed {summary['failed']}, "
            f"retries {sum(summary.get('retries', {}).values())}, wrong version after ack "
            f"{summary['wrong_version_after_ack']}, switches {summary['switches']}"
            + (f" of {wanted}" if wanted else "") + ", p50 "
            f"{summary['latency_ms']['p50']:.1f} ms, p99 {summary['latency_ms']['p99']:.1f} ms; {rss_text}"
            + f"; {out / 'summary.json'}, {out / 'latency.png'}")
    graceful_retries = sum(k["retries"] + k["failed"] for k in summary.get("kills", []) if k["signal"] == "SIGTERM")
    failure = None
    if summary["failed"] or summary["wrong_version_after_ack"]:
        failure = (f"soak: {summary['failed']} request(s) failed, {summary['wrong_version_after_ack']} answered "
                   "by the wrong version after a switch")
    elif not summary["switches"]:
        failure = "soak: no switch was made before the time limit"
    elif wanted and summary["switches"] < wanted:
        failure = f"soak: only {summary['switches']} of {wanted} switches within the time limit"
    elif graceful_retries:
        failure = f"soak: {graceful_retries} request(s) needed a retry around a graceful stop (SIGTERM)"
    elif summary.get("grpc_spread") and not summary["grpc_spread"]["within_limit"]:
        failure = (f"soak: gRPC requests per replica while all were up {summary['grpc_per_replica_all_up']} deviate "
                   f"up to {summary['grpc_spread']['max_deviation']:.0%} from the mean (limit {SPREAD_LIMIT:.0%})")
    return line, failure


def comparison(summaries: dict, path: Path) -> list[str]:
    """The same soak at several replica counts, side by side; written to `path` as JSON too."""
    rows = {n: {"requests": s["requests"], "failed": s["failed"], "retries": sum(s["retries"].values()),
                "throughput_rps": s["throughput_rps"], "p50_ms": round(s["latency_ms"]["p50"], 1),
                "p99_ms": round(s["latency_ms"]["p99"], 1), "switches": s["switches"],
                "wrong_version_after_ack": s["wrong_version_after_ack"]} for n, s in sorted(summaries.items())}
    path.write_text(json.dumps(rows, indent=1))
    lines = ["replicas  requests  req/s   p50 ms  p99 ms  failed  retries  wrong"]
    lines += [f"{n:>8}  {r['requests']:>8}  {r['throughput_rps'] or 0:>5.0f}  {r['p50_ms']:>6.1f}  "
              f"{r['p99_ms']:>6.1f}  {r['failed']:>6}  {r['retries']:>7}  {r['wrong_version_after_ack']:>5}"
              for n, r in rows.items()]
    return lines + [str(path)]


def plot(path: Path, answers: list, events: list, t0: float, kills: Optional[list] = None, replicas: int = 1) -> None:
    """Latency over time, one panel per replica (the requests it answered), rollout steps as lines,
    each stop or kill shaded from the signal until the replica served again."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(replicas, 1, figsize=(11, 1.2 + 2.3 * replicas), sharex=True, squeeze=False)
    step_colours = {"canary": "orange", "promote": "purple", "rollback": "black"}
    for index, ax in enumerate(axes[:, 0]):
        mine = [a for a in answers if replicas == 1 or a.replica == index]
        for protocol, colour in (("rest", "tab:blue"), ("grpc", "tab:green")):
            pts = [(a.started - t0, (a.ended - a.started) * 1000)
                   for a in mine if a.protocol == protocol and a.b is not None]
            if pts:
                ax.scatter(*zip(*pts), s=2, alpha=0.35, color=colour, label=f"{protocol} (label stable)")
        bad = [(a.started - t0, (a.ended - a.started) * 1000) for a in answers
               if a.b is None and (replicas == 1 or a.replica in (index, None))]
        if bad:
            ax.scatter(*zip(*bad), s=14, color="red", marker="x", label="failed")
        for e in events:
            ax.axvline(e["acknowledged"], color=step_colours[e["action"]], lw=0.7, alpha=0.6)
        for k in kills or []:
            if k["replica"] == index:
                colour = "tab:red" if k["signal"] == "SIGKILL" else "tab:cyan"
                ax.axvspan(k["at"], k["back"], color=colour, alpha=0.2, label=f"{k['signal']}, until serving again")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"replica {index}: {len(mine)} requests answered" if replicas > 1 else
                     f"Soak: {len(answers)} requests, {len(events)} switches", fontsize=9, loc="left")
        for action, colour in step_colours.items():
            ax.plot([], [], color=colour, label=f"{action} acknowledged")
        ax.legend(loc="upper right", fontsize=6, markerscale=4, ncol=2)
    if replicas > 1:
        fig.suptitle(f"Soak over {replicas} replicas: {len(answers)} requests, {len(events)} switches "
                     "(gRPC round_robin; REST spread over the replicas in rotation)", fontsize=10)
    axes[-1, 0].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
