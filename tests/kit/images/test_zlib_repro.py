"""kit.images.zlib_repro (`inv zlib-repro`): first against a recording Context that plays Bazel,
then, where Bazel is installed, for real.

The real runs share one build folder (one Bazel output base): one full run (protobuf compiled
once), a second run that must say `reused`, and a run with a wrong patch, which fails at step 2's
analysis without compiling anything.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit
from invoke.runners import Result

from kit.images import zlib_repro
from kit.images.zlib_patch import PATCH_FILE
from kit.images.zlib_repro import Archive, Layout, ReproError, Sources
from tests.helpers import inv_exit_code

ROOT = Path(__file__).resolve().parents[3]
ZLIB_ERROR = ("ERROR: {base}/external/com_google_protobuf/BUILD:148:11: no such package '@zlib//': The repository "
              "'@zlib' could not be resolved and referenced by '@com_google_protobuf//:protobuf'")
PROTOBUF_BUILD = '''licenses(["notice"])

################################################################################
# ZLIB configuration
################################################################################

ZLIB_DEPS = ["@zlib//:zlib"]

################################################################################
# Protobuf Runtime Library
################################################################################
'''
BINARY_SAYS = "protobuf 3.8.0 with zlib 1.2.13: google/protobuf/descriptor.proto (6022 bytes) gzipped to 2138 bytes"
# A patch that applies but names a repository this workspace does not have (gRPC's name for zlib).
WRONG_LABEL = "@com_github_madler_zlib//:zlib"


# ---- the workspace --------------------------------------------------------------------------------
def test_the_workspace_declares_zlib_only_as_zlib_archive_as_tf_serving_did():
    workspace = (zlib_repro.WORKSPACE_DIR / "WORKSPACE").read_text()
    rules = ("new_local_repository", "local_repository", "http_archive", "git_repository", "bind")
    declared = [found for found in re.findall(r"^(\w+)\(\s*name = \"([^\"]+)\"", workspace, re.MULTILINE)
                if found[0] in rules]
    assert declared == [("new_local_repository", "zlib_archive"), ("bind", "zlib"),
                        ("http_archive", "com_google_protobuf"), ("http_archive", "bazel_skylib")]
    assert 'actual = "@zlib_archive//:zlib"' in workspace and "protobuf_deps()" not in workspace
    assert f'workspace(name = "{zlib_repro.WORKSPACE_NAME}")' in workspace
    assert f'urls = ["{zlib_repro.PROTOBUF_URL}"]' in workspace and 'strip_prefix = "protobuf-3.8.0"' in workspace
    build = (zlib_repro.WORKSPACE_DIR / "BUILD").read_text()
    assert 'name = "repro"' in build and '"@com_google_protobuf//:protobuf"' in build
    assert [a.repo for a in zlib_repro.ARCHIVES] == ["com_google_protobuf", "bazel_skylib", "rules_cc", "rules_java"]


def test_the_commands_keep_bazel_under_build_and_out_of_the_workspace(tmp_path):
    layout = Layout(tmp_path)
    offline = Sources(tmp_path / "offline")
    startup = ["bazel", f"--output_user_root={tmp_path}/bazel-repro/user_root",
               f"--output_base={tmp_path}/bazel-repro/output_base"]
    assert zlib_repro.shutdown_command(layout) == [*startup, "shutdown"]
    assert zlib_repro.build_command(layout, Sources(None)) == [
        *startup, "build", "--color=no", "--curses=no", "--symlink_prefix=/", "//:repro"]
    overrides = zlib_repro.build_command(layout, offline)[len(startup) + 4:-1]
    assert overrides[0] == f"--override_repository=com_google_protobuf={tmp_path}/bazel-repro/src/protobuf-3.8.0"
    assert [o.split("=")[1] for o in overrides] == [a.repo for a in zlib_repro.ARCHIVES]


def test_key_line_and_the_sandbox_debug_filter():
    error = ZLIB_ERROR.format(base="/ob")
    failed = f"Loading: 0 packages loaded\nERROR: other first\n{error}\nFAILED: Build did NOT complete successfully\n"
    assert zlib_repro.key_line(failed, 1) == error
    assert zlib_repro.key_line("ERROR: a\nERROR: b\n", 1) == "ERROR: a"
    assert zlib_repro.key_line("INFO: Build completed successfully, 85 total actions\n", 0) == (
        "INFO: Build completed successfully, 85 total actions")
    noisy = ("INFO: From Compiling a.cc:\n"
             "1796578211.612914813: src/main/tools/linux-sandbox.cc:152: calling pipe(2)...\nERROR: x\n")
    assert zlib_repro.without_sandbox_debug(noisy) == (
        "INFO: From Compiling a.cc:\nERROR: x\n(1 debug lines of Bazel's linux-sandbox left out here)\n")


# ---- where the sources come from ----------------------------------------------------------------------
def make_archive(folder: Path, prefix: str, files: dict[str, str]) -> Archive:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Archive(prefix.split("-")[0], path.name, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An offline folder holding two small archives, which stand for the real four."""
    folder = tmp_path / "bazel-offline"
    archives = (make_archive(folder, "protobuf-3.8.0", {"protobuf-3.8.0/BUILD": PROTOBUF_BUILD}),
                make_archive(folder, "rules_cc-b1c4", {"rules_cc-b1c4/WORKSPACE": ""}))
    monkeypatch.setattr(zlib_repro, "ARCHIVES", archives)
    return folder


def never(*_args):
    raise AssertionError("the network must not be asked when the offline folder is there")


def test_the_offline_folder_wins_when_every_archive_is_there_and_checks(offline):
    assert zlib_repro.find_sources(offline, reachable=never) == Sources(offline)


def test_a_missing_or_changed_archive_is_one_line(offline):
    (offline / "rules_cc-b1c4.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(ReproError, match=r"rules_cc-b1c4\.tar\.gz: sha256 is not [0-9a-f]{64} \(see .*README.md\)$"):
        zlib_repro.find_sources(offline, reachable=never)
    (offline / "rules_cc-b1c4.tar.gz").unlink()
    with pytest.raises(ReproError, match=r"rules_cc-b1c4\.tar\.gz is missing: .* must hold protobuf-3\.8\.0\.tar"):
        zlib_repro.find_sources(offline, reachable=never)


def test_without_the_folder_bazel_downloads_or_it_says_why_not_in_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    assert zlib_repro.find_sources(missing, reachable=lambda: True) == Sources(None)
    with pytest.raises(ReproError) as err:
        zlib_repro.find_sources(missing, reachable=lambda: False)
    assert str(err.value) == (
        f"no protobuf 3.8.0 sources: {missing} does not exist (set KIT_BAZEL_OFFLINE_DIR to the folder holding "
        "them) and https://github.com/protocolbuffers/protobuf/archive/v3.8.0.tar.gz cannot be reached, so Bazel "
        "cannot download them")


def test_the_offline_folder_is_the_shared_one_beside_the_clone_unless_the_environment_says(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_BAZEL_OFFLINE_DIR", raising=False)
    assert zlib_repro.offline_dir() == ROOT.parent / "shared" / "bazel-offline"
    monkeypatch.setenv("KIT_BAZEL_OFFLINE_DIR", str(tmp_path))
    assert zlib_repro.offline_dir() == tmp_path


def test_unpack_makes_a_fresh_tree_and_refuses_one_outside_its_folder(offline, tmp_path):
    protobuf = zlib_repro.ARCHIVES[0]
    tree = zlib_repro.unpack(protobuf, offline, tmp_path / "src")
    (tree / "BUILD").write_text("edited by step 2")
    (tree / "stale").write_text("")
    assert zlib_repro.unpack(protobuf, offline, tmp_path / "src") == tree
    assert sorted(p.name for p in tree.iterdir()) == ["BUILD"] and (tree / "BUILD").read_text() == PROTOBUF_BUILD
    stray = make_archive(offline, "stray", {"elsewhere/BUILD": ""})
    with pytest.raises(ReproError, match="elsewhere/BUILD lies outside stray/"):
        zlib_repro.unpack(stray, offline, tmp_path / "src")


def _member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    return member


@pytest.mark.parametrize("member, outside", [
    (_member("p/BUILD"), False),
    (_member("p/src", tarfile.DIRTYPE), False),
    (_member("p/a/link", tarfile.SYMTYPE, "../BUILD"), False),  # protobuf 3.8.0 ships one such link
    (_member("p/hard", tarfile.LNKTYPE, "p/BUILD"), False),
    (_member("q/BUILD"), True),
    (_member("/p/BUILD"), True),
    (_member("p/../q/BUILD"), True),
    (_member("p/a/link", tarfile.SYMTYPE, "../../etc/passwd"), True),
    (_member("p/a/link", tarfile.SYMTYPE, "/etc/passwd"), True),
    (_member("p/hard", tarfile.LNKTYPE, "etc/passwd"), True),
    (_member("p/dev", tarfile.CHRTYPE), True),
])
def test_a_member_that_would_land_outside_the_archives_folder_is_refused(member, outside):
    """The check that keeps unpack inside its folder on every Python 3.11, extraction filters or not."""
    assert zlib_repro._lands_outside(member, "p") is outside


# ---- the task, with Bazel played by a recording Context ---------------------------------------------------
class FakeBazel(Context):
    """Plays `bazel build` (scripted exit codes; the first build fetches protobuf into the output base as
    Bazel does), `bazel shutdown` and the built binary; records every command and where it ran."""

    def __init__(self, layout: Layout, builds: list[int], build_file: str = PROTOBUF_BUILD):
        super().__init__()
        self.layout, self.builds, self.build_file = layout, list(builds), build_file
        self.commands: list[tuple[str, str]] = []
        self.seen_builds: list[str] = []  # protobuf's BUILD as each build saw it

    def run(self, command, **kwargs):
        self.commands.append((self.cwd, command))
        protobuf = self.layout.output_base / "external" / "com_google_protobuf"
        if command.endswith(" shutdown"):
            return Result(command=command, exited=0)
        if " build " in command:
            assert kwargs["hide"] is True and kwargs["err_stream"] is None  # only the key lines are shown
            if not protobuf.exists():
                protobuf.mkdir(parents=True)
                (protobuf / "BUILD").write_text(self.build_file)
            self.seen_builds.append((protobuf / "BUILD").read_text())
            code = self.builds.pop(0)
            if code == 0:
                binary = self.layout.output_base / "execroot/zlib_repro/bazel-out/k8-fastbuild/bin/repro"
                binary.parent.mkdir(parents=True, exist_ok=True)
                binary.write_text("")
                return Result(command=command, stderr="INFO: Build completed successfully, 85 total actions\n")
            if code == 1:
                return Result(command=command, exited=1,
                              stderr=ZLIB_ERROR.format(base=self.layout.output_base) + "\nFAILED: Build did NOT\n")
            return Result(command=command, exited=code, stderr="ERROR: C++ compilation of rule '//:repro' failed\n"
                          "1796578211.6: src/main/tools/linux-sandbox.cc:152: calling pipe(2)...\n")
        if command.endswith("/bin/repro"):
            if not kwargs.get("hide"):
                print(BINARY_SAYS)  # as invoke echoes a shown command's output
            return Result(command=command, stdout=BINARY_SAYS + "\n")
        raise AssertionError(f"unexpected command {command}")

    def verbs(self) -> list[tuple[str, str]]:
        """(where, what) of each command: a Bazel command's verb (build, shutdown), else the command."""
        return [(cwd, command.split()[3] if command.startswith("bazel ") else command)
                for cwd, command in self.commands]


@pytest.fixture
def here(build, tmp_path, monkeypatch):
    """A fake `bazel` on PATH, zlib's headers, no offline folder and a network: Bazel would download."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bazel").write_text("#!/bin/sh\necho 'bazel 4.2.3- fake'\n")
    (bin_dir / "bazel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    headers = (tmp_path / "zlib.h", tmp_path / "zconf.h")
    for header in headers:
        header.write_text("")
    monkeypatch.setattr(zlib_repro, "ZLIB_HEADERS", headers)
    monkeypatch.setenv("KIT_BAZEL_OFFLINE_DIR", str(tmp_path / "no-offline-folder"))
    monkeypatch.setattr(zlib_repro, "network_reachable", lambda: True)
    return Layout(build)


def test_step_1_fails_on_zlib_step_2_patches_builds_and_runs_then_it_is_reused(here, capsys):
    c = FakeBazel(here, [1, 0])
    zlib_repro.zlib_repro(c)
    out = capsys.readouterr().out.splitlines()
    protobuf = here.output_base / "external" / "com_google_protobuf" / "BUILD"
    assert c.seen_builds == [PROTOBUF_BUILD, PROTOBUF_BUILD.replace("@zlib//", "@zlib_archive//")]
    # Each build runs in the workspace and is followed by the shutdown of its own server.
    workspace = str(zlib_repro.WORKSPACE_DIR)
    assert c.verbs() == [(workspace, "build"), (workspace, "shutdown"), (workspace, "build"), (workspace, "shutdown"),
                         ("", str(here.output_base / "execroot/zlib_repro/bazel-out/k8-fastbuild/bin/repro"))]
    shown = [line for line in out if not line.startswith("$ ")]
    assert shown[0] == "[zlib-repro] running"
    assert shown[1].startswith("# no ") and "Bazel downloads protobuf 3.8.0 and bazel-skylib" in shown[1]
    build_1, build_2 = shown[3], shown[9]
    assert build_1.startswith("# build 1: exit 1 after ") and build_2.startswith("# build 2: exit 0 after ")
    assert shown[2:-1] == [
        "# step 1: bazel build //:repro in patches/repro, protobuf as released",
        build_1,
        ZLIB_ERROR.format(base=here.output_base),
        "# bazel stopped on protobuf's '@zlib' dependency; applying protobuf-zlib.patch",
        f"# {protobuf}: patched @zlib//:zlib -> @zlib_archive//:zlib",
        "# retrying the build once",
        "# step 2: bazel build //:repro in patches/repro, protobuf patched",
        build_2,
        "INFO: Build completed successfully, 85 total actions",
        BINARY_SAYS,
    ]
    assert shown[-1].startswith("[zlib-repro] done in ")
    assert here.outcome.read_text().splitlines() == [build_1, shown[4], build_2, shown[10], BINARY_SAYS]
    assert here.log.read_text().count("$ bazel ") == 2

    again = FakeBazel(here, [])
    zlib_repro.zlib_repro(again)
    out = capsys.readouterr().out.splitlines()
    assert again.commands == []
    assert out[0].startswith("[zlib-repro] reused: inputs unchanged since ")
    assert out[1:] == here.outcome.read_text().splitlines()


def test_a_changed_patch_or_workspace_runs_it_again(here, tmp_path, monkeypatch, capsys):
    zlib_repro.zlib_repro(FakeBazel(here, [1, 0]))
    patch = tmp_path / "same-fix.patch"
    patch.write_text(PATCH_FILE.read_text().replace("Make protobuf's", "Make  protobuf's"))
    zlib_repro.zlib_repro(FakeBazel(here, [1, 0]), patch)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for path in zlib_repro.workspace_files():
        (workspace / path.name).write_text(path.read_text() + "\n")
    monkeypatch.setattr(zlib_repro, "WORKSPACE_DIR", workspace)
    zlib_repro.zlib_repro(FakeBazel(here, [1, 0]), patch)
    assert capsys.readouterr().out.count("[zlib-repro] running") == 3


def test_any_other_failure_of_step_1_is_shown_in_full(here, capsys):
    c = FakeBazel(here, [2])
    with pytest.raises(Exit) as stop:
        zlib_repro.zlib_repro(c)
    assert stop.value.message == (f"step 1: bazel build failed (exit 2): Bazel's output is above and in {here.log}")
    out = capsys.readouterr().out
    assert out.endswith("ERROR: C++ compilation of rule '//:repro' failed\n"
                        "(1 debug lines of Bazel's linux-sandbox left out here)\n")
    assert [verb for _, verb in c.verbs()] == ["build", "shutdown"]
    assert not here.outcome.exists()


def test_an_unpatched_build_that_succeeds_is_a_failure(here):
    with pytest.raises(Exit) as stop:
        zlib_repro.zlib_repro(FakeBazel(here, [0]))
    assert stop.value.message == ("step 1: the build with protobuf as released succeeded, so patches/repro no "
                                  "longer reproduces the '@zlib' error")


def test_a_protobuf_the_patch_does_not_fit_is_refused_in_one_line(here):
    c = FakeBazel(here, [1], build_file='ZLIB_DEPS = ["//external:zlib"]\n')
    with pytest.raises(Exit) as stop:
        zlib_repro.zlib_repro(c)
    assert stop.value.message.startswith("step 2: ") and "refusing to patch" in stop.value.message
    assert "\n" not in stop.value.message and [verb for _, verb in c.verbs()] == ["build", "shutdown"]


def test_step_1_starts_from_protobuf_as_released_after_a_run_that_patched_it(here):
    zlib_repro.zlib_repro(FakeBazel(here, [1, 0]))
    (here.build / ".stamps" / "zlib-repro.json").unlink()  # run again, on the output base step 2 left
    c = FakeBazel(here, [1, 0])
    zlib_repro.zlib_repro(c)
    assert c.seen_builds[0] == PROTOBUF_BUILD


def test_without_bazel_the_task_says_how_to_install_it_in_one_line(build, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bazel here
    assert inv_exit_code("zlib-repro") == 1
    assert capsys.readouterr() == ("", "bazel: command not found; install it as root with `apt-get install "
                                       "bazel-bootstrap` (Debian's Bazel 4.2.3)\n")
    assert not build.exists()


def test_without_zlib_headers_or_sources_or_a_patch_the_task_stops_in_one_line(here, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zlib_repro, "network_reachable", lambda: False)
    assert inv_exit_code("zlib-repro") == 1
    assert capsys.readouterr().err.startswith(f"no protobuf 3.8.0 sources: {tmp_path / 'no-offline-folder'} does")
    assert inv_exit_code("zlib-repro", "--patch-file", str(tmp_path / "nope.patch")) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'nope.patch'}: no such patch file\n"
    monkeypatch.setattr(zlib_repro, "ZLIB_HEADERS", (tmp_path / "missing" / "zlib.h",))
    assert inv_exit_code("zlib-repro") == 1
    assert capsys.readouterr().err == (f"{tmp_path / 'missing' / 'zlib.h'} missing: @zlib_archive is the system's "
                                       "zlib; install it as root with `apt-get install zlib1g-dev`\n")
    assert not here.root.exists()


# ---- for real: Bazel builds protobuf 3.8.0 --------------------------------------------------------------
INV = Path(sys.executable).parent / "inv"


def why_not_here() -> str | None:
    try:
        zlib_repro.require_tools()
        zlib_repro.find_sources(zlib_repro.offline_dir(), zlib_repro.network_reachable)
    except ReproError as err:
        return str(err)
    return None


def run_inv(build: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KIT_BUILD_DIR=str(build), PYTHONPATH=str(ROOT))
    return subprocess.run([str(INV), "zlib-repro", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)


def bazel_servers(output_base: Path) -> list[int]:
    """Pids of processes started with this output base (a Bazel server names it on its command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(output_base).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# The first test that asks for it builds protobuf (65-130 s on 2 busy cores): more than the suite's
# 300 s per test allows on a slower machine.
SLOW = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    reason = why_not_here()
    if reason is not None:
        pytest.skip(f"the zlib repro needs Bazel and protobuf's sources here: {reason}")
    build = tmp_path_factory.mktemp("zlib-repro") / "build"
    started = time.monotonic()
    done = run_inv(build)
    print(f"inv zlib-repro: {time.monotonic() - started:.0f} s")  # pytest -s shows it
    return build, done


@SLOW
def test_real_bazel_stops_on_zlib_unpatched_and_builds_and_runs_patched(real_run):
    build, done = real_run
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    layout = Layout(build)
    error = ZLIB_ERROR.format(base=layout.output_base)
    patched = f"# {layout.output_base}/external/com_google_protobuf/BUILD: patched @zlib//:zlib -> @zlib_archive//:zlib"
    success = next(line for line in out if line.startswith("INFO: Build completed successfully, "))
    binary = next(line for line in out if line.startswith("protobuf 3.8.0 with zlib "))
    assert out.index(error) < out.index(patched) < out.index(success) < out.index(binary)
    assert binary.endswith(" bytes and read back")
    assert bazel_servers(layout.output_base) == []
    assert list(zlib_repro.WORKSPACE_DIR.glob("bazel-*")) == []  # no convenience links in the repository


@SLOW
def test_real_second_run_is_reused(real_run):
    build, _ = real_run
    again = run_inv(build)
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout.splitlines()
    assert out[0].startswith("[zlib-repro] reused: inputs unchanged since ")
    assert out[1:] == Layout(build).outcome.read_text().splitlines()
    assert not any(line.startswith("$ bazel") for line in out)


@SLOW
def test_real_a_patch_naming_a_repository_the_workspace_lacks_fails_step_2(real_run, tmp_path):
    build, _ = real_run
    wrong = tmp_path / "wrong-repository.patch"
    wrong.write_text(PATCH_FILE.read_text().replace('+ZLIB_DEPS = ["@zlib_archive//:zlib"]',
                                                    f'+ZLIB_DEPS = ["{WRONG_LABEL}"]'))
    done = run_inv(build, f"--patch-file={wrong}")
    layout = Layout(build)
    assert done.returncode == 1, done.stdout
    assert done.stderr == (f"step 2: bazel build failed again after the zlib fix (exit 1): Bazel's output is above "
                           f"and in {layout.log}\n")
    out = done.stdout.splitlines()
    assert f"# {layout.output_base}/external/com_google_protobuf/BUILD: patched @zlib//:zlib -> {WRONG_LABEL}" in out
    assert ("ERROR: " + str(layout.output_base) + "/external/com_google_protobuf/BUILD:148:11: no such package "
            "'@com_github_madler_zlib//': The repository '@com_github_madler_zlib' could not be resolved and "
            "referenced by '@com_google_protobuf//:protobuf'") in out
    assert not any(line.startswith("INFO: From Compiling") for line in out)  # it stopped at analysis
    assert bazel_servers(layout.output_base) == []
