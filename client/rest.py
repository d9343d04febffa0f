"""TF Serving REST API helpers on `requests`: status, version choice, predict, and replicas.

Connections come from a requests Session whose adapter carries urllib3's `Retry` for connection
failures only: a connection refused or timed out before the request went out is tried again;
nothing is tried again once the request was sent, and no answer (whatever its status) is.
`Replicas` spreads requests over several servers of one model, round-robin, and sends a request
to the next replica when the connection failed before any answer (refused, reset, closed).
"""
from __future__ import annotations

import itertools
import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

_VERSION_SUFFIX = re.compile(r"^(?P<base>.*?)/versions/(?P<version>\d+)/?$")
_LABEL_SUFFIX = re.compile(r"^(?P<base>.*?)/labels/(?P<label>[^/:]+)/?$")


class ServingError(RuntimeError):
    """The server answered with an error (`status`: its HTTP status), no server answered
    (`status` None), or no version is usable."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


def split_model_url(url):
    """'http://h:8501/v1/models/svm[/versions/3]' -> (model_url, version or None)."""
    match = _VERSION_SUFFIX.match(url.rstrip("/"))
    if match:
        return match.group("base"), int(match.group("version"))
    return url.rstrip("/"), None


def split_label_url(url):
    """'http://h:8501/v1/models/svm/labels/stable' -> (model_url, 'stable'); (url, None) without a label."""
    match = _LABEL_SUFFIX.match(url.rstrip("/"))
    if match:
        return match.group("base"), match.group("label")
    return url.rstrip("/"), None


def label_version(model_url, label, timeout=30.0, session=None):
    """The version a label points at now: GET <model_url>/labels/<label>/metadata, its model_spec.version."""
    answer = http_json("%s/labels/%s/metadata" % (model_url.rstrip("/"), label), timeout=timeout, session=session)
    return int(answer["model_spec"]["version"])


def label_predict_url(model_url, label):
    return "%s/labels/%s:predict" % (model_url.rstrip("/"), label)


def pick_version(status):
    """Highest version whose state is AVAILABLE in a GET /v1/models/<name> answer.

    TF Serving answers {"model_version_status": [{"version": "2", "state": "AVAILABLE",
    "status": {...}}, ...]}; versions are int64 and so arrive as strings.
    """
    available = [int(entry["version"]) for entry in status.get("model_version_status", [])
                 if entry.get("state") == "AVAILABLE"]
    if not available:
        states = ["%s:%s" % (e.get("version"), e.get("state"))
                  for e in status.get("model_version_status", [])]
        raise ServingError("no AVAILABLE model version (server reports %s)" % (states or "none"))
    return max(available)


def predict_url(model_url, version):
    return "%s/versions/%d:predict" % (model_url.rstrip("/"), int(version))


def build_predict_request(instances, signature_name="serving_default"):
    """The row-format predict body; numpy rows become plain lists of floats."""
    rows = [row.tolist() if hasattr(row, "tolist") else list(row) for row in instances]
    return {"signature_name": signature_name, "instances": rows}


def infer_path(predict_path):
    """A TF Serving predict path -> the Open Inference Protocol's infer path for the same model and
    version or label (pyserving takes a label as the V2 version string):
    '/v1/models/svm/versions/3:predict' -> '/v2/models/svm/versions/3/infer',
    '/v1/models/svm/labels/stable:predict' -> '/v2/models/svm/versions/stable/infer'."""
    match = re.fullmatch(r"(?P<prefix>.*?)/v1/models/(?P<name>[^/:]+)(?:/(?:versions|labels)/(?P<v>[^/:]+))?:predict",
                         predict_path)
    if match is None:
        raise ValueError("not a TF Serving predict path: %s" % predict_path)
    version = "/versions/%s" % match.group("v") if match.group("v") else ""
    return "%s/v2/models/%s%s/infer" % (match.group("prefix"), match.group("name"), version)


def build_infer_request(instances, input_name="x", signature_name="serving_default"):
    """The Open Inference Protocol's JSON request for float rows: one FP32 input [rows, width]."""
    rows = [row.tolist() if hasattr(row, "tolist") else list(row) for row in instances]
    body = {"inputs": [{"name": input_name, "datatype": "FP32", "shape": [len(rows), len(rows[0]) if rows else 0],
                        "data": rows}]}
    if signature_name != "serving_default":
        body["parameters"] = {"signature_name": signature_name}
    return body


def infer_predictions(answer):
    """A V2 infer answer's outputs as TF Serving's row-format predictions: one {output: row value}
    per row (a [rows] output gives a scalar, [rows, n] a list)."""
    columns = {}
    for output in answer["outputs"]:
        shape, data = output["shape"], output["data"]
        width = 1
        for dim in shape[1:]:
            width *= dim
        columns[output["name"]] = [data[i] if len(shape) == 1 else data[i * width:(i + 1) * width]
                                   for i in range(shape[0] if shape else 1)]
    rows = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]


CONNECT_RETRIES = 2  # a refused connection is tried this many more times (a server restarting)


def session(connect_retries: int = CONNECT_RETRIES, backoff_s: float = 0.1) -> requests.Session:
    """A Session retrying connection failures only (urllib3 `Retry`): read, status and other
    errors are 0, so a request that went out, or got any answer, is never sent again."""
    retry = Retry(total=None, connect=connect_retries, read=0, status=0, other=0, redirect=0,
                  backoff_factor=backoff_s, raise_on_status=False)
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


_default: Optional[requests.Session] = None
_default_lock = threading.Lock()


def default_session() -> requests.Session:
    """One Session for the module's plain functions, so their connections are reused."""
    global _default
    with _default_lock:
        if _default is None:
            _default = session()
        return _default


def retries_made(response: requests.Response) -> int:
    """The connection retries urllib3 made before this answer (its Retry history)."""
    retries = getattr(response.raw, "retries", None)
    return len(retries.history) if retries is not None else 0


def _send(s: requests.Session, url: str, payload, timeout: float) -> requests.Response:
    if payload is None:
        return s.get(url, timeout=timeout, headers={"Accept": "application/json"})
    return s.post(url, json=payload, timeout=timeout, headers={"Accept": "application/json"})


def _decode(response: requests.Response, method: str, url: str):
    if not response.ok:
        raise ServingError("%s %s -> HTTP %d: %s" % (method, url, response.status_code, response.text),
                           status=response.status_code)
    return response.json()


def http_json(url, payload=None, timeout=30.0, session=None):
    """GET (payload None) or POST JSON; return the decoded answer or raise ServingError."""
    method = "GET" if payload is None else "POST"
    try:
        response = _send(session or default_session(), url, payload, timeout)
    except requests.RequestException as err:
        raise ServingError("%s %s failed: %s" % (method, url, err)) from None
    return _decode(response, method, url)


def split_base_url(url: str) -> tuple[str, str]:
    """'http://h:8501/v1/models/svm' -> ('http://h:8501', '/v1/models/svm')."""
    parts = urllib.parse.urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError("not an http(s) URL: %r" % url)
    return "%s://%s" % (parts.scheme, parts.netloc), parts.path.rstrip("/")


def split_replica_urls(urls) -> tuple[list[str], str]:
    """Several URLs of one model path on different servers ('a,b' or a list) -> (base URLs, path)."""
    items = [u.strip() for u in (urls.split(",") if isinstance(urls, str) else urls) if u.strip()]
    if not items:
        raise ValueError("no URL given")
    split = [split_base_url(u) for u in items]
    paths = {path for _, path in split}
    if len(paths) > 1:
        raise ValueError("the replicas' URLs must name the same path, not %s" % sorted(paths))
    return [base for base, _ in split], paths.pop()


@dataclass(frozen=True)
class Reply:
    answer: object  # the decoded JSON
    replica: str  # the base URL that answered
    retries: int  # other replicas tried first (their connections failed) + urllib3's connection retries


class Replicas:
    """Several servers of one model (replicas), requests spread round-robin over them.

    A request whose connection fails before any answer (requests.ConnectionError: refused,
    reset, closed without a response) goes to the next replica, each tried once; an answer is
    final, whatever its status. One Session for all: its pools are per host:port anyway. With
    several replicas urllib3 makes no connection retry of its own (`connect_retries` 0): the
    next replica is the retry. Thread-safe; counts answers per replica and retries.
    """

    def __init__(self, base_urls: Sequence[str], timeout: float = 30.0, connect_retries: Optional[int] = None,
                 ready: Optional[Callable[[], Sequence[str]]] = None):
        # `ready`: which of base_urls are in rotation now (as a Service's endpoints drop a
        # terminating pod and add a ready one); all of them when not given.
        self.ready = ready
        self.base_urls = [u.rstrip("/") for u in base_urls]
        if not self.base_urls:
            raise ValueError("no replica given")
        if connect_retries is None:
            connect_retries = CONNECT_RETRIES if len(self.base_urls) == 1 else 0
        self.timeout = timeout
        self.session = session(connect_retries)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.answered = {u: 0 for u in self.base_urls}  # answers (any status) per replica
        self.retries = 0

    def request(self, path: str, payload=None, timeout: Optional[float] = None) -> Reply:
        """GET (payload None) or POST `path` on the next replica; a ServingError for an error
        answer (never retried) or when no replica could be reached."""
        method = "GET" if payload is None else "POST"
        first = next(self._next)
        failures = []
        bases = [u.rstrip("/") for u in self.ready()] if self.ready is not None else self.base_urls
        if not bases:
            raise ServingError("%s %s: no replica in rotation" % (method, path))
        for i in range(len(bases)):
            base = bases[(first + i) % len(bases)]
            url = base + path
            try:
                response = _send(self.session, url, payload, timeout or self.timeout)
            except requests.ConnectionError as err:  # no answer came: the next replica
                failures.append("%s: %s" % (base, err))
                continue
            except requests.RequestException as err:  # e.g. a read timeout: it may be running
                self._count(None, len(failures))
                raise ServingError("%s %s failed: %s" % (method, url, err)) from None
            retries = len(failures) + retries_made(response)
            self._count(base, retries)
            return Reply(_decode(response, method, url), base, retries)
        self._count(None, len(failures) - 1)
        raise ServingError("%s %s: no replica answered: %s" % (method, path, "; ".join(failures)))

    def predict(self, path: str, payload, timeout: Optional[float] = None) -> Reply:
        return self.request(path, payload, timeout)

    def _count(self, base: Optional[str], retries: int) -> None:
        with self._lock:
            self.retries += retries
            if base is not None:
                self.answered[base] += 1

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Replicas":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
