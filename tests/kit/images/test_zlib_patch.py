"""patches/protobuf-zlib.patch and kit.images.zlib_patch, on BUILD files written here."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kit.images import zlib_patch
from kit.images.zlib_patch import (
    PATCH_FILE,
    ZlibPatchError,
    apply_zlib_fix,
    find_protobuf_build,
    fix_build_file,
    is_zlib_error,
    load_patch,
)

UNPATCHED_LINE = 'ZLIB_DEPS = ["@zlib//:zlib"]'
PATCHED_LINE = 'ZLIB_DEPS = ["@zlib_archive//:zlib"]'

# The head of protobuf 3.8.0's BUILD, the layout the patch's hunk was made
# against (ZLIB_DEPS on line 22; 3.7.1 had //external:zlib there).
BUILD_HEAD = """\
# Bazel (https://bazel.build/) BUILD file for Protobuf.

licenses(["notice"])

exports_files(["LICENSE"])

################################################################################
# Java 9 configuration
################################################################################

config_setting(
    name = "jdk9",
    values = {
        "java_toolchain": "@bazel_tools//tools/jdk:toolchain_jdk9",
    },
)

################################################################################
# ZLIB configuration
################################################################################

ZLIB_DEPS = ["@zlib//:zlib"]

################################################################################
# Protobuf Runtime Library
################################################################################

MSVC_COPTS = [
    "/DHAVE_PTHREAD",
]
"""
BUILD_TAIL = """
PROTOBUF_DEPS = select({
    ":msvc": [],
    "//conditions:default": ZLIB_DEPS,
})
"""
UNPATCHED = BUILD_HEAD + BUILD_TAIL
PATCHED = UNPATCHED.replace(UNPATCHED_LINE, PATCHED_LINE)

# Bazel's own words, as users reported them (tensorflow/serving#1406 and
# bazelbuild/bazel#10270 for the first), and the later wordings.
BAZEL_ERRORS = [
    "ERROR: /root/.cache/_bazel_root/2d09b9f1/external/com_google_protobuf/BUILD:148:1: "
    "no such package '@zlib//': The repository '@zlib' could not be resolved and "
    "referenced by '@com_google_protobuf//:protobuf'\n"
    "ERROR: Analysis of target '//tensorflow_serving/model_servers:tensorflow_model_server' "
    "failed; build aborted: no such package '@zlib//': The repository '@zlib' could not be resolved\n"
    "INFO: Elapsed time: 4.944s\nFAILED: Build did NOT complete successfully",
    "ERROR: /bazel-cache/output_base/external/com_google_protobuf/BUILD:148:11: "
    "no such package '@zlib//': The repository '@zlib' could not be resolved: "
    "Repository '@zlib' is not defined and referenced by '@com_google_protobuf//:protobuf'",
    "ERROR: no such package '@@zlib//': The repository '@@zlib' could not be resolved: "
    "Repository '@@zlib' is not defined",
    # --color=yes output
    "\x1b[31m\x1b[1mERROR: \x1b[0mno such package '@zlib//': The repository '@zlib' "
    "could not be resolved and referenced by '@com_google_protobuf//:protobuf'",
]
OTHER_ERRORS = [
    "ERROR: no such package '@zlib_archive//': BUILD file not found on package path",
    "ERROR: no such package '@llvm_zlib//': The repository '@llvm_zlib' could not be resolved",
    "ERROR: .../external/com_google_protobuf/BUILD:132:1: no such target '//external:zlib': "
    "target 'zlib' not declared in package 'external'",
    "ERROR: C++ compilation of rule '//tensorflow_serving/core:loader' failed (Exit 1)",
    "",
]


def make_output_base(tmp_path: Path, text: str = UNPATCHED, name: str = "BUILD") -> Path:
    repo = tmp_path / "output_base" / "external" / "com_google_protobuf"
    repo.mkdir(parents=True)
    (repo / name).write_text(text)
    return tmp_path / "output_base"


def test_patch_file_is_one_hunk_changing_only_the_zlib_label():
    hunks = load_patch(PATCH_FILE)
    assert len(hunks) == 1
    assert hunks[0].old_start == 19
    assert hunks[0].removed == (UNPATCHED_LINE,)
    assert hunks[0].added == (PATCHED_LINE,)
    # The hunk's context is the real block around the line.
    assert hunks[0].old[0] == "# ZLIB configuration"
    assert hunks[0].old[-1] == "# Protobuf Runtime Library"


def test_applies_to_unpatched_build_exactly(tmp_path):
    output_base = make_output_base(tmp_path)
    result = apply_zlib_fix(output_base)
    build = output_base / "external" / "com_google_protobuf" / "BUILD"
    assert result.changed is True
    assert result.build_file == build
    assert build.read_text() == PATCHED
    assert "patched @zlib//:zlib -> @zlib_archive//:zlib" in result.message


def test_is_idempotent(tmp_path):
    output_base = make_output_base(tmp_path)
    apply_zlib_fix(output_base)
    build = find_protobuf_build(output_base)
    before = build.stat().st_mtime_ns
    again = apply_zlib_fix(output_base)
    assert again.changed is False
    assert "already uses @zlib_archive//:zlib; nothing to do" in again.message
    assert build.read_text() == PATCHED
    assert build.stat().st_mtime_ns == before  # not even rewritten


def test_messages_name_the_labels_of_the_patch_given(tmp_path):
    # Before, they named @zlib_archive whatever the patch file said.
    other = tmp_path / "other.patch"
    other.write_text(PATCH_FILE.read_text().replace("@zlib_archive//:zlib", "@net_zlib//:zlib"))
    output_base = make_output_base(tmp_path)
    assert apply_zlib_fix(output_base, other).message.endswith(": patched @zlib//:zlib -> @net_zlib//:zlib")
    assert apply_zlib_fix(output_base, other).message.endswith(": already uses @net_zlib//:zlib; nothing to do")


def test_already_patched_file_is_left_alone(tmp_path):
    output_base = make_output_base(tmp_path, PATCHED)
    assert apply_zlib_fix(output_base).changed is False
    assert find_protobuf_build(output_base).read_text() == PATCHED


def test_build_bazel_name_is_found(tmp_path):
    output_base = make_output_base(tmp_path, name="BUILD.bazel")
    assert apply_zlib_fix(output_base).build_file.name == "BUILD.bazel"
    assert (output_base / "external/com_google_protobuf/BUILD.bazel").read_text() == PATCHED


def test_block_moved_by_a_few_lines_still_applies(tmp_path):
    # Protobuf 3.8 has more config_settings above the zlib block.
    shifted = UNPATCHED.replace(
        'exports_files(["LICENSE"])\n',
        'exports_files(["LICENSE"])\n\nconfig_setting(\n    name = "msvc",\n)\n',
    )
    output_base = make_output_base(tmp_path, shifted)
    assert apply_zlib_fix(output_base).changed
    assert find_protobuf_build(output_base).read_text() == shifted.replace(UNPATCHED_LINE, PATCHED_LINE)


def test_crlf_and_file_mode_are_kept(tmp_path):
    output_base = make_output_base(tmp_path)
    build = find_protobuf_build(output_base)
    build.write_bytes(UNPATCHED.replace("\n", "\r\n").encode())
    build.chmod(0o640)
    fix_build_file(build)
    assert build.read_bytes() == PATCHED.replace("\n", "\r\n").encode()
    assert stat.S_IMODE(build.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "line",
    ['ZLIB_DEPS = ["//external:zlib"]', 'ZLIB_DEPS = ["@zlib"]', None],
    ids=["external-bind", "tf-renamed", "no-zlib-line"],
)
def test_refuses_a_file_that_matches_neither_form(tmp_path, line):
    text = UNPATCHED.replace(UNPATCHED_LINE + "\n", "" if line is None else line + "\n")
    output_base = make_output_base(tmp_path, text)
    build = find_protobuf_build(output_base)
    with pytest.raises(ZlibPatchError) as err:
        apply_zlib_fix(output_base)
    message = str(err.value)
    assert str(build) in message
    assert "refusing to patch" in message
    assert repr(UNPATCHED_LINE) in message and repr(PATCHED_LINE) in message
    if line is None:
        assert "it has no ZLIB_DEPS line" in message
    else:
        assert f"its ZLIB_DEPS line is {line!r}" in message
    assert "\n" not in message
    assert build.read_text() == text  # untouched


def test_missing_build_file_names_where_it_looked(tmp_path):
    with pytest.raises(ZlibPatchError, match="no protobuf BUILD file in .*com_google_protobuf"):
        apply_zlib_fix(tmp_path / "output_base")


@pytest.mark.parametrize("output", BAZEL_ERRORS)
def test_detector_recognises_bazels_zlib_error(output):
    assert is_zlib_error(output)


@pytest.mark.parametrize("output", OTHER_ERRORS)
def test_detector_ignores_other_failures(output):
    assert not is_zlib_error(output)


def test_cli(tmp_path, capsys):
    output_base = make_output_base(tmp_path)
    assert zlib_patch.main([str(output_base)]) == 0
    assert "patched" in capsys.readouterr().out
    assert zlib_patch.main([str(output_base)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    find_protobuf_build(output_base).write_text("cc_library(name = 'x')\n")
    assert zlib_patch.main([str(output_base)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch not installed")
def test_gnu_patch_agrees_with_the_python_application(tmp_path):
    # The patch file is a real patch: GNU patch applies it the same way.
    repo = make_output_base(tmp_path) / "external" / "com_google_protobuf"
    run = lambda *args: subprocess.run(  # noqa: E731
        ["patch", "-p1", "--batch", *args, "-i", str(PATCH_FILE)],
        cwd=repo, capture_output=True, text=True, check=False,
    )
    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert run().returncode == 0
    assert (repo / "BUILD").read_text() == PATCHED
    # ...and sees the patched file as already patched.
    assert run("--dry-run", "--forward").returncode != 0
    assert run("--dry-run", "--reverse").returncode == 0
