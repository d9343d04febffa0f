"""Soak: steady REST and gRPC traffic on labels/stable while versions are published, canaried,
promoted and rolled back, over one or several replicas sharing one models.config.

Loopback only, bounded in switches and time. Every version of the soak model answers
0.5 * x + b with b set per export, so each answer names the version that produced it. With
several replicas the clients balance as they would on a cluster (gRPC round_robin over every
replica; REST spread over the replicas that are in rotation), and in the middle of the rollout
one replica is stopped gracefully and started again (a rolling restart: taken out of REST
rotation first, as Kubernetes removes a terminating pod's endpoint, then SIGTERM) and another
is SIGKILLed during a rollout step and started again once the step is acknowledged (a node
lost, the pod rescheduled); a restarted replica takes REST traffic again only once it answers
the current labels (its readiness). kit/soak/report.py turns what was seen into summary.json,
the printed line and latency.png.

With workers (`--workers=N`: one pyserving running N workers on one port pair,
--pyserving_num_workers) the clients know one address, as a TF Serving client does: a request
that got no answer (its worker killed) is sent again on a new connection, which the kernel gives
to a live worker. Each rollout step waits for every worker (its private port), and two thirds in
a worker is SIGKILLed during a step; the supervisor starts it again.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from kit import model_config
from kit.rollout import agreement
from kit.rollout import plan as ro
from kit.serve.replica_set import ReplicaSet
from kit.soak import workers as workers_mod
from kit.soak.report import Answer, summarize

MODEL = "soak"
DOWN_AFTER_S = 2.0  # a killed replica is reported down by a rollout step after 2 s unreachable


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


def kill_plan(switches: int, replicas: int, workers: int = 1) -> dict[int, tuple[str, int]]:
    """Switch number -> (signal, replica): a graceful stop a third of the way in, before that switch,
    and a SIGKILL two thirds in, during it; none with one replica (nothing would answer). One
    replica with workers: ("SIGKILL-worker", worker 1) two thirds in, during that switch."""
    if switches < 3:
        return {}
    if replicas < 2:
        return {(2 * switches) // 3: ("SIGKILL-worker", 1)} if workers > 1 else {}
    return {switches // 3: ("SIGTERM", 1 % replicas), (2 * switches) // 3: ("SIGKILL", 2 % replicas)}


class Endpoints:
    """The REST replicas in rotation, as a Service's endpoints: changed by the soak, read by clients."""

    def __init__(self, urls: list[str]):
        self.all = list(urls)
        self._ready = set(urls)
        self._lock = threading.Lock()

    def ready(self) -> list[str]:
        with self._lock:
            return [u for u in self.all if u in self._ready]

    def remove(self, url: str) -> None:
        with self._lock:
            self._ready.discard(url)

    def add(self, url: str) -> None:
        with self._lock:
            self._ready.add(url)


class Traffic:
    """REST and gRPC client threads, each sending one predict after another until stopped."""

    def __init__(self, endpoints: Endpoints, grpc_addresses: list[str], rest_clients: int, grpc_clients: int):
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self.endpoints = endpoints
        self._threads = [threading.Thread(target=self._client, args=("rest", self._rest), daemon=True)
                         for _ in range(rest_clients)]
        self._threads += [threading.Thread(target=self._client, args=("grpc", self._grpc, grpc_addresses), daemon=True)
                          for _ in range(grpc_clients)]

    def _client(self, protocol: str, loop, *args) -> None:
        """A client thread; one that cannot even start its loop counts as a failed request, so a
        soak never passes on one protocol alone."""
        try:
            loop(*args)
        except Exception as exc:
            now = time.monotonic()
            self.answers.append(Answer(now, now, protocol, None, f"client did not start: {exc!r}"[:200]))

    def _record(self, protocol: str, call: Callable[[], tuple]) -> None:
        started = time.monotonic()
        try:
            y, replica, retries = call()
            self.answers.append(Answer(started, time.monotonic(), protocol, round(y - 0.5, 3), "", replica, retries))
        except Exception as exc:  # counted as a failed request
            self.answers.append(Answer(started, time.monotonic(), protocol, None, repr(exc)[:200],
                                       retries=getattr(exc, "retries", 0)))

    def _rest(self) -> None:
        from client import rest

        path, body = f"/v1/models/{MODEL}/labels/stable:predict", {"instances": [[1.0]]}
        with rest.Replicas(self.endpoints.all, ready=self.endpoints.ready) as replicas:
            def call():
                reply = replicas.predict(path, body, timeout=30)
                return reply.answer["predictions"][0][0], self.endpoints.all.index(reply.replica), reply.retries

            while not self._stop.is_set():
                self._record("rest", call)

    def _grpc(self, addresses: list[str]) -> None:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from client import balancing
        from pyserving.codecs.tensor_proto import from_numpy

        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.version_label = "stable"
        request.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))
        with balancing.SerialChannel(addresses) as channel:  # round_robin over every replica
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel.channel)

            def call():
                traced = channel.call(lambda: stub.Predict(request, timeout=30))
                return traced.result.outputs["y"].float_val[0], addresses.index(traced.replica), traced.retries

            while not self._stop.is_set():
                self._record("grpc", call)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def run(out: Path, switches: int = 24, max_seconds: float = 300.0, rest_clients: int = 2, grpc_clients: int = 2,
        replicas: int = 1, say=print, workers: int = 1) -> dict:
    import shutil

    from pyserving.examples import half_plus_two

    out.mkdir(parents=True, exist_ok=True)
    base, staging, config = out / "models" / MODEL, out / "staging", out / "models" / "models.config"
    for stale in (base, staging):
        if stale.exists():
            shutil.rmtree(stale)
    config.parent.mkdir(parents=True, exist_ok=True)
    for f in config.parent.glob("*" + model_config.STATE_SUFFIX):
        f.unlink()
    actions = plan(switches)
    if workers > 1 and replicas > 1:  # a restarted replica's workers get new private ports, not followed here
        raise ValueError("the soak runs workers on one replica only")
    kills_at = kill_plan(switches, replicas, workers)
    exports = 1 + actions.count("publish")
    say(f"[soak] exporting {exports} versions of the soak model; {replicas} replica(s)"
        + (f", {workers} workers each" if workers > 1 else ""))
    for b in range(1, exports + 1):
        half_plus_two.write_tf1(str(staging), b, b=float(b))
    b_of = {ro.publish(base, staging / "1"): 1.0}
    state = model_config.Rollout(MODEL, str(base), stable=1)
    model_config.write_rollouts(config, [], state)
    model_config.save_state(config, state)
    servers = ReplicaSet(replicas, config, out / "logs",
                         (f"--pyserving_num_workers={workers}",) if workers > 1 else ())
    rests = [r.rest for r in servers.replicas]
    # Workers: one address for the clients, listed once per worker so that a request whose
    # connection died is sent again (on a new connection: a live worker).
    endpoints = Endpoints(rests * workers if workers > 1 else rests)
    traffic = Traffic(endpoints, [r.grpc for r in servers.replicas], rest_clients, grpc_clients)
    events, kills = [], []  # rollout steps; stops and kills (seconds since t0)
    t0 = time.monotonic()
    try:
        servers.start_all()
        if workers > 1:
            rests = workers_mod.wait_serving(servers, replicas)  # each rollout step waits for every worker
        traffic.start()
        time.sleep(1.0)
        next_b, made = 2, 0
        for action in actions:
            if time.monotonic() - t0 > max_seconds:
                say(f"[soak] time limit of {max_seconds:.0f} s reached")
                break
            if action == "publish":
                version = ro.publish(base, staging / str(next_b))
                b_of[version] = float(next_b)
                next_b += 1
                continue
            made += 1
            kill = kills_at.get(made)
            if kill and kill[0] == "SIGTERM":  # between steps: a rolling restart
                kills.append(_rolling_restart(servers, endpoints, kill[1], state, t0, say))
            new = (ro.start_canary(state, max(b_of)) if action == "canary"
                   else ro.promote(state) if action == "promote" else ro.rollback(state))
            lost = {"signal": "SIGKILL", "replica": kill[1]} if kill and kill[0] == "SIGKILL" else None
            worker_lost = ({"signal": "SIGKILL", "replica": 0, "worker": kill[1]}
                           if kill and kill[0] == "SIGKILL-worker" else None)
            started = time.monotonic()
            # A node lost mid-step: the replica dies once the step's first config is written,
            # before any replica acknowledged it.
            hook = (_kill_once(servers, lost, t0) if lost else workers_mod.kill_once(servers, worker_lost, t0)
                    if worker_lost else lambda: None)
            agreed = ro.apply(config, new, [], rests, down_after=DOWN_AFTER_S, config_written=hook)
            state = new
            if lost is not None:
                kills.append(_reschedule(servers, endpoints, lost, state, t0, say))
            if worker_lost is not None:
                kills.append(workers_mod.back(servers, rests, worker_lost, MODEL, state.labels(), t0, say))
            events.append({"action": action, "started": started - t0, "acknowledged": agreed.at - t0,
                           "stable": state.stable, "agreement_s": round(agreed.at - started, 3),
                           "agreed": len(agreed.agreed), "down": sorted(agreed.down),
                           "rss_mb": servers.rss_mb_each()})
            who = (f"worker {kills[-1]['worker']}" if kill and "worker" in kills[-1]
                   else f"replica {kills[-1]['replica']}" if kill else "")
            say(f"[soak] {len(events):2d} {action:<8} stable={state.stable} canary={state.canary} "
                f"{agreed.describe()}" + (f"; {kills[-1]['signal']} {who}, serving again "
                                          f"{kills[-1]['back'] - kills[-1]['at']:.1f} s later" if kill else ""))
            time.sleep(0.3)
        time.sleep(1.0)
    finally:
        duration = time.monotonic() - t0
        traffic.stop()
        rss = servers.rss_mb_each()
        worker_rss = workers_mod.rss(servers) if workers > 1 else None
        servers.stop_all()
    summary = summarize(out, traffic.answers, events, b_of, t0, kills, replicas, rss_mb=rss, duration=duration)
    if workers > 1:
        summary["workers"] = workers
        summary["worker_rss_mb"] = worker_rss  # replica -> worker slot -> MB (rss_mb: the supervisors)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _kill_once(servers: ReplicaSet, lost: dict, t0: float) -> Callable[[], None]:
    """A config_written hook that SIGKILLs the replica at its first call and notes when."""
    def kill() -> None:
        if "at" not in lost:
            servers.kill(lost["replica"])
            lost["at"] = time.monotonic() - t0
    return kill


def _ready_again(servers: ReplicaSet, endpoints: Endpoints, index: int, state: model_config.Rollout) -> None:
    """Start the replica again and put it back in REST rotation once it answers the current labels
    (its readiness; gRPC's round_robin reaches it as soon as its ports open, which is after its
    models, the current config's, are loaded)."""
    replica = servers.start(index)
    agreement.wait([replica.rest], ro.labels_answered(MODEL, state.labels()), 60, f"labels {state.labels()}")
    endpoints.add(replica.rest)


def _rolling_restart(servers: ReplicaSet, endpoints: Endpoints, index: int, state: model_config.Rollout, t0: float,
                     say) -> dict:
    rest = servers.replicas[index].rest
    at = time.monotonic() - t0
    endpoints.remove(rest)  # the endpoint goes first (a preStop delay covers clients already holding it)
    time.sleep(0.5)
    code = servers.terminate(index)
    say(f"[soak] SIGTERM replica {index}: drained and exited with {code}; starting it again")
    _ready_again(servers, endpoints, index, state)
    return {"signal": "SIGTERM", "replica": index, "at": at, "back": time.monotonic() - t0, "exit_code": code}


def _reschedule(servers: ReplicaSet, endpoints: Endpoints, lost: dict, state: model_config.Rollout, t0: float,
                say) -> dict:
    index = lost["replica"]
    endpoints.remove(servers.replicas[index].rest)  # its endpoint goes once the loss is seen
    say(f"[soak] SIGKILL replica {index} during the step; starting it again")
    _ready_again(servers, endpoints, index, state)
    return {**lost, "back": time.monotonic() - t0}
