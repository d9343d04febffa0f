"""What `inv image` and `inv build-server` do: the Docker route's builds.

Commands come from ``kit.images.bazel_build`` and ``kit.images.pyserving_image``; these functions
print each one (``$ ...``), run it unless ``dry_run``, and turn failures into one-line ``Exit``
messages. The tasks in tasks.py only pass their options on.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path

from invoke import Context
from invoke.exceptions import Exit

from kit import paths
from kit.images import bazel_build as bb
from kit.images import pyserving_image
from kit.images.zlib_patch import PATCH_FILE, ZlibPatchError
from kit.serve.docker import engine_status
from kit.task import runner, show

logger = logging.getLogger(__name__)


def _note(text: str) -> None:
    print("# " + text, flush=True)


def _run(c: Context, argv: list[str]):
    """Print and run one command; the result keeps its captured output and exit code."""
    return runner(c, check=False)(argv)


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


def image(c: Context, tag: str = "", base_tag: str = bb.BASE_DEVEL_IMAGE, dry_run: bool = False,
          target: str = "devel") -> None:
    """`inv image`: build one image target, or show its command."""
    argv, tag = image_command(target, tag, base_tag)
    if dry_run:
        show(argv)
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
            show(argv)
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
        show(argv)
        return
    layout.src.parent.mkdir(parents=True, exist_ok=True)
    result = _run(c, argv)
    if result.exited != 0:
        raise Exit(f"git clone of TF Serving {serving_tag} failed (exit {result.exited})")


def build_server(c: Context, serving_tag: str = bb.TF_SERVING_GIT_TAG, image: str = bb.DEVEL_IMAGE,
                 bazel_options: str = "", dry_run: bool = False) -> None:
    """`inv build-server`: clone TF Serving at `serving_tag`, build it with Bazel in the devel image
    (patching protobuf's @zlib label and retrying once when Bazel stops on it), copy the binary
    to build/bin/; or show those commands."""
    layout = bb.BuildLayout(bb.REPO_ROOT, paths.build_dir())
    bazel_argv = bb.bazel_build_command(
        layout, image=image, bazel_options=shlex.split(bazel_options), user=bb.host_user()
    )
    mkdir_argv = ["mkdir", "-p", str(layout.home), str(layout.output_base)]

    if dry_run:
        _checkout_steps(c, layout, serving_tag, dry_run=True)
        show(mkdir_argv)
        show(bazel_argv)
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
    show(mkdir_argv)
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

    show(["cp", str(binary), str(layout.binary)])
    layout.binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, layout.binary)
    layout.binary.chmod(0o755)
    print(f"built {_rel(layout.binary)}")
