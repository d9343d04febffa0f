"""Invoke tasks of the Docker route: ``image`` and ``build-server``.

Thin on purpose: commands come from ``kit.bazel_build`` and ``kit.pyserving_image``; these tasks print
each one (``$ ...``), run it unless ``--dry-run``, and turn failures into
one-line ``Exit`` messages.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path

from invoke import Context
from invoke.exceptions import Exit

from kit import bazel_build as bb
from kit import pyserving_image
from kit.cli import task
from kit.docker_backend import engine_status
from kit.zlib_patch import PATCH_FILE, ZlibPatchError

logger = logging.getLogger(__name__)


def _show(argv: list[str]) -> None:
    print("$ " + shlex.join(argv), flush=True)


def _note(text: str) -> None:
    print("# " + text, flush=True)


def _run(c: Context, argv: list[str]):
    """Print and run one command; the result keeps its captured output."""
    _show(argv)
    # in_stream=False: never wait on stdin (CI has none).
    return c.run(shlex.join(argv), warn=True, pty=False, echo=False, in_stream=False)


def _require_engine() -> None:
    reason = engine_status()
    if reason is not None:
        raise Exit(reason)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(bb.REPO_ROOT))
    except ValueError:
        return str(path)


IMAGE_TARGETS = ("devel", "pyserving")


def image_command(target: str, tag: str, base_tag: str) -> tuple[list[str], str]:
    """The ``docker build`` argv of one image target and the tag it builds."""
    if target == "devel":
        tag = tag or bb.DEVEL_IMAGE
        return bb.image_build_command(tag, base_tag, repo_root=bb.REPO_ROOT), tag
    if target == "pyserving":
        if base_tag != bb.BASE_DEVEL_IMAGE:
            raise Exit("--base-tag applies to --target=devel only (the pyserving image pins its Python base)")
        tag = tag or pyserving_image.DEFAULT_TAG
        return pyserving_image.build_command(tag, repo_root=bb.REPO_ROOT), tag
    raise Exit(f"--target: {target!r} is not one of {', '.join(IMAGE_TARGETS)}")


@task(
    help={
        "target": "devel (docker/Dockerfile: TF Serving's devel image plus the kit's Python) or "
        "pyserving (docker/pyserving.Dockerfile: the model server image)",
        "tag": f"name of the image to build (default: {bb.DEVEL_IMAGE} for devel, "
        f"{pyserving_image.DEFAULT_TAG} for pyserving)",
        "base_tag": "TF Serving devel image to start FROM: a full reference or just a "
        f"tag of {bb.BASE_IMAGE_REPO} (devel only)",
        "dry_run": "print the command without running it",
    }
)
def image(c: Context, tag: str = "", base_tag: str = bb.BASE_DEVEL_IMAGE, dry_run: bool = False,
          target: str = "devel") -> None:
    """Build an image: the development image (default) or, with --target=pyserving, the model server's."""
    argv, tag = image_command(target, tag, base_tag)
    if dry_run:
        _show(argv)
        return
    _require_engine()
    result = _run(c, argv)
    if result.exited != 0:
        raise Exit(f"docker build failed (exit {result.exited})")
    print(f"built {tag}")


def _checkout_steps(c: Context, layout: bb.BuildLayout, serving_tag: str, dry_run: bool) -> None:
    if (layout.src / ".git").exists():
        argv = bb.checkout_tag_command(layout.src)
        if dry_run:
            _show(argv)
            _note(f"reusing {_rel(layout.src)}; it must sit on tag {serving_tag}")
            return
        result = _run(c, argv)
        found = (result.stdout or "").strip()
        if result.exited != 0 or found != serving_tag:
            raise Exit(
                f"{_rel(layout.src)} is at {found or 'no tag'}, not {serving_tag}: "
                f"remove it or pass --serving-tag {found or '<tag>'}"
            )
        return
    argv = bb.clone_command(layout.src, serving_tag)
    if dry_run:
        _show(argv)
        return
    layout.src.parent.mkdir(parents=True, exist_ok=True)
    result = _run(c, argv)
    if result.exited != 0:
        raise Exit(f"git clone of TF Serving {serving_tag} failed (exit {result.exited})")


@task(
    help={
        "serving_tag": "TF Serving release tag to clone and build",
        "image": "devel image to build in (build it with `image`)",
        "bazel_options": "extra bazel build options, e.g. '--local_ram_resources=4096 --jobs=2'",
        "dry_run": "print the commands without running them",
    }
)
def build_server(c: Context, serving_tag: str = bb.TF_SERVING_GIT_TAG, image: str = bb.DEVEL_IMAGE,
                 bazel_options: str = "", dry_run: bool = False) -> None:
    """Build tensorflow_model_server from source with Bazel in the devel image.

    Clones TF Serving into build/src/serving, runs `bazel build -c opt` in a
    container with a persistent output base under build/bazel-cache, applies
    patches/protobuf-zlib.patch and retries once if Bazel stops on protobuf's
    '@zlib' dependency, then copies the binary to build/bin/.
    """
    layout = bb.BuildLayout(bb.REPO_ROOT)
    bazel_argv = bb.bazel_build_command(
        layout, image=image, bazel_options=shlex.split(bazel_options), user=bb.host_user()
    )
    mkdir_argv = ["mkdir", "-p", str(layout.home), str(layout.output_base)]

    if dry_run:
        _checkout_steps(c, layout, serving_tag, dry_run=True)
        _show(mkdir_argv)
        _show(bazel_argv)
        _note(
            "if the output says no such package '@zlib//': apply "
            f"{_rel(PATCH_FILE)} to {bb.protobuf_build_hint(layout)} and run the docker command once more"
        )
        print("$ " + bb.copy_binary_shell(layout), flush=True)
        _note("bazel-bin points into the container; the cp reads it through the build/bazel-cache mount")
        return

    _require_engine()
    if shutil.which("git") is None:
        raise Exit("git: command not found (needed to clone TF Serving)")
    _checkout_steps(c, layout, serving_tag, dry_run=False)
    _show(mkdir_argv)
    layout.home.mkdir(parents=True, exist_ok=True)
    layout.output_base.mkdir(parents=True, exist_ok=True)
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    layout.log.write_text("")

    def run_bazel() -> tuple[int, str]:
        result = _run(c, bazel_argv)
        output = (result.stdout or "") + (result.stderr or "")
        with layout.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {shlex.join(bazel_argv)}\n{output}\n[exit {result.exited}]\n")
        return result.exited, output

    try:
        bb.build_with_zlib_retry(run_bazel, layout.output_base, PATCH_FILE, say=_note)
        binary = bb.built_binary(layout)
    except (bb.BazelBuildError, ZlibPatchError) as err:
        raise Exit(f"{err} (full output: {_rel(layout.log)})") from None

    _show(["cp", str(binary), str(layout.binary)])
    layout.binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, layout.binary)
    layout.binary.chmod(0o755)
    print(f"built {_rel(layout.binary)}")
