"""REST routing: a table of (methods, path pattern, handler), and TF Serving's /v1 path grammar.

The table is how APIs share the REST port: each registers its routes (TF Serving's /v1 and the
monitoring path today, the Open Inference Protocol's /v2 later). A request goes to the first
entry, in the order added, whose methods hold its method and whose pattern matches its whole
raw path; one that no entry takes goes to the fallback (TF Serving's 404 page). The /v1 grammar
is http_rest_api_handler.cc's, as pure functions from a path to a Route (table-tested).
Nothing here knows aiohttp: a request is whatever the caller hands to dispatch().
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union
from urllib.parse import unquote

from pyserving.errors import ServingError, invalid_argument

# handler(request, match) -> its answer (for RestApi, a coroutine of a web.StreamResponse); the
# match is its pattern's over the whole path, None for the fallback.
Handler = Callable[[Any, Optional["re.Match[str]"]], Any]


class RouteTable:
    def __init__(self, fallback: Handler):
        self._entries: list[tuple[Optional[frozenset[str]], re.Pattern, Handler]] = []
        self._fallback = fallback

    def add(self, methods: Union[str, Iterable[str], None], pattern: Union[str, re.Pattern],
            handler: Handler) -> None:
        """methods: "POST", several ("GET", "HEAD"), or None for any; pattern: a regex (text or
        compiled) that must match the whole raw path, still percent-encoded."""
        allowed = None if methods is None else frozenset((methods,) if isinstance(methods, str) else methods)
        self._entries.append((allowed, re.compile(pattern), handler))

    def dispatch(self, method: str, path: str, request) -> Any:
        """What the first entry taking (method, path) answers, handler(request, match), returned
        as it is (a coroutine is not awaited here); the fallback's when no entry takes it."""
        for methods, pattern, handler in self._entries:
            if methods is None or method in methods:
                match = pattern.fullmatch(path)
                if match is not None:
                    return handler(request, match)
        return self._fallback(request, None)


# ---- TF Serving's /v1 paths (http_rest_api_handler.cc) --------------------------------------
# re.ASCII: RE2's \d is [0-9] only, Python's would take any Unicode digit.
PREDICTION_RE = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.ASCII
)
STATUS_RE = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.ASCII
)
V1_RE = re.compile(r"(?i)/v1/.*")
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Route:
    """What a /v1 request asks for."""
    kind: str  # predict | classify | regress | status | metadata
    name: str
    version: Optional[int] = None
    label: Optional[str] = None


def _version(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 19 or int(digits) > INT64_MAX:  # absl::SimpleAtoi into an int64 fails
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return int(digits)


def prediction_route(match: re.Match) -> Route:
    """A PREDICTION_RE match -> Route."""
    name, version, label, verb = match.groups()
    return Route(verb.lower(), unquote(name), _version(version), unquote(label) if label else None)


def status_route(match: re.Match) -> Route:
    """A STATUS_RE match -> Route; ServingError as TF Serving refuses it."""
    name, version, label, metadata = match.groups()
    version = _version(version)  # ParseModelInfo converts it before the name is checked
    if not name:
        raise invalid_argument("Missing model name in request.")
    return Route("metadata" if metadata else "status", unquote(name), version, unquote(label) if label else None)


def malformed(method: str, path: str) -> ServingError:
    """TF Serving's answer to a /v1 request none of V1_ROUTES takes."""
    return invalid_argument(f"Malformed request: {method} {path}")


# The /v1 requests TF Serving serves: (method, pattern, match -> Route). Predict first: the hot path.
V1_ROUTES = (("POST", PREDICTION_RE, prediction_route), ("GET", STATUS_RE, status_route))


def parse_path(method: str, path: str) -> Route:
    """A /v1 request's method and path -> Route; ServingError when TF Serving would refuse it."""
    for verb, pattern, to_route in V1_ROUTES:
        if method == verb:
            match = pattern.fullmatch(path)
            if match:
                return to_route(match)
    raise malformed(method, path)
