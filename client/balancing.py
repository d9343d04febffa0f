"""gRPC channels that spread calls over several replicas, as a client on a cluster would.

gRPC does the work: a multi-address target (`ipv4:a:p,b:p`, the static twin of a headless
Service's `dns:///name:port`) gives one subchannel per replica, the `round_robin` policy takes
each call to the next READY one, and a service-config `retryPolicy` sends a call that failed
with UNAVAILABLE (a replica killed mid-call) or CANCELLED (see RETRYABLE_CODES) again, to a
replica picked anew.

How many retries gRPC made: gRFC A6 says the client sees `grpc-previous-rpc-attempts` in the
response metadata, but grpcio (C-core, 1.85 checked by tests/client/test_balancing.py) sends it to
the server only (grpc/grpc#32292, open). gRPC's channelz does count them: a channel counts calls,
each of its subchannels counts the attempts it carried, so attempts minus calls are the retries
(policy and transparent ones) and the attempts per subchannel are the calls per replica.
`stats(channel)` reads that through grpcio's channelz accessors (the ones the grpcio-channelz
service wraps); `SerialChannel` tells calls apart, for a channel that makes one call at a time.
"""
from __future__ import annotations

import ipaddress
import json
import threading
import urllib.parse
import weakref
from dataclasses import dataclass, field
from typing import Sequence, Union

import grpc
from grpc._cython import cygrpc  # channelz accessors; grpcio-channelz's servicer calls the same

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# Every PredictionService method only reads, so sending one again is safe. Of ModelService only
# GetModelStatus: HandleReloadConfigRequest changes one replica's config and belongs on a channel
# to that replica, never on a balanced one.
RETRIED_METHODS = ({"service": PREDICTION_SERVICE}, {"service": MODEL_SERVICE, "method": "GetModelStatus"})
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")

Servers = Union[str, Sequence[str]]


def split_servers(servers: Servers) -> list[str]:
    """'a:1,b:2' or ['a:1', 'b:2'] -> ['a:1', 'b:2'] (blanks dropped)."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    return [s.strip() for s in items if s.strip()]


def grpc_target(servers: Servers) -> str:
    """The gRPC target for one or several `host:port` servers.

    One server is passed through as given (gRPC's default `dns:` resolver takes names, and
    `dns:///svc:8500` on a headless Service resolves to every pod). Several become one static
    multi-address target, `ipv4:127.0.0.1:8500,127.0.0.1:8510` or `ipv6:[::1]:8500,[::1]:8510`:
    gRPC resolves no list of names, so hosts must be IP literals of one family, `localhost` read
    as 127.0.0.1 (the kit's replicas listen on IPv4).
    """
    items = split_servers(servers)
    if not items:
        raise ValueError("no server given")
    if len(items) == 1:
        return items[0]
    if any(item.startswith(_SCHEMES) for item in items):
        raise ValueError(f"a target with a scheme (dns:///..., ipv4:...) stands alone, not in a list: {items}")
    families, addresses = set(), []
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"not host:port: {item!r}")
        host = "127.0.0.1" if host == "localhost" else host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"several servers need IP addresses (or one dns:/// name), not {host!r}") from None
        families.add(ip.version)
        addresses.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ValueError(f"IPv4 and IPv6 servers cannot share one target: {items}")
    return ("ipv6:" if 6 in families else "ipv4:") + ",".join(addresses)


# UNAVAILABLE: the replica went away (killed, connection reset, refused). CANCELLED as well,
# because a C-core server that shuts down gracefully ends the calls that reached it but no handler
# yet with CANCELLED instead of UNAVAILABLE (grpc/grpc#41785, open; fix proposed in PR #41786): in
# tests/client/test_balancing.py's SIGTERM test, 2 of 8 runs lost one call so without it, 0 of 20
# with it. A call the client cancels itself is never retried.
RETRYABLE_CODES = ("UNAVAILABLE", "CANCELLED")


def service_config(max_attempts: int = 4, initial_backoff_s: float = 0.05, max_backoff_s: float = 1.0,
                   wait_for_ready: bool = False, retryable_codes: Sequence[str] = RETRYABLE_CODES) -> dict:
    """round_robin over the replicas; a call that failed with one of `retryable_codes` tried
    again, up to `max_attempts` in all (gRPC caps it at 5), each attempt picked anew by
    round_robin. wait_for_ready: a call waits for a READY replica instead of failing at once
    while none is (a single replica restarting)."""
    method = {"name": list(RETRIED_METHODS),
              "retryPolicy": {"maxAttempts": max_attempts, "initialBackoff": f"{initial_backoff_s}s",
                              "maxBackoff": f"{max_backoff_s}s", "backoffMultiplier": 2,
                              "retryableStatusCodes": list(retryable_codes)}}
    if wait_for_ready:
        method["waitForReady"] = True
    return {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method]}


MAX_RECONNECT_BACKOFF_MS = 1000


def channel_options(config: dict | None = None, extra: Sequence[tuple] = ()) -> list[tuple]:
    return [
        ("grpc.service_config", json.dumps(config or service_config())),
        ("grpc.enable_retries", 1),
        # Our policy, also when a cluster's DNS would offer a service config of its own (TXT record).
        ("grpc.service_config_disable_resolution", 1),
        # Subchannels of its own: gRPC otherwise shares one per address among all channels of the
        # process, and channelz would count every channel's calls on it (stats() below).
        ("grpc.use_local_subchannel_pool", 1),
        # A replica that went away is tried again every second at most: gRPC's default backoff
        # grows to 120 s, and a restarted replica would get no calls for many seconds.
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        *extra,
    ]


# channel -> its channelz id; found by creating channels under one lock (see _register).
_channelz_ids: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_creating = threading.Lock()


def _top_channels() -> list[dict]:
    channels, start = [], 0
    while True:
        page = json.loads(cygrpc.channelz_get_top_channels(start))
        channels += page.get("channel", [])
        if page.get("end", True) or not page.get("channel"):
            return channels
        start = int(channels[-1]["ref"]["channelId"]) + 1


def _register(make, target: str):
    # channelz names a channel by its target only, so the new channel is the id that appears for
    # that target while it is made; a lock keeps two of our channels from appearing at once.
    # A target without a scheme is named with gRPC's default resolver's: dns:///127.0.0.1:8500.
    names = {target} if target.startswith(_SCHEMES) else {target, f"dns:///{target}"}
    with _creating:
        before = {c["ref"]["channelId"] for c in _top_channels() if c["data"].get("target") in names}
        made = make()
        new = [int(c["ref"]["channelId"]) for c in _top_channels()
               if c["data"].get("target") in names and c["ref"]["channelId"] not in before]
        if new:
            _channelz_ids[made] = max(new)
        return made


def channel(servers: Servers, config: dict | None = None, options: Sequence[tuple] = ()) -> grpc.Channel:
    """An insecure channel balancing over `servers` (see grpc_target) with retries."""
    target = grpc_target(servers)
    return _register(lambda: grpc.insecure_channel(target, options=channel_options(config, options)), target)


def aio_channel(servers: Servers, config: dict | None = None, options: Sequence[tuple] = ()) -> grpc.aio.Channel:
    """The same for grpc.aio (the load generator); create it inside the running event loop."""
    target = grpc_target(servers)
    return _register(lambda: grpc.aio.insecure_channel(target, options=channel_options(config, options)), target)


@dataclass
class ChannelStats:
    """What gRPC counted on one channel since it was made (channelz), over the subchannels it has
    now: with a static ipv4:/ipv6: target they live as long as the channel."""

    calls: int = 0  # calls the application made
    failed: int = 0  # calls that ended with an error status
    attempts: dict = field(default_factory=dict)  # replica "host:port" -> attempts sent to it
    answered: dict = field(default_factory=dict)  # replica -> attempts it answered with OK
    states: dict = field(default_factory=dict)  # replica -> connectivity state now: READY, CONNECTING, ...

    @property
    def retries(self) -> int:
        """Attempts beyond the first of each call. Exact while every call reaches some replica; a
        call failed before any did (no replica READY) makes it an undercount."""
        return max(0, sum(self.attempts.values()) - self.calls)


def _replica(subchannel_target: str) -> str:
    # 'ipv4:127.0.0.1:8500' -> '127.0.0.1:8500'; 'ipv6:%5B::1%5D:8500' -> '[::1]:8500'
    address = subchannel_target.split(":", 1)[1] if subchannel_target.startswith(_SCHEMES) else subchannel_target
    return urllib.parse.unquote(address)


def stats(chan) -> ChannelStats:
    """channelz counts of a channel made by channel() or aio_channel()."""
    if chan not in _channelz_ids:
        raise ValueError("not a channel made by client.balancing (or channelz is off)")
    node = json.loads(cygrpc.channelz_get_channel(_channelz_ids[chan]))["channel"]
    data = node["data"]
    result = ChannelStats(calls=int(data.get("callsStarted", 0)), failed=int(data.get("callsFailed", 0)))
    for ref in node.get("subchannelRef", []):
        sub = json.loads(cygrpc.channelz_get_subchannel(int(ref["subchannelId"])))["subchannel"]["data"]
        name = _replica(sub.get("target", ref["subchannelId"]))
        result.attempts[name] = result.attempts.get(name, 0) + int(sub.get("callsStarted", 0))
        result.answered[name] = result.answered.get(name, 0) + int(sub.get("callsSucceeded", 0))
        result.states[name] = sub.get("state", {}).get("state", "UNKNOWN")
    return result


@dataclass(frozen=True)
class Traced:
    result: object
    replica: str | None  # "host:port" that answered; None when no replica answered
    retries: int


class SerialChannel:
    """A balanced channel whose calls are made one at a time (one load thread's), each told
    apart by the channelz counts before and after it: which replica answered, how many retries.
    gRPC's Python client says neither per call (no peer(), no grpc-previous-rpc-attempts).
    The channelz reads cost about 0.7 ms per call here: time the call inside rpc()."""

    def __init__(self, servers: Servers, config: dict | None = None, options: Sequence[tuple] = ()):
        self.channel = channel(servers, config, options)
        self._seen = stats(self.channel)

    def call(self, rpc) -> Traced:
        """rpc() makes one call on self.channel and returns its result. A call that failed
        raises its grpc.RpcError, with the retries it took set on it as `.retries`."""
        try:
            result = rpc()
        except grpc.RpcError as err:
            err.retries = self._delta()[1]
            raise
        return Traced(result, *self._delta())

    def _delta(self) -> tuple[str | None, int]:
        now, before = stats(self.channel), self._seen
        self._seen = now
        answered = [r for r, n in now.answered.items() if n > before.answered.get(r, 0)]
        attempts = sum(now.attempts.values()) - sum(before.attempts.values())
        return (answered[0] if answered else None), max(0, attempts - (now.calls - before.calls))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SerialChannel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
