"""The REST route table, and the /v1 path parser table-tested against TF Serving's route regexes."""
from __future__ import annotations

import re

import pytest

from pyserving.errors import Code, ServingError
from pyserving.protocols.rest import HTTP_STATUS
from pyserving.protocols.routes import Route, RouteTable, parse_path


@pytest.mark.parametrize("method,path,route", [
    ("GET", "/v1/models/m", Route("status", "m")),
    ("GET", "/v1/models/m/versions/12", Route("status", "m", 12)),
    ("GET", "/v1/models/m/labels/stable", Route("status", "m", None, "stable")),
    ("GET", "/v1/models/m/metadata", Route("metadata", "m")),
    ("GET", "/v1/models/m/versions/3/metadata", Route("metadata", "m", 3)),
    ("POST", "/v1/models/m:predict", Route("predict", "m")),
    ("POST", "/v1/models/m/versions/00012:classify", Route("classify", "m", 12)),
    ("POST", "/v1/models/m/labels/canary:regress", Route("regress", "m", None, "canary")),
    ("POST", "/V1/MODELS/m:PREDICT", Route("predict", "m")),
    ("POST", "/v1/models/my%20model:predict", Route("predict", "my model")),
])
def test_routes(method, path, route):
    assert parse_path(method, path) == route


@pytest.mark.parametrize("method,path,message", [
    ("GET", "/v1/models", "Missing model name in request."),
    ("GET", "/v1/models/m/versions/abc", "Malformed request: GET /v1/models/m/versions/abc"),
    ("POST", "/v1/models/m:explain", "Malformed request: POST /v1/models/m:explain"),
    ("PUT", "/v1/models/m:predict", "Malformed request: PUT /v1/models/m:predict"),
    ("GET", "/v1/models/m:predict", "Malformed request: GET /v1/models/m:predict"),
])
def test_refused_paths(method, path, message):
    with pytest.raises(ServingError) as err:
        parse_path(method, path)
    assert err.value.code == Code.INVALID_ARGUMENT and err.value.message == message


def test_every_code_has_an_http_status():
    assert set(HTTP_STATUS) == set(Code)
    assert HTTP_STATUS[Code.UNAVAILABLE] == 503 and HTTP_STATUS[Code.DEADLINE_EXCEEDED] == 504


@pytest.fixture(scope="module")
def table():
    """Three entries on /a/... and a fallback; each handler answers what took the request."""
    table = RouteTable(lambda request, match: ("fallback", request, match))
    table.add("POST", r"/a/(\w+)", lambda request, match: ("post", request, match.group(1)))
    table.add(("GET", "HEAD"), re.compile(r"/a/(\w+)"), lambda request, match: ("get or head", request, match.group(1)))
    table.add(None, r"/a/.*", lambda request, match: ("any", request, match.group(0)))
    return table


@pytest.mark.parametrize("method,path,answer", [
    ("POST", "/a/x", ("post", "r", "x")),
    ("GET", "/a/x", ("get or head", "r", "x")),
    ("HEAD", "/a/x", ("get or head", "r", "x")),
    ("PUT", "/a/x", ("any", "r", "/a/x")),  # no earlier entry takes PUT
    ("POST", "/a/x/y", ("any", "r", "/a/x/y")),  # the whole path must match, not a prefix
    ("post", "/a/x", ("any", "r", "/a/x")),  # methods compare exactly
    ("GET", "/b/a/x", ("fallback", "r", None)),
    ("GET", "/a", ("fallback", "r", None)),
])
def test_the_first_entry_whose_method_and_whole_path_match_answers(table, method, path, answer):
    assert table.dispatch(method, path, "r") == answer
