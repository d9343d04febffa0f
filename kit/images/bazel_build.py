"""Commands of the Docker route's build steps: the devel image and the Bazel build.

Everything here is a plain function returning an argv list (or a path), so
the exact commands are testable without an engine; ``kit.images.build``
prints and runs them.  The one piece of control flow, "retry once after the
zlib fix", takes the runner as an argument for the same reason.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kit.images.zlib_patch import (
    PATCH_FILE,
    PatchResult,
    ZlibPatchError,
    apply_zlib_fix,
    find_protobuf_build,
    is_zlib_error,
)
from kit.paths import ROOT
from kit.serve.docker import TF_SERVING_VERSION

logger = logging.getLogger(__name__)

REPO_ROOT = ROOT
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"

# The tutorial's name for the development image; configurable everywhere.
DEVEL_IMAGE = "tensorflow/serving:nightly-devel-mypy2"
BASE_IMAGE_REPO = "tensorflow/serving"
BASE_DEVEL_IMAGE = f"{BASE_IMAGE_REPO}:{TF_SERVING_VERSION}-devel"

TF_SERVING_GIT_URL = "https://github.com/tensorflow/serving"
TF_SERVING_GIT_TAG = TF_SERVING_VERSION  # release tags have no "v" prefix
BAZEL_TARGET = "tensorflow_serving/model_servers:tensorflow_model_server"
BAZEL_BINARY = "tensorflow_serving/model_servers/tensorflow_model_server"

# Mount points inside the build container.
CONTAINER_SRC = "/src/serving"
CONTAINER_CACHE = "/bazel-cache"
CONTAINER_OUTPUT_USER_ROOT = f"{CONTAINER_CACHE}/user_root"
CONTAINER_OUTPUT_BASE = f"{CONTAINER_CACHE}/output_base"
CONTAINER_HOME = f"{CONTAINER_CACHE}/home"
# Bazel needs a user name; a host uid has no passwd entry in the image.
CONTAINER_USER_NAME = "kit"


class BazelBuildError(RuntimeError):
    """The Bazel build failed; the message is one line for the user."""


@dataclass(frozen=True)
class BuildLayout:
    """Where the build keeps things on the host, all under the build folder: ``<repo>/build``, or
    $KIT_BUILD_DIR as the rest of the kit uses it (``build_dir``)."""

    root: Path = REPO_ROOT
    build_dir: Optional[Path] = None

    @property
    def build(self) -> Path:
        return self.build_dir if self.build_dir is not None else self.root / "build"

    @property
    def src(self) -> Path:
        return self.build / "src" / "serving"

    @property
    def cache(self) -> Path:
        # Persistent across runs so a retry (and the next build) reuses the
        # fetched repositories and compiled actions.
        return self.build / "bazel-cache"

    @property
    def output_base(self) -> Path:
        return self.cache / "output_base"

    @property
    def home(self) -> Path:
        return self.cache / "home"

    @property
    def binary(self) -> Path:
        return self.build / "bin" / "tensorflow_model_server"

    @property
    def log(self) -> Path:
        return self.build / "logs" / "bazel-build.log"

    @property
    def protobuf_build(self) -> Path:
        return self.output_base / "external" / "com_google_protobuf" / "BUILD"

    def mounts(self) -> dict[str, Path]:
        """Container path -> host path of every bind mount of the build."""
        return {CONTAINER_SRC: self.src, CONTAINER_CACHE: self.cache}


def base_image_ref(base_tag: str) -> str:
    """``2.21.0-devel`` -> ``tensorflow/serving:2.21.0-devel``; full refs pass through."""
    if ":" in base_tag or "/" in base_tag or "@" in base_tag:
        return base_tag
    return f"{BASE_IMAGE_REPO}:{base_tag}"


def image_build_command(
    tag: str = DEVEL_IMAGE, base_image: str = BASE_DEVEL_IMAGE, repo_root: Path = REPO_ROOT
) -> list[str]:
    """``docker build`` of docker/Dockerfile with the repo root as context."""
    return [
        "docker", "build",
        "-f", str(repo_root / "docker" / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={base_image_ref(base_image)}",
        "-t", tag,
        str(repo_root),
    ]


def clone_command(
    dest: Path, tag: str = TF_SERVING_GIT_TAG, url: str = TF_SERVING_GIT_URL
) -> list[str]:
    """Shallow clone of TF Serving at one release tag."""
    return ["git", "clone", "--depth", "1", "--branch", tag, url, str(dest)]


def checkout_tag_command(src: Path) -> list[str]:
    """Prints the tag the existing checkout sits on (fails when on none)."""
    return ["git", "-C", str(src), "describe", "--tags", "--exact-match", "HEAD"]


def host_user() -> str | None:
    """``uid:gid`` so files Bazel writes into build/ stay the user's own."""
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


def bazel_build_command(
    layout: BuildLayout,
    image: str = DEVEL_IMAGE,
    bazel_options: Iterable[str] = (),
    user: str | None = None,
    target: str = BAZEL_TARGET,
) -> list[str]:
    """``docker run`` of ``bazel build -c opt <target>`` in the devel image.

    The source and a persistent cache (holding Bazel's output base) are bind
    mounted, so the protobuf BUILD file the zlib fix edits is on the host.
    """
    argv = ["docker", "run", "--rm"]
    if user:
        argv += [
            "--user", user,
            "-e", f"HOME={CONTAINER_HOME}",
            "-e", f"USER={CONTAINER_USER_NAME}",
        ]
    argv += [
        "-v", f"{layout.src}:{CONTAINER_SRC}",
        "-v", f"{layout.cache}:{CONTAINER_CACHE}",
        "-w", CONTAINER_SRC,
        image,
        "bazel",
        f"--output_user_root={CONTAINER_OUTPUT_USER_ROOT}",
        f"--output_base={CONTAINER_OUTPUT_BASE}",
        # The JVM takes its home from passwd, not $HOME.
        f"--host_jvm_args=-Duser.home={CONTAINER_HOME}",
        "build", "-c", "opt",
        # Plain output: it is captured and searched for the zlib error.
        "--color=no", "--curses=no",
        *bazel_options,
        target,
    ]
    return argv


def host_path(container_path: str, mounts: Mapping[str, Path]) -> Path:
    """Map a path seen inside the build container to the host."""
    path = posixpath.normpath(container_path)
    # Longest mount point first, so nested mounts win.
    for point in sorted(mounts, key=len, reverse=True):
        if path == point or path.startswith(point.rstrip("/") + "/"):
            return mounts[point] / posixpath.relpath(path, point)
    raise BazelBuildError(f"{container_path} is not under any mount ({', '.join(mounts)})")


def copy_binary_shell(layout: BuildLayout) -> str:
    """A shell line that copies the built server to build/bin on the host, runnable as printed.

    ``bazel-bin`` points at a container path (under /bazel-cache), dangling on the host, so a
    plain ``cp bazel-bin/...`` fails: the line maps the link through the build/bazel-cache mount,
    as :func:`built_binary` does, and creates build/bin first.
    """
    link = shlex.quote(str(layout.src / "bazel-bin"))
    return (f"mkdir -p {shlex.quote(str(layout.binary.parent))} && link=$(readlink {link}) && "
            f'cp {shlex.quote(str(layout.cache))}/"${{link#{CONTAINER_CACHE}/}}"/{BAZEL_BINARY} '
            f"{shlex.quote(str(layout.binary))}")


def built_binary(layout: BuildLayout) -> Path:
    """Host path of the built server, read through the ``bazel-bin`` symlink.

    Bazel makes ``bazel-bin`` point at a container path, which is dangling on
    the host; translate it through the mounts instead of guessing the
    configuration directory (k8-opt, ...).
    """
    link = layout.src / "bazel-bin"
    if not link.is_symlink():
        raise BazelBuildError(f"{link} is missing: did the Bazel build finish?")
    target = os.readlink(link)
    base = host_path(target, layout.mounts()) if posixpath.isabs(target) else link.parent / target
    binary = base / BAZEL_BINARY
    if not binary.is_file():
        raise BazelBuildError(f"built binary not found at {binary} (through {link} -> {target})")
    return binary


@dataclass(frozen=True)
class BuildOutcome:
    attempts: int
    patch: PatchResult | None
    output: str


def build_with_zlib_retry(
    run: Callable[[], tuple[int, str]],
    output_base: Path,
    patch_file: Path = PATCH_FILE,
    say: Callable[[str], None] = print,
) -> BuildOutcome:
    """Run the build; on protobuf's '@zlib' error apply the fix and run it once more.

    ``run`` runs the Bazel command and returns (exit code, its output).
    """
    code, output = run()
    if code == 0:
        return BuildOutcome(1, None, output)
    if not is_zlib_error(output):
        raise BazelBuildError(f"bazel build failed (exit {code})")
    say(f"bazel stopped on protobuf's '@zlib' dependency; applying {patch_file.name}")
    patch = apply_zlib_fix(output_base, patch_file)  # ZlibPatchError: refuse, stop
    say(patch.message)
    if not patch.changed:
        # Protobuf already points at @zlib_archive, so the same error again
        # means something else names @zlib: retrying would only repeat it.
        raise BazelBuildError(
            f"bazel still reports the '@zlib' error although {patch.build_file} is already fixed"
        )
    say("retrying the build once")
    code, retry_output = run()
    if code != 0:
        raise BazelBuildError(f"bazel build failed again after the zlib fix (exit {code})")
    return BuildOutcome(2, patch, output + retry_output)


def protobuf_build_hint(layout: BuildLayout) -> Path:
    """The protobuf BUILD the fix would edit (the real one when already fetched)."""
    try:
        return find_protobuf_build(layout.output_base)
    except ZlibPatchError:  # not fetched yet: show where it will be
        return layout.protobuf_build
