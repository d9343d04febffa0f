"""TF Serving REST API helpers (standard library only): status, version choice, predict."""
import json
import logging
import re
import urllib.error
import urllib.request

logger = logging.getLogger(__name__)

_VERSION_SUFFIX = re.compile(r"^(?P<base>.*?)/versions/(?P<version>\d+)/?$")
_LABEL_SUFFIX = re.compile(r"^(?P<base>.*?)/labels/(?P<label>[^/:]+)/?$")


class ServingError(RuntimeError):
    """The server answered with an error or with no usable version."""


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


def label_version(model_url, label, timeout=30.0):
    """The version a label points at now: GET <model_url>/labels/<label>/metadata, its model_spec.version."""
    answer = http_json("%s/labels/%s/metadata" % (model_url.rstrip("/"), label), timeout=timeout)
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


def http_json(url, payload=None, timeout=30.0):
    """GET (payload None) or POST JSON; return the decoded answer or raise ServingError."""
    data = None
    headers = {"Accept": "application/json"}
    if payload is not None:
        data = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers,
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        body = err.read().decode("utf-8", "replace")
        raise ServingError("%s %s -> HTTP %d: %s" % (request.get_method(), url, err.code, body)) from None
    except urllib.error.URLError as err:
        raise ServingError("%s %s failed: %s" % (request.get_method(), url, err.reason)) from None
