"""Image tags resolved to registry digests (`inv deploy --pin-digests`), over the registry's own
HTTP API (the Docker Registry v2 / OCI distribution API): HEAD /v2/<repository>/manifests/<tag>
answers with the digest of what the tag points at now, in Docker-Content-Digest (for a
multi-architecture image, the digest of its index, which every platform's pull accepts).
Anonymous bearer tokens are fetched when the registry asks for one (Docker Hub does).

No registry reachable (an offline machine, a locally loaded image that no registry holds): the
caller gets the reason in one line and keeps the tag.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

DOCKER_HUB = "registry-1.docker.io"
TIMEOUT_S = 10
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Unresolved(Exception):
    """A tag that could not be resolved; the message is one line."""


def registry_and_repository(name: str) -> tuple[str, str]:
    """'tensorflow/serving' -> (registry-1.docker.io, tensorflow/serving); 'python' -> (…,
    library/python); 'host:5000/kit' -> (host:5000, kit): the first part names a registry when it
    has a dot or a port, or is localhost (Docker's rule)."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, name if rest else f"library/{name}"


def _base_url(registry: str) -> str:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    # Docker talks plain HTTP to a registry on this machine, HTTPS to every other.
    scheme = "http" if host in ("localhost", "127.0.0.1", "[::1]") else "https"
    return f"{scheme}://{registry}"


def _token(challenge: str, repository: str) -> str:
    """An anonymous pull token for a `Bearer realm=...,service=...` challenge."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if "realm" not in params:
        raise Unresolved(f"unsupported authentication challenge {challenge!r}")
    query = {"scope": params.get("scope", f"repository:{repository}:pull")}
    if "service" in params:
        query["service"] = params["service"]
    with urllib.request.urlopen(f"{params['realm']}?{urllib.parse.urlencode(query)}", timeout=TIMEOUT_S) as resp:
        body = json.loads(resp.read())
    return body.get("token") or body.get("access_token") or ""


def resolve(name: str, tag: str) -> str:
    """The digest ('sha256:...') `name:tag` points at now; Unresolved with the reason otherwise."""
    registry, repository = registry_and_repository(name)
    url = f"{_base_url(registry)}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    try:
        for attempt in range(2):
            request = urllib.request.Request(url, method="HEAD", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                    digest = resp.headers.get("Docker-Content-Digest", "")
                    break
            except urllib.error.HTTPError as exc:
                challenge = exc.headers.get("WWW-Authenticate", "")
                exc.close()  # its response, else left for the garbage collector (a ResourceWarning)
                if exc.code == 401 and attempt == 0 and challenge.lower().startswith("bearer "):
                    headers["Authorization"] = f"Bearer {_token(challenge[7:], repository)}"
                    continue
                raise Unresolved(f"{registry} answered HTTP {exc.code} for {name}:{tag}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unresolved(f"registry {registry} unreachable ({reason})") from None
    if not DIGEST.match(digest):
        raise Unresolved(f"{registry} gave no sha256 digest for {name}:{tag} (Docker-Content-Digest {digest!r})")
    return digest


def pin(image: str) -> tuple[str, Optional[str]]:
    """(image by digest, None), or (image unchanged, why not) when it has no tag to resolve or
    the registry cannot say."""
    from kit.k8s.manifest_checks import IMAGE

    match = IMAGE.match(image)
    if match is None:
        return image, f"{image!r} is no image reference"
    name, tag, digest = match.group("name", "tag", "digest")
    if digest:
        return image, None
    if not tag:
        return image, f"{image} has no tag to resolve"
    try:
        return f"{name}@{resolve(name, tag)}", None
    except Unresolved as exc:
        return image, str(exc)
