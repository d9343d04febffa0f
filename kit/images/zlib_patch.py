"""Fix protobuf's zlib label inside a Bazel output base.

TF Serving's workspace names zlib ``@zlib_archive`` while protobuf's BUILD
(3.8.0 and later; 3.7.1 still asked for ``//external:zlib``) depends on
``@zlib//:zlib``, so ``bazel build`` stops with
``no such package '@zlib//'``.  The fix is ``patches/protobuf-zlib.patch``;
this module applies that very file (parsed here, so no ``patch`` binary is
needed and the patch file is what gets tested), idempotently, and refuses to
touch a BUILD file that matches neither the unpatched nor the patched form.

Run by hand:  python -m kit.images.zlib_patch <bazel output base>
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kit.paths import ROOT

logger = logging.getLogger(__name__)

PATCH_FILE = ROOT / "patches" / "protobuf-zlib.patch"

PROTOBUF_REPO = "com_google_protobuf"
# Bazel accepts either name for a package's build file; BUILD.bazel wins.
BUILD_FILE_NAMES = ("BUILD.bazel", "BUILD")

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Bazel's wording across versions:
#   no such package '@zlib//': The repository '@zlib' could not be resolved
#   ... could not be resolved: Repository '@zlib' is not defined   (Bazel 5+)
#   no such package '@@zlib//': The repository '@@zlib' could not be resolved  (Bazel 6+/bzlmod)
# '@zlib_archive//' and '@llvm_zlib//' must not match: the quote right after
# "zlib" guarantees that.
_ZLIB_ERROR = re.compile(
    r"no such package\s+'@{1,2}zlib//'\s*:\s*"
    r"The repository\s+'@{1,2}zlib'\s+could not be resolved",
    re.IGNORECASE,
)


class ZlibPatchError(RuntimeError):
    """The fix cannot be applied safely; the message says why and where."""


@dataclass(frozen=True)
class Hunk:
    """One hunk of a unified diff: the old and new text of one region."""

    old_start: int  # 1-based line number the diff was made against
    old: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(line for line in self.old if line not in self.new)

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(line for line in self.new if line not in self.old)


@dataclass(frozen=True)
class PatchResult:
    build_file: Path
    changed: bool
    message: str


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(text: str) -> list[Hunk]:
    """Parse a single-file unified diff into hunks (preamble text is ignored)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines) and not lines[i].startswith("--- "):
        i += 1
    if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
        raise ZlibPatchError("patch has no '--- a/…' / '+++ b/…' file header")
    i += 2
    hunks: list[Hunk] = []
    while i < len(lines):
        match = _HUNK_HEADER.match(lines[i])
        if not match:
            if lines[i].startswith("--- "):
                raise ZlibPatchError("patch touches more than one file; expected only protobuf's BUILD")
            i += 1
            continue
        old_count = int(match.group(2) or 1)
        new_count = int(match.group(4) or 1)
        old: list[str] = []
        new: list[str] = []
        i += 1
        while i < len(lines) and (len(old) < old_count or len(new) < new_count):
            line = lines[i]
            tag, body = (line[:1], line[1:]) if line else (" ", "")
            if tag == " ":
                old.append(body)
                new.append(body)
            elif tag == "-":
                old.append(body)
            elif tag == "+":
                new.append(body)
            elif tag != "\\":  # "\ No newline at end of file"
                raise ZlibPatchError(f"malformed hunk line in patch: {line!r}")
            i += 1
        if len(old) != old_count or len(new) != new_count:
            raise ZlibPatchError("truncated hunk in patch")
        hunks.append(Hunk(int(match.group(1)), tuple(old), tuple(new)))
    if not hunks:
        raise ZlibPatchError("patch contains no hunks")
    return hunks


def load_patch(patch_file: Path = PATCH_FILE) -> list[Hunk]:
    return parse_patch(Path(patch_file).read_text(encoding="utf-8"))


def _find_block(lines: list[str], block: tuple[str, ...], near: int) -> int | None:
    """Index where ``block`` occurs in ``lines``, nearest to line ``near``.

    Like GNU patch, the stated line number is only a hint: protobuf releases
    move the zlib block by a few lines.  Trailing whitespace is ignored.
    """
    want = [b.rstrip() for b in block]
    have = [line.rstrip() for line in lines]
    hits = [
        i for i in range(len(have) - len(want) + 1) if have[i : i + len(want)] == want
    ]
    if not hits:
        return None
    return min(hits, key=lambda i: abs(i - (near - 1)))


def patch_state(text: str, hunks: list[Hunk]) -> str:
    """'unpatched', 'patched' or 'mismatch' for the whole set of hunks."""
    lines = text.splitlines()
    states = set()
    for hunk in hunks:
        if _find_block(lines, hunk.old, hunk.old_start) is not None:
            states.add("unpatched")
        elif _find_block(lines, hunk.new, hunk.old_start) is not None:
            states.add("patched")
        else:
            return "mismatch"
    # A half-applied patch is not something to guess about.
    return states.pop() if len(states) == 1 else "mismatch"


def apply_hunks(text: str, hunks: list[Hunk]) -> str:
    """Return ``text`` with every hunk applied; raises if one does not fit."""
    lines = text.splitlines()
    newline = "\r\n" if "\r\n" in text else "\n"
    # Bottom-up so earlier replacements do not shift later hunks' positions.
    for hunk in sorted(hunks, key=lambda h: h.old_start, reverse=True):
        at = _find_block(lines, hunk.old, hunk.old_start)
        if at is None:
            raise ZlibPatchError(f"hunk at line {hunk.old_start} does not apply")
        lines[at : at + len(hunk.old)] = list(hunk.new)
    trailing = newline if text.endswith(("\n", "\r")) else ""
    return newline.join(lines) + trailing


def find_protobuf_build(output_base: Path) -> Path:
    """Protobuf's BUILD file inside a Bazel output base's external repos."""
    repo = Path(output_base) / "external" / PROTOBUF_REPO
    for name in BUILD_FILE_NAMES:
        candidate = repo / name
        if candidate.is_file():
            return candidate
    raise ZlibPatchError(
        f"no protobuf BUILD file in {repo} (looked for {', '.join(BUILD_FILE_NAMES)}); "
        "has Bazel fetched @com_google_protobuf into this output base yet?"
    )


def _label(lines: tuple[str, ...]) -> str:
    """The first quoted label in a hunk's changed lines (``@zlib//:zlib``), else the first line."""
    for line in lines:
        match = re.search(r'"([^"]+)"', line)
        if match:
            return match.group(1)
    return lines[0].strip() if lines else "?"


def _change(hunks: list[Hunk]) -> tuple[str, str]:
    """(old label, new label) the patch makes, as its own lines say: the messages name what this
    patch file does, not what the kit's own patch does."""
    return (_label(tuple(line for h in hunks for line in h.removed)),
            _label(tuple(line for h in hunks for line in h.added)))


def _mismatch_message(build_file: Path, text: str, hunks: list[Hunk]) -> str:
    expected_old = " / ".join(repr(line) for h in hunks for line in h.removed)
    expected_new = " / ".join(repr(line) for h in hunks for line in h.added)
    found = [line.strip() for line in text.splitlines() if line.strip().startswith("ZLIB_DEPS")]
    seen = f"; its ZLIB_DEPS line is {found[0]!r}" if found else "; it has no ZLIB_DEPS line"
    return (
        f"{build_file}: refusing to patch: expected the unpatched line {expected_old} "
        f"or the patched line {expected_new} in its '# ZLIB configuration' block"
        f"{seen}. This protobuf differs from the one {PATCH_FILE.name} was made for."
    )


def _write_atomically(path: Path, text: str) -> None:
    # Keep the file's mode, and never leave a half-written BUILD behind.
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fix_build_file(build_file: Path, patch_file: Path = PATCH_FILE) -> PatchResult:
    """Apply the zlib patch to one BUILD file; a no-op if it is already fixed."""
    build_file = Path(build_file)
    hunks = load_patch(patch_file)
    try:
        # newline="": keep CRLF files CRLF.
        with build_file.open(encoding="utf-8", newline="") as handle:
            text = handle.read()
    except OSError as err:
        raise ZlibPatchError(f"{build_file}: cannot read: {err.strerror or err}") from err
    state = patch_state(text, hunks)
    old, new = _change(hunks)
    if state == "patched":
        message = f"{build_file}: already uses {new}; nothing to do"
        logger.info(message)
        return PatchResult(build_file, False, message)
    if state == "mismatch":
        raise ZlibPatchError(_mismatch_message(build_file, text, hunks))
    try:
        _write_atomically(build_file, apply_hunks(text, hunks))
    except OSError as err:
        raise ZlibPatchError(
            f"{build_file}: cannot write: {err.strerror or err} "
            "(files written by Bazel in a container may belong to another user)"
        ) from err
    message = f"{build_file}: patched {old} -> {new}"
    logger.info(message)
    return PatchResult(build_file, True, message)


def apply_zlib_fix(output_base: Path, patch_file: Path = PATCH_FILE) -> PatchResult:
    """Find protobuf's BUILD in ``output_base`` and apply the zlib patch to it."""
    return fix_build_file(find_protobuf_build(output_base), patch_file)


def is_zlib_error(build_output: str) -> bool:
    """Does Bazel's output show the unresolvable '@zlib' repository error?"""
    return bool(_ZLIB_ERROR.search(_ANSI_ESCAPE.sub("", build_output)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_base", type=Path, help="Bazel output base (bazel info output_base)")
    parser.add_argument("--patch-file", type=Path, default=PATCH_FILE)
    args = parser.parse_args(argv)
    try:
        result = apply_zlib_fix(args.output_base, args.patch_file)
    except ZlibPatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(result.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
