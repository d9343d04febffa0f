"""`inv zlib-repro`: the tutorial's protobuf `@zlib` failure and its fix, with a real Bazel.

patches/repro/ is a Bazel workspace shaped like TF Serving's: zlib only as ``@zlib_archive`` (the
system's zlib), protobuf 3.8.0 as ``com_google_protobuf``, and ``//:repro`` depending on
``@com_google_protobuf//:protobuf``. Step 1 builds it with protobuf as released, and Bazel must
stop with ``no such package '@zlib//'``; step 2 is ``bazel_build.build_with_zlib_retry``, the code
``inv build-server`` runs: it applies patches/protobuf-zlib.patch inside the output base and builds
once more; then the binary runs. Each build runs in a fresh Bazel server that is shut down after
it (by its own output base), as each ``docker run`` of ``inv build-server`` starts its own.

The sources come from ../shared/bazel-offline/ ($KIT_BAZEL_OFFLINE_DIR) when it is there (checked
against their sha256, unpacked into build/bazel-repro/src, used through --override_repository),
else Bazel downloads them from the URLs and checksums pinned in patches/repro/WORKSPACE.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from invoke import Context
from invoke.exceptions import Exit

from kit import paths
from kit.errors import KitError
from kit.images import bazel_build as bb
from kit.images.zlib_patch import PATCH_FILE, ZlibPatchError, is_zlib_error
from kit.paths import ROOT
from kit.steps import run_step
from kit.task import runner

WORKSPACE_DIR = ROOT / "patches" / "repro"
WORKSPACE_NAME = "zlib_repro"  # workspace(name = ...) in patches/repro/WORKSPACE
TARGET = "//:repro"
OFFLINE_ENV = "KIT_BAZEL_OFFLINE_DIR"
ZLIB_HEADERS = (Path("/usr/include/zlib.h"), Path("/usr/include/zconf.h"))  # @zlib_archive's path
PROTOBUF_URL = "https://github.com/protocolbuffers/protobuf/archive/v3.8.0.tar.gz"  # as in WORKSPACE
INSTALL_HINT = "install it as root with `apt-get install bazel-bootstrap` (Debian's Bazel 4.2.3)"
# The code that decides the outcome; a change to it (or to the workspace, or the patch) reruns the step.
# Debian's linux-sandbox prints ~38 debug lines for every action it runs (in the log, not on screen).
SANDBOX_DEBUG = re.compile(r"^\d+\.\d+: src/main/tools/")
CODE = [Path(__file__).with_name(name) for name in ("zlib_repro.py", "bazel_build.py", "zlib_patch.py")]


class ReproError(KitError):
    """The repro cannot run here; the message is one line saying why (and what to install)."""


@dataclass(frozen=True)
class Archive:
    repo: str  # the name the workspace (or Bazel itself) gives the repository
    file: str
    sha256: str  # of the file in ../shared/bazel-offline (not GitHub's download: see its README)

    @property
    def prefix(self) -> str:  # the one top folder `git archive` put in it
        return self.file.removesuffix(".tar.gz")


ARCHIVES = (
    Archive("com_google_protobuf", "protobuf-3.8.0.tar.gz",
            "af4be52b7f1065086df6fe3de0208f3a344490555ff58a9781aae461003491c8"),
    Archive("bazel_skylib", "bazel-skylib-2169ae1c374aab4a09aa90e65efe1a3aad4e279b.tar.gz",
            "c5e124ed699c053f7214474f65c819040002660d8d5c4fae208ce71ac674db37"),
    Archive("rules_cc", "rules_cc-b1c40e1de81913a3c40e5948f78719c28152486d.tar.gz",
            "03f9c2ff359397aa82d71bb63190ad3ca6e01bc26e0b9ae0b51ab7f3a7e9947a"),
    Archive("rules_java", "rules_java-7cf3cefd652008d0a64a419c34c13bdca6c8f178.tar.gz",
            "faf34d700676f20f70ebb9bf292b6c6263de77f66e2b42968dde55d90ec2eb57"),
)


@dataclass(frozen=True)
class Layout:
    """Everything the repro writes, under the kit's build folder."""

    build: Path

    @property
    def root(self) -> Path:
        return self.build / "bazel-repro"

    @property
    def user_root(self) -> Path:  # Bazel's install base and repository cache
        return self.root / "user_root"

    @property
    def output_base(self) -> Path:
        return self.root / "output_base"

    @property
    def src(self) -> Path:  # the unpacked offline sources
        return self.root / "src"

    @property
    def outcome(self) -> Path:  # what the last good run showed; the step's output
        return self.root / "outcome.txt"

    @property
    def log(self) -> Path:
        return self.build / "logs" / "zlib-repro.log"


def offline_dir() -> Path:
    return Path(os.environ.get(OFFLINE_ENV) or ROOT.parent / "shared" / "bazel-offline")


def network_reachable(url: str = PROTOBUF_URL, timeout: float = 10) -> bool:
    """Does the URL Bazel would download protobuf from answer at all (proxies honoured)?"""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # an answer, even a refusal, is a network
    except (OSError, ValueError):
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Sources:
    offline: Path | None  # None: Bazel downloads them

    def overrides(self, layout: Layout) -> list[str]:
        if self.offline is None:
            return []
        return [f"--override_repository={a.repo}={layout.src / a.prefix}" for a in ARCHIVES]

    def describe(self, layout: Layout) -> str:
        if self.offline is None:
            return (f"no {_shown(offline_dir())} here: Bazel downloads protobuf 3.8.0 and bazel-skylib from the "
                    "URLs and sha256 pinned in patches/repro/WORKSPACE, rules_cc and rules_java from its own")
        return (f"sources from {_shown(self.offline)} (sha256 checked), unpacked into {_shown(layout.src)}: "
                + ", ".join(a.prefix for a in ARCHIVES))


def find_sources(offline: Path, reachable: Callable[[], bool] = network_reachable) -> Sources:
    """The offline archives when the folder is there (all of them, checksums right), else Bazel's
    own downloads when the network answers; else one line saying that neither is possible."""
    if offline.is_dir():
        for archive in ARCHIVES:
            path = offline / archive.file
            if not path.is_file():
                raise ReproError(f"{path} is missing: {offline} must hold {', '.join(a.file for a in ARCHIVES)}")
            if _sha256(path) != archive.sha256:
                raise ReproError(f"{path}: sha256 is not {archive.sha256} (see {offline / 'README.md'})")
        return Sources(offline)
    if reachable():
        return Sources(None)
    raise ReproError(f"no protobuf 3.8.0 sources: {offline} does not exist (set {OFFLINE_ENV} to the folder "
                     f"holding them) and {PROTOBUF_URL} cannot be reached, so Bazel cannot download them")


def require_tools() -> str:
    """`bazel --version`, once bazel and the system's zlib headers are known to be here."""
    bazel = shutil.which("bazel")
    if bazel is None:
        raise ReproError(f"bazel: command not found; {INSTALL_HINT}")
    missing = [str(h) for h in ZLIB_HEADERS if not h.is_file()]
    if missing:
        raise ReproError(f"{', '.join(missing)} missing: @zlib_archive is the system's zlib; "
                         "install it as root with `apt-get install zlib1g-dev`")
    done = subprocess.run([bazel, "--version"], capture_output=True, text=True, timeout=60, check=False)
    return f"{bazel}: {(done.stdout or done.stderr).strip()}"


def startup(layout: Layout) -> list[str]:
    return ["bazel", f"--output_user_root={layout.user_root}", f"--output_base={layout.output_base}"]


def build_command(layout: Layout, sources: Sources) -> list[str]:
    # --symlink_prefix=/: no bazel-* links in patches/repro; plain output, searched for the error.
    return [*startup(layout), "build", "--color=no", "--curses=no", "--symlink_prefix=/",
            *sources.overrides(layout), TARGET]


def shutdown_command(layout: Layout) -> list[str]:
    return [*startup(layout), "shutdown"]


def unpack(archive: Archive, offline: Path, dest: Path) -> Path:
    """A fresh copy of one archive's tree under dest (step 2 edits protobuf's copy)."""
    target = dest / archive.prefix
    shutil.rmtree(target, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(offline / archive.file) as tar:
        strays = [m.name for m in tar.getmembers() if _lands_outside(m, archive.prefix)]
        if strays:
            raise ReproError(f"{offline / archive.file}: {strays[0]} lies outside {archive.prefix}/")
        # The check above is what keeps the tree in dest on every 3.11: extraction filters came in
        # 3.11.4 (Debian 12 has 3.11.2); where they exist, "data" also drops modes such as setuid.
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return target


def _lands_outside(member: tarfile.TarInfo, prefix: str) -> bool:
    """A member not under prefix/ once normalised (absolute, `..`), a link pointing out of it, or
    anything but a file, a directory or a link."""
    def inside(path: str) -> bool:
        parts = posixpath.normpath(path).split("/")
        return not posixpath.isabs(path) and parts[0] == prefix
    if not inside(member.name) or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return True
    if member.issym():
        return not inside(posixpath.join(posixpath.dirname(member.name), member.linkname))
    return member.islnk() and not inside(member.linkname)


def fresh_protobuf(layout: Layout) -> None:
    """Make Bazel set @com_google_protobuf up again (from the unpacked copy, or from its repository
    cache), so that step 1 sees protobuf's BUILD as released, not as the last step 2 left it."""
    external = layout.output_base / "external"
    repo = external / "com_google_protobuf"
    if repo.is_symlink() or repo.is_file():
        repo.unlink()
    elif repo.is_dir():
        shutil.rmtree(repo)
    (external / "@com_google_protobuf.marker").unlink(missing_ok=True)


def key_line(output: str, exited: int) -> str:
    """The one line of Bazel's output that says how a build ended."""
    lines = [line.strip() for line in output.splitlines()]
    if exited == 0:
        return next((line for line in lines if "Build completed successfully" in line), "")
    return next((line for line in lines if is_zlib_error(line)),
                next((line for line in lines if line.startswith("ERROR:")), ""))


def without_sandbox_debug(output: str) -> str:
    lines = output.splitlines(keepends=True)
    kept = [line for line in lines if not SANDBOX_DEBUG.match(line)]
    left_out = len(lines) - len(kept)
    note = f"({left_out} debug lines of Bazel's linux-sandbox left out here)\n" if left_out else ""
    return "".join(kept) + note


def built_binary(layout: Layout) -> Path:
    found = sorted((layout.output_base / "execroot" / WORKSPACE_NAME / "bazel-out").glob("*/bin/repro"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise ReproError(f"no bazel-out/*/bin/repro under {layout.output_base}/execroot/{WORKSPACE_NAME}")
    return found[-1]


def workspace_files() -> list[Path]:
    return sorted(p for p in WORKSPACE_DIR.rglob("*") if p.is_file())


def _shown(path: Path) -> str:
    for base, name in ((ROOT, ""), (ROOT.parent, "../")):
        if path.is_relative_to(base):
            return name + str(path.relative_to(base))
    return str(path)


def _note(text: str) -> None:
    print("# " + text, flush=True)


def zlib_repro(c: Context, patch_file: str | Path = "") -> None:
    """`inv zlib-repro`: step 1 (the '@zlib' error), step 2 (patched, built, run), or `reused`."""
    layout = Layout(paths.BUILD)
    patch_file = Path(patch_file).resolve() if patch_file else PATCH_FILE
    try:
        if not patch_file.is_file():
            raise ReproError(f"{patch_file}: no such patch file")
        bazel = require_tools()
        sources = find_sources(offline_dir(), network_reachable)
    except ReproError as err:
        raise Exit(str(err)) from None
    params = {"bazel": bazel, "target": TARGET,
              "sources": {a.file: a.sha256 for a in ARCHIVES} if sources.offline else "downloaded"}
    ran = run_step("zlib-repro", params, [*workspace_files(), patch_file, *CODE], [layout.outcome],
                   lambda: _run(c, layout, sources, patch_file))
    if not ran:
        print(layout.outcome.read_text(), end="", flush=True)


def _run(c: Context, layout: Layout, sources: Sources, patch_file: Path) -> None:
    _note(sources.describe(layout))
    if sources.offline:
        for archive in ARCHIVES:
            unpack(archive, sources.offline, layout.src)
    fresh_protobuf(layout)
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    layout.log.write_text("")
    shown: list[str] = []  # the outcome's lines, also kept for a `reused` run
    last = {"attempt": 0, "output": ""}
    quiet = runner(c, check=False, hide=True)

    def record(line: str) -> None:
        print(line, flush=True)
        shown.append(line)

    def build() -> tuple[int, str]:
        last["attempt"] += 1
        argv = build_command(layout, sources)
        _note(f"step {last['attempt']}: bazel build {TARGET} in {_shown(WORKSPACE_DIR)}, "
              + ("protobuf as released" if last["attempt"] == 1 else "protobuf patched"))
        started = time.monotonic()
        try:
            with c.cd(str(WORKSPACE_DIR)):
                result = quiet(argv)
            seconds = time.monotonic() - started
        finally:
            with c.cd(str(WORKSPACE_DIR)):
                quiet(shutdown_command(layout))  # no server left behind, also when interrupted
        output = (result.stdout or "") + (result.stderr or "")
        with layout.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n{output}\n[exit {result.exited}]\n")
        last["output"] = output
        record(f"# build {last['attempt']}: exit {result.exited} after {seconds:.1f} s")
        record(key_line(output, result.exited) or f"(no ERROR line: see {_shown(layout.log)})")
        return result.exited, output

    try:
        outcome = bb.build_with_zlib_retry(build, layout.output_base, patch_file, say=_note)
    except bb.BazelBuildError as err:
        print(without_sandbox_debug(last["output"]), end="", flush=True)
        raise Exit(f"step {last['attempt']}: {err}: Bazel's output is above and in {_shown(layout.log)}") from None
    except ZlibPatchError as err:
        raise Exit(f"step 2: {err}") from None
    if outcome.attempts == 1:
        raise Exit("step 1: the build with protobuf as released succeeded, so patches/repro no longer reproduces "
                   "the '@zlib' error")
    try:
        binary = built_binary(layout)
    except ReproError as err:
        raise Exit(str(err)) from None
    result = runner(c)([str(binary)])  # its output shows as it runs
    shown.append(result.stdout.strip())
    layout.outcome.write_text("\n".join(shown) + "\n")
