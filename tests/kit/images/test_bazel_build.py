"""kit.images.bazel_build commands and the kit.images.build tasks, without an engine.

The tasks run against a recording Context that plays git and docker (a
failing first Bazel run with the zlib error, then a good one), so the whole
build-server flow is exercised: clone, build, patch, retry, copy.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Context, MockContext
from invoke.exceptions import Exit
from invoke.runners import Result

from kit.images import bazel_build as bb
from kit.images import build as docker_tasks
from kit.images.bazel_build import (
    BazelBuildError,
    BuildLayout,
    base_image_ref,
    bazel_build_command,
    build_with_zlib_retry,
    built_binary,
    checkout_tag_command,
    clone_command,
    host_path,
    image_build_command,
)
from kit.images.zlib_patch import PATCH_FILE, ZlibPatchError
from tests.helpers import inv_exit_code

REPO = Path(__file__).resolve().parents[3]
ZLIB_ERROR = (
    "ERROR: /bazel-cache/output_base/external/com_google_protobuf/BUILD:148:1: "
    "no such package '@zlib//': The repository '@zlib' could not be resolved and "
    "referenced by '@com_google_protobuf//:protobuf'\n"
    "FAILED: Build did NOT complete successfully (47 packages loaded)\n"
)
PROTOBUF_BUILD = """\
licenses(["notice"])

################################################################################
# ZLIB configuration
################################################################################

ZLIB_DEPS = ["@zlib//:zlib"]

################################################################################
# Protobuf Runtime Library
################################################################################
"""
PROTOBUF_BUILD_FIXED = PROTOBUF_BUILD.replace("@zlib//:zlib", "@zlib_archive//:zlib")
NO_DAEMON = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)


# --- command builders ------------------------------------------------------------


def test_image_build_command():
    assert image_build_command() == [
        "docker", "build",
        "-f", str(REPO / "docker" / "Dockerfile"),
        "--build-arg", "BASE_IMAGE=tensorflow/serving:2.21.0-devel",
        "-t", "tensorflow/serving:nightly-devel-mypy2",
        str(REPO),
    ]
    assert image_build_command("me/kit:dev", "2.19.0-devel", repo_root=Path("/r")) == [
        "docker", "build", "-f", "/r/docker/Dockerfile",
        "--build-arg", "BASE_IMAGE=tensorflow/serving:2.19.0-devel",
        "-t", "me/kit:dev", "/r",
    ]


@pytest.mark.parametrize(
    "given, ref",
    [
        ("2.19.0-devel", "tensorflow/serving:2.19.0-devel"),
        ("tensorflow/serving:latest-devel", "tensorflow/serving:latest-devel"),
        ("registry.local/serving-devel", "registry.local/serving-devel"),
        ("tensorflow/serving@sha256:abc", "tensorflow/serving@sha256:abc"),
    ],
)
def test_base_image_ref(given, ref):
    assert base_image_ref(given) == ref


def test_dockerfile_pins_the_base_image_the_kit_defaults_to():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={bb.BASE_DEVEL_IMAGE}\nFROM ${{BASE_IMAGE}}" in text
    assert "COPY requirements.txt " in text
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[-2:] == ["*", "!requirements.txt"]


def test_clone_and_checkout_commands(tmp_path):
    assert clone_command(tmp_path / "serving") == [
        "git", "clone", "--depth", "1", "--branch", "2.21.0",
        "https://github.com/tensorflow/serving", str(tmp_path / "serving"),
    ]
    assert clone_command(tmp_path, "2.19.1")[5] == "2.19.1"
    assert checkout_tag_command(tmp_path) == [
        "git", "-C", str(tmp_path), "describe", "--tags", "--exact-match", "HEAD",
    ]


def test_bazel_build_command(tmp_path):
    layout = BuildLayout(tmp_path)
    assert bazel_build_command(layout, user="1000:1000") == [
        "docker", "run", "--rm",
        "--user", "1000:1000",
        "-e", "HOME=/bazel-cache/home",
        "-e", "USER=kit",
        "-v", f"{tmp_path}/build/src/serving:/src/serving",
        "-v", f"{tmp_path}/build/bazel-cache:/bazel-cache",
        "-w", "/src/serving",
        "tensorflow/serving:nightly-devel-mypy2",
        "bazel",
        "--output_user_root=/bazel-cache/user_root",
        "--output_base=/bazel-cache/output_base",
        "--host_jvm_args=-Duser.home=/bazel-cache/home",
        "build", "-c", "opt", "--color=no", "--curses=no",
        "tensorflow_serving/model_servers:tensorflow_model_server",
    ]


def test_bazel_build_command_without_user_and_with_options(tmp_path):
    argv = bazel_build_command(
        BuildLayout(tmp_path), image="img", bazel_options=["--local_ram_resources=2048"], user=None
    )
    assert "--user" not in argv and "HOME=/bazel-cache/home" not in argv
    assert argv[argv.index("img") + 1] == "bazel"
    assert argv[-2:] == ["--local_ram_resources=2048", "tensorflow_serving/model_servers:tensorflow_model_server"]


def test_layout_keeps_everything_under_build(tmp_path):
    layout = BuildLayout(tmp_path)
    assert layout.output_base == tmp_path / "build/bazel-cache/output_base"
    assert layout.binary == tmp_path / "build/bin/tensorflow_model_server"
    assert layout.protobuf_build == tmp_path / "build/bazel-cache/output_base/external/com_google_protobuf/BUILD"
    assert layout.mounts() == {"/src/serving": layout.src, "/bazel-cache": layout.cache}


def test_host_path(tmp_path):
    mounts = {"/bazel-cache": tmp_path / "cache", "/bazel-cache/output_base": tmp_path / "ob"}
    assert host_path("/bazel-cache/x/../y", mounts) == tmp_path / "cache" / "y"
    assert host_path("/bazel-cache/output_base/execroot", mounts) == tmp_path / "ob" / "execroot"
    assert host_path("/bazel-cache", mounts) == tmp_path / "cache" / "."
    with pytest.raises(BazelBuildError, match="/bazel-cachex/a is not under any mount"):
        host_path("/bazel-cachex/a", mounts)


def fake_bazel_output(layout: BuildLayout, content: bytes = b"\x7fELF server") -> Path:
    """What a finished build leaves: bazel-bin -> container path, and the binary."""
    bin_dir = layout.output_base / "execroot/tf_serving/bazel-out/k8-opt/bin"
    binary = bin_dir / bb.BAZEL_BINARY
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_bytes(content)
    layout.src.mkdir(parents=True, exist_ok=True)
    link = layout.src / "bazel-bin"
    if link.is_symlink():
        link.unlink()
    link.symlink_to("/bazel-cache/output_base/execroot/tf_serving/bazel-out/k8-opt/bin")
    return binary


def test_built_binary_reads_bazel_bin_through_the_mounts(tmp_path):
    layout = BuildLayout(tmp_path)
    with pytest.raises(BazelBuildError, match="bazel-bin is missing"):
        built_binary(layout)
    binary = fake_bazel_output(layout)
    assert not (layout.src / "bazel-bin").exists()  # dangling on the host
    assert built_binary(layout) == binary
    binary.unlink()
    with pytest.raises(BazelBuildError, match="built binary not found"):
        built_binary(layout)


# --- build_with_zlib_retry -------------------------------------------------------


def write_protobuf_build(output_base: Path, text: str = PROTOBUF_BUILD) -> Path:
    build = output_base / "external" / "com_google_protobuf" / "BUILD"
    build.parent.mkdir(parents=True, exist_ok=True)
    build.write_text(text)
    return build


class Runs:
    """A scripted Bazel: returns the given (code, output) pairs in order."""

    def __init__(self, *results, on_call=None):
        self.results = list(results)
        self.calls = 0
        self.on_call = on_call

    def __call__(self):
        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        return self.results.pop(0)


def test_success_needs_no_patch(tmp_path):
    runs = Runs((0, "INFO: Build completed successfully"))
    outcome = build_with_zlib_retry(runs, tmp_path, say=lambda _: None)
    assert (outcome.attempts, outcome.patch, runs.calls) == (1, None, 1)


def test_zlib_error_patches_then_retries_once(tmp_path):
    build = write_protobuf_build(tmp_path)
    seen = []
    runs = Runs((1, ZLIB_ERROR), (0, "ok"),
                on_call=lambda n: seen.append(build.read_text() == PROTOBUF_BUILD_FIXED))
    said = []
    outcome = build_with_zlib_retry(runs, tmp_path, say=said.append)
    assert runs.calls == 2 and outcome.attempts == 2
    assert seen == [False, True]  # the retry ran on the fixed BUILD
    assert outcome.patch.changed and build.read_text() == PROTOBUF_BUILD_FIXED
    assert said[0] == "bazel stopped on protobuf's '@zlib' dependency; applying protobuf-zlib.patch"
    assert said[-1] == "retrying the build once"


def test_other_failures_are_not_retried(tmp_path):
    build = write_protobuf_build(tmp_path)
    runs = Runs((1, "ERROR: C++ compilation of rule failed"))
    with pytest.raises(BazelBuildError, match=r"^bazel build failed \(exit 1\)$"):
        build_with_zlib_retry(runs, tmp_path, say=lambda _: None)
    assert runs.calls == 1 and build.read_text() == PROTOBUF_BUILD


def test_only_one_retry(tmp_path):
    write_protobuf_build(tmp_path)
    runs = Runs((1, ZLIB_ERROR), (1, ZLIB_ERROR))
    with pytest.raises(BazelBuildError, match="failed again after the zlib fix"):
        build_with_zlib_retry(runs, tmp_path, say=lambda _: None)
    assert runs.calls == 2


def test_already_fixed_build_is_not_retried(tmp_path):
    write_protobuf_build(tmp_path, PROTOBUF_BUILD_FIXED)
    runs = Runs((1, ZLIB_ERROR))
    with pytest.raises(BazelBuildError, match="although .*BUILD is already fixed"):
        build_with_zlib_retry(runs, tmp_path, say=lambda _: None)
    assert runs.calls == 1


def test_unexpected_build_is_refused_and_not_retried(tmp_path):
    build = write_protobuf_build(tmp_path, 'ZLIB_DEPS = ["//external:zlib"]\n')
    runs = Runs((1, ZLIB_ERROR))
    with pytest.raises(ZlibPatchError, match="refusing to patch"):
        build_with_zlib_retry(runs, tmp_path, say=lambda _: None)
    assert runs.calls == 1 and build.read_text() == 'ZLIB_DEPS = ["//external:zlib"]\n'


# --- tasks -----------------------------------------------------------------------


def all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def test_image_dry_run_prints_the_command_and_runs_nothing(repo, capsys):
    docker_tasks.image(MockContext(), dry_run=True)  # MockContext raises on any run
    assert capsys.readouterr().out == (
        f"$ docker build -f {repo}/docker/Dockerfile "
        "--build-arg BASE_IMAGE=tensorflow/serving:2.21.0-devel "
        f"-t tensorflow/serving:nightly-devel-mypy2 {repo}\n"
    )


def test_build_server_dry_run_prints_the_commands_and_runs_nothing(repo, capsys):
    docker_tasks.build_server(MockContext(), dry_run=True, bazel_options="--jobs=2")
    out = capsys.readouterr().out.splitlines()
    layout = BuildLayout(repo)
    bazel = bazel_build_command(layout, bazel_options=["--jobs=2"], user=bb.host_user())
    assert out == [
        f"$ git clone --depth 1 --branch 2.21.0 https://github.com/tensorflow/serving {layout.src}",
        f"$ mkdir -p {layout.home} {layout.output_base}",
        "$ " + " ".join(bazel),
        # (absolute: the patch file lies outside this test's fake repository)
        f"# if the output says no such package '@zlib//': apply {PATCH_FILE} to "
        f"{layout.protobuf_build} and run the docker command once more",
        f"$ mkdir -p {layout.binary.parent} && link=$(readlink {layout.src}/bazel-bin) && "
        f'cp {layout.cache}/"${{link#/bazel-cache/}}"/{bb.BAZEL_BINARY} {layout.binary}',
        "# bazel-bin points into the container; the cp reads it through the build/bazel-cache mount",
    ]
    assert all_files(repo) == []  # nothing created


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_printed_copy_runs_as_printed_after_a_build(tmp_path, shell):
    # A finished build as Bazel leaves it: bazel-bin points into the container, dangling here.
    layout = BuildLayout(tmp_path / "a repo")
    layout.src.mkdir(parents=True)
    (layout.src / "bazel-bin").symlink_to("/bazel-cache/output_base/execroot/tf_serving/bazel-out/k8-opt/bin")
    built = layout.output_base / "execroot/tf_serving/bazel-out/k8-opt/bin" / bb.BAZEL_BINARY
    built.parent.mkdir(parents=True)
    built.write_bytes(b"\x7fELF server")
    naive = subprocess.run(["cp", str(layout.src / "bazel-bin" / bb.BAZEL_BINARY), str(layout.binary)],
                           capture_output=True, check=False)
    assert naive.returncode != 0  # what the dry run used to print
    done = subprocess.run([shell, "-c", bb.copy_binary_shell(layout)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert layout.binary.read_bytes() == b"\x7fELF server"


def test_build_server_keeps_its_checkout_cache_and_binary_in_kit_build_dir(repo, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("KIT_BUILD_DIR", str(elsewhere))
    docker_tasks.build_server(MockContext(), dry_run=True)
    out = capsys.readouterr().out
    assert f"--branch 2.21.0 https://github.com/tensorflow/serving {elsewhere}/src/serving\n" in out
    assert f"{elsewhere}/bazel-cache/home" in out and f"{elsewhere}/bin/tensorflow_model_server" in out
    assert f"{repo}/build" not in out


def test_build_server_dry_run_with_existing_checkout(repo, capsys):
    (BuildLayout(repo).src / ".git").mkdir(parents=True)
    docker_tasks.build_server(MockContext(), dry_run=True, serving_tag="2.19.1")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"$ git -C {BuildLayout(repo).src} describe --tags --exact-match HEAD"
    assert out[1] == "# reusing build/src/serving; it must sit on tag 2.19.1"


def test_cli_flags(repo, capsys):
    assert inv_exit_code("image", "--dry-run", "--tag", "me/kit:1", "--base-tag", "2.19.0-devel") == 0
    assert capsys.readouterr().out == (
        f"$ docker build -f {repo}/docker/Dockerfile "
        f"--build-arg BASE_IMAGE=tensorflow/serving:2.19.0-devel -t me/kit:1 {repo}\n"
    )
    assert inv_exit_code("build-server", "--dry-run", "--serving-tag", "2.19.1", "--image", "me/kit:1") == 0
    out = capsys.readouterr().out
    assert "--branch 2.19.1" in out and " me/kit:1 bazel " in out
    assert inv_exit_code("build-server", "--help") == 0
    assert "--dry-run" in capsys.readouterr().out


@pytest.fixture
def no_daemon(tmp_path, monkeypatch):
    """A docker CLI that cannot reach an engine, like this machine's."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nprint({NO_DAEMON!r}, file=sys.stderr)\nsys.exit(1)\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.mark.parametrize("task", ["image", "build-server"])
def test_without_engine_tasks_stop_with_one_line(tmp_path, monkeypatch, no_daemon, capsys, task):
    monkeypatch.setattr(bb, "REPO_ROOT", tmp_path / "repo")
    assert inv_exit_code(task) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # stopped before printing or running any command
    assert captured.err == (
        f"docker: no Docker engine reachable (docker info failed: {NO_DAEMON})\n"
    )
    assert not (tmp_path / "repo").exists()


def test_without_docker_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert inv_exit_code("image") == 1
    err = capsys.readouterr().err
    assert err.startswith("docker: command not found") and err.count("\n") == 1


class FakeContext(Context):
    """Records commands; plays git and docker for the build-server flow."""

    def __init__(self, layout: BuildLayout, bazel_results, describe=None):
        super().__init__()
        self.layout = layout
        self.bazel_results = list(bazel_results)
        self.describe = describe
        self.commands: list[str] = []

    def run(self, command, **kwargs):
        self.commands.append(command)
        # never waits on stdin (CI has none): it reads an empty stream, EOF at once
        assert kwargs.get("warn") is True and kwargs["in_stream"].read() == ""
        if command.startswith("git clone"):
            (self.layout.src / ".git").mkdir(parents=True)
            return Result(command=command, exited=0)
        if command.startswith("git -C"):
            return Result(command=command, stdout=self.describe or "", exited=0 if self.describe else 128)
        if command.startswith("docker run"):
            code, stderr = self.bazel_results.pop(0)
            if code == 0:
                fake_bazel_output(self.layout)
            return Result(command=command, stdout="INFO: Analyzed target\n", stderr=stderr, exited=code)
        raise AssertionError(f"unexpected command {command}")


@pytest.fixture
def engine_ok(repo, monkeypatch):
    monkeypatch.setattr(docker_tasks, "engine_status", lambda: None)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: "/usr/bin/git" if name == "git" else real_which(name, *a, **k)
    )
    return BuildLayout(repo)


def test_build_server_clones_builds_patches_retries_and_copies(engine_ok, capsys):
    layout = engine_ok
    protobuf = write_protobuf_build(layout.output_base)
    c = FakeContext(layout, [(1, ZLIB_ERROR), (0, "INFO: Build completed successfully\n")])
    docker_tasks.build_server(c)

    bazel = " ".join(bazel_build_command(layout, user=bb.host_user()))
    assert c.commands == [" ".join(clone_command(layout.src)), bazel, bazel]
    assert protobuf.read_text() == PROTOBUF_BUILD_FIXED
    assert layout.binary.read_bytes() == b"\x7fELF server"
    assert stat.S_IMODE(layout.binary.stat().st_mode) == 0o755
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"$ {c.commands[0]}",
        f"$ mkdir -p {layout.home} {layout.output_base}",
        f"$ {bazel}",
        "# bazel stopped on protobuf's '@zlib' dependency; applying protobuf-zlib.patch",
        f"# {protobuf}: patched @zlib//:zlib -> @zlib_archive//:zlib",
        "# retrying the build once",
        f"$ {bazel}",
        f"$ cp {layout.output_base}/execroot/tf_serving/bazel-out/k8-opt/bin/{bb.BAZEL_BINARY} {layout.binary}",
        "built build/bin/tensorflow_model_server",
    ]
    log = layout.log.read_text()
    assert log.count(f"$ {bazel}\n") == 2
    assert "no such package '@zlib//'" in log and log.rstrip().endswith("[exit 0]")


def test_build_server_stops_on_other_failures_with_one_line(engine_ok):
    c = FakeContext(engine_ok, [(1, "ERROR: C++ compilation failed\n")])
    with pytest.raises(Exit) as stop:
        docker_tasks.build_server(c)
    assert stop.value.message == "bazel build failed (exit 1) (full output: build/logs/bazel-build.log)"
    assert sum(cmd.startswith("docker run") for cmd in c.commands) == 1
    assert not engine_ok.binary.exists()


def test_build_server_refuses_an_unexpected_protobuf_build(engine_ok):
    protobuf = write_protobuf_build(engine_ok.output_base, "cc_library(name = 'protobuf')\n")
    c = FakeContext(engine_ok, [(1, ZLIB_ERROR)])
    with pytest.raises(Exit) as stop:
        docker_tasks.build_server(c)
    assert f"{protobuf}: refusing to patch" in stop.value.message
    assert "\n" not in stop.value.message
    assert protobuf.read_text() == "cc_library(name = 'protobuf')\n"


def test_build_server_reuses_a_checkout_on_the_right_tag_only(engine_ok):
    (engine_ok.src / ".git").mkdir(parents=True)
    c = FakeContext(engine_ok, [(0, "")], describe="2.21.0\n")
    docker_tasks.build_server(c)
    assert c.commands[0] == " ".join(checkout_tag_command(engine_ok.src))
    assert engine_ok.binary.exists()

    c = FakeContext(engine_ok, [], describe="2.19.0\n")
    with pytest.raises(Exit) as stop:
        docker_tasks.build_server(c)
    assert stop.value.message == (
        "build/src/serving is at 2.19.0, not 2.21.0: remove it or pass --serving-tag 2.19.0"
    )


# --- the real `inv` executable, in the real repository ------------------------------

INV = Path(sys.executable).parent / "inv"


def run_inv(*args: str, path: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [str(INV), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.skipif(not INV.exists(), reason="invoke's inv script not next to this python")
def test_inv_dry_runs_in_the_real_repository(no_daemon):
    # no_daemon: even if this machine had an engine, nothing may reach it.
    before = {p: p.exists() for p in (REPO / "build/src/serving", REPO / "build/bazel-cache")}
    proc = run_inv("image", "--dry-run", path=str(no_daemon))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"$ docker build -f {REPO}/docker/Dockerfile ")
    proc = run_inv("build-server", "--dry-run", path=str(no_daemon))
    assert proc.returncode == 0, proc.stderr
    assert "apply patches/protobuf-zlib.patch to " in proc.stdout
    commands = [line for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert commands[-2].startswith("$ docker run --rm ")
    link = f"link=$(readlink {REPO}/build/src/serving/bazel-bin)"
    assert commands[-1].startswith(f"$ mkdir -p {REPO}/build/bin && {link} && cp ")
    assert {p: p.exists() for p in before} == before


@pytest.mark.skipif(not INV.exists(), reason="invoke's inv script not next to this python")
def test_inv_without_engine_exits_non_zero_with_one_line(no_daemon):
    proc = run_inv("build-server", path=str(no_daemon))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"docker: no Docker engine reachable (docker info failed: {NO_DAEMON})\n"


def test_ci_workflow_runs_the_docker_route():
    import yaml

    workflow = yaml.safe_load((REPO / ".github/workflows/docker-route.yml").read_text())
    jobs = workflow["jobs"]
    runs = {name: "\n".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()}
    assert "make image" in runs["image"]
    assert "make image ARGS=--target=pyserving" in runs["image"]
    assert 'make test ARGS="tests/kit/images/test_pyserving_image.py -rs"' in runs["image"]
    assert "make test ARGS=\"tests/e2e -rs\"" in runs["test-docker-backend"]
    assert "make reproduce BACKEND=docker" in runs["test-docker-backend"]
    assert "make build-server" in runs["build-server"]
    # The Bazel build is manual only; the others run on every push/PR too.
    assert jobs["build-server"]["if"] == "github.event_name == 'workflow_dispatch' && inputs.build_server"
    assert "if" not in jobs["image"] and "if" not in jobs["test-docker-backend"]
    assert workflow[True]["workflow_dispatch"]["inputs"]["build_server"]["type"] == "boolean"
    assert all(job["runs-on"].startswith("ubuntu-") for job in jobs.values())
