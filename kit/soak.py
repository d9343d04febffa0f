"""Soak: steady REST and gRPC traffic while versions are published, canaried, promoted and rolled back.

Loopback only, bounded in switches and time. Every version of the soak model answers
0.5 * x + b with b set per export, so each answer names the version that produced it. Reports
requests sent and failed, answers from a wrong version after a switch was acknowledged,
latency overall and around switches, and the server's resident memory after every switch;
writes summary.json and latency.png.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import rollout as ro
from kit.process import ServerProcess, free_port


@dataclass
class Answer:
    started: float
    ended: float
    protocol: str
    b: float | None  # None: failed
    error: str = ""


class Traffic:
    def __init__(self, rest: str, grpc_target: str, model: str, rest_clients: int, grpc_clients: int):
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rest, args=(rest, model), daemon=True)
                         for _ in range(rest_clients)]
        self._threads += [threading.Thread(target=self._grpc, args=(grpc_target, model), daemon=True)
                          for _ in range(grpc_clients)]

    def _record(self, protocol, call):
        started = time.monotonic()
        try:
            y = call()
            self.answers.append(Answer(started, time.monotonic(), protocol, round(y - 0.5, 3)))
        except Exception as exc:  # counted as a failed request
            self.answers.append(Answer(started, time.monotonic(), protocol, None, repr(exc)[:200]))

    def _rest(self, rest, model):
        url = f"{rest}/v1/models/{model}/labels/stable:predict"
        body = json.dumps({"instances": [[1.0]]}).encode()

        def call():
            req = urllib.request.Request(url, data=body, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())["predictions"][0][0]

        while not self._stop.is_set():
            self._record("rest", call)

    def _grpc(self, target, model):
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from pyserving.codecs.tensor_proto import from_numpy

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.version_label = "stable"
        request.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                self._record("grpc", lambda: stub.Predict(request, timeout=30).outputs["y"].float_val[0])

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# One round: a canary dropped, two canaries promoted, then a rollback to the previous stable version;
# cut after the last switch asked for, so that any N >= 2 makes exactly N switches, a rollback among them.
ROUND = ("publish", "canary", "rollback", "publish", "canary", "promote", "publish", "canary", "promote", "rollback")


def plan(switches: int) -> list[str]:
    """Exactly `switches` switches (canary, promote, rollback), each with the publish it needs."""
    actions, made = [], 0
    while made < switches:
        for action in ROUND:
            if made == switches:
                break
            actions.append(action)
            made += action != "publish"
    return actions


def run(out: Path, switches: int = 24, max_seconds: float = 300.0, rest_clients: int = 2, grpc_clients: int = 2,
        say=print) -> dict:
    from pyserving.examples import half_plus_two

    out.mkdir(parents=True, exist_ok=True)
    base, staging, config = out / "models" / "soak", out / "staging", out / "models" / "models.config"
    for stale in (base, staging):
        if stale.exists():
            import shutil
            shutil.rmtree(stale)
    config.parent.mkdir(parents=True, exist_ok=True)
    for f in config.parent.glob("*" + ro.STATE_SUFFIX):
        f.unlink()
    actions = plan(switches)
    exports = 1 + actions.count("publish")
    say(f"[soak] exporting {exports} versions of the soak model")
    for b in range(1, exports + 1):
        half_plus_two.write_tf1(str(staging), b, b=float(b))
    b_of = {ro.publish(base, staging / "1"): 1.0}
    state = ro.Rollout("soak", str(base), stable=1)
    ro.write_config(config, [], state)
    ro.save_state(config, state)
    grpc_port, rest_port = free_port(), free_port()
    server = ServerProcess([sys.executable, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                            f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
                            "--file_system_poll_wait_seconds=1"], out / "server.log", ready_port=rest_port)
    server.start()
    events = []  # (action, started, acknowledged, stable version, rss MB)
    rest = f"http://127.0.0.1:{rest_port}"
    traffic = Traffic(rest, f"127.0.0.1:{grpc_port}", "soak", rest_clients, grpc_clients)
    t0 = time.monotonic()
    try:
        server.wait_ready()
        traffic.start()
        time.sleep(1.0)
        next_b = 2
        for action in actions:
            if time.monotonic() - t0 > max_seconds:
                say(f"[soak] time limit of {max_seconds:.0f} s reached")
                break
            if action == "publish":
                version = ro.publish(base, staging / str(next_b))
                b_of[version] = float(next_b)
                next_b += 1
                continue
            new = (ro.start_canary(state, max(b_of)) if action == "canary"
                   else ro.promote(state) if action == "promote" else ro.rollback(state))
            started = time.monotonic()
            acked = ro.apply(config, new, [], [rest]).at
            state = new
            events.append({"action": action, "started": started - t0, "acknowledged": acked - t0,
                           "stable": state.stable, "rss_mb": round(rss_mb(server.pid), 1)})
            say(f"[soak] {len(events):2d} {action:<8} stable={state.stable} canary={state.canary} "
                f"acknowledged in {acked - started:.2f} s, rss {events[-1]['rss_mb']:.0f} MB")
            time.sleep(0.3)
        time.sleep(1.0)
    finally:
        traffic.stop()
        server.stop()
    return summarize(out, traffic.answers, events, b_of, t0)


def summarize(out: Path, answers: list, events: list, b_of: dict, t0: float) -> dict:
    ok = [a for a in answers if a.b is not None]
    failed = [a for a in answers if a.b is None]
    # A request that started after a switch was acknowledged, and before the next switch began,
    # must be answered by that switch's stable version.
    wrong = 0
    for i, event in enumerate(events):
        start = event["acknowledged"] + t0
        end = events[i + 1]["started"] + t0 if i + 1 < len(events) else float("inf")
        want = b_of[event["stable"]]
        wrong += sum(1 for a in ok if start <= a.started < end and a.b != want)
    latencies = np.array([(a.ended - a.started) * 1000 for a in answers]) if answers else np.array([0.0])
    def near_switch(a) -> bool:  # within 1 s of a switch starting, or before it was acknowledged
        return any(abs(a.started - (e["started"] + t0)) < 1.0
                   or (e["started"] + t0) <= a.started <= (e["acknowledged"] + t0) for e in events)

    near = [(a.ended - a.started) * 1000 for a in answers if near_switch(a)]
    summary = {
        "requests": len(answers), "failed": len(failed), "wrong_version_after_ack": wrong,
        "switches": len(events),
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))},
        "latency_around_switches_ms": {"p50": float(np.percentile(near, 50)) if near else None,
                                       "p99": float(np.percentile(near, 99)) if near else None},
        "rss_mb_after_each_switch": [e["rss_mb"] for e in events],
        "events": events,
        "first_errors": [a.error for a in failed[:5]],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(out / "latency.png", answers, events, t0)
    return summary


def report(summary: dict, out: Path, wanted: int | None = None) -> tuple[str, str | None]:
    """What `inv soak` prints, and why the soak failed (None when it passed): a request that failed,
    an answer from another version than the stable one once a switch was acknowledged, no switch
    made at all (the time limit came first), which leaves nothing tested, or fewer switches than
    the `wanted` ones."""
    rss = summary["rss_mb_after_each_switch"]
    line = (f"requests {summary['requests']}, failed {summary['failed']}, wrong version after ack "
            f"{summary['wrong_version_after_ack']}, switches {summary['switches']}"
            + (f" of {wanted}" if wanted else "") + ", p50 "
            f"{summary['latency_ms']['p50']:.1f} ms, p99 {summary['latency_ms']['p99']:.1f} ms; "
            + (f"rss after switches {rss[0]:.0f} -> {rss[-1]:.0f} MB" if rss else "no switch made")
            + f"; {out / 'summary.json'}, {out / 'latency.png'}")
    failure = None
    if summary["failed"] or summary["wrong_version_after_ack"]:
        failure = (f"soak: {summary['failed']} request(s) failed, {summary['wrong_version_after_ack']} answered "
                   "by the wrong version after a switch")
    elif not summary["switches"]:
        failure = "soak: no switch was made before the time limit"
    elif wanted and summary["switches"] < wanted:
        failure = f"soak: only {summary['switches']} of {wanted} switches within the time limit"
    return line, failure


def plot(path: Path, answers: list, events: list, t0: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for protocol, colour in (("rest", "tab:blue"), ("grpc", "tab:green")):
        pts = [(a.started - t0, (a.ended - a.started) * 1000)
               for a in answers if a.protocol == protocol and a.b is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=2, alpha=0.4, color=colour, label=f"{protocol} (label stable)")
    bad = [(a.started - t0, (a.ended - a.started) * 1000) for a in answers if a.b is None]
    if bad:
        ax.scatter(*zip(*bad), s=12, color="red", marker="x", label="failed")
    colours = {"canary": "orange", "promote": "purple", "rollback": "black"}
    for e in events:
        ax.axvline(e["acknowledged"], color=colours[e["action"]], lw=0.8, alpha=0.7)
    for action, colour in colours.items():
        ax.plot([], [], color=colour, label=f"{action} acknowledged")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Soak: {len(answers)} requests, {len(events)} switches")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
