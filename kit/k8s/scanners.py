"""The two security scanners the test suite runs, offline: checkov over rendered manifests and
zizmor over the CI workflows.

checkov (requirements-checkov.txt) lives in a venv of its own, build/tools/checkov-venv, which
`make test` creates: its pins clash with requirements.txt's. zizmor (requirements.txt) is a
single binary in .venv/bin. Both run with no network: checkov with --skip-download (it would
otherwise ask Prisma Cloud for check metadata), zizmor with --offline.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kit import paths
from kit.paths import ROOT, VENV_BIN

CHECKOV_VERSION = "3.3.30"
ZIZMOR_VERSION = "1.32.0"


def checkov_path() -> Optional[Path]:
    """The checkov `make test` installs, else one on PATH; None when there is none."""
    for candidate in (paths.build_dir() / "tools" / "checkov-venv" / "bin" / "checkov",
                      ROOT / "build" / "tools" / "checkov-venv" / "bin" / "checkov"):
        if candidate.exists():
            return candidate
    found = shutil.which("checkov")
    return Path(found) if found else None


def zizmor_path() -> Optional[Path]:
    exe = VENV_BIN / "zizmor"
    return exe if exe.exists() else (Path(shutil.which("zizmor")) if shutil.which("zizmor") else None)


@dataclass
class CheckovResult:
    passed: int
    failed: list[tuple[str, str, str]]  # (check id, check name, resource)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (check id, resource, reason)

    def summary(self) -> str:
        return f"{self.passed} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


def checkov(manifests: Path, exe: Optional[Path] = None) -> dict[str, CheckovResult]:
    """checkov's Kubernetes checks over the manifest files of a folder, in one run: file name ->
    its result."""
    exe = exe or checkov_path()
    if exe is None:
        raise FileNotFoundError("checkov is not installed (make test installs it into build/tools/checkov-venv)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    proc = subprocess.run([str(exe), "--directory", str(manifests), "--framework", "kubernetes", "--skip-download",
                           "--output", "json", "--compact"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"checkov exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    out = {p.name: CheckovResult(0, []) for p in sorted(manifests.glob("*.yaml"))}
    for one in report if isinstance(report, list) else [report]:
        results = one.get("results", {})
        for kind, checks in (("passed", results.get("passed_checks", [])), ("failed", results.get("failed_checks", [])),
                             ("skipped", results.get("skipped_checks", []))):
            for c in checks:
                result = out.setdefault(Path(c["file_path"]).name, CheckovResult(0, []))
                if kind == "passed":
                    result.passed += 1
                elif kind == "failed":
                    result.failed.append((c["check_id"], c["check_name"], c["resource"]))
                else:
                    result.skipped.append((c["check_id"], c["resource"],
                                           (c.get("check_result") or {}).get("suppress_comment", "")))
    return out


def zizmor(repo: Path, exe: Optional[Path] = None) -> tuple[int, str]:
    """zizmor --offline over a folder's .github/workflows: (number of findings, its report). A run
    that audited nothing (exit 1-3: no input, bad usage) is an error, not zero findings."""
    exe = exe or zizmor_path()
    if exe is None:
        raise FileNotFoundError("zizmor is not installed (requirements.txt pins it)")
    proc = subprocess.run([str(exe), "--offline", "--format", "json", str(repo)], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, "NO_COLOR": "1"})
    try:
        if 1 <= proc.returncode <= 3:
            raise json.JSONDecodeError("no audit", "", 0)
        findings = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"zizmor exited {proc.returncode}: {proc.stderr.strip()[-2000:]}") from None
    plain = subprocess.run([str(exe), "--offline", str(repo)], capture_output=True, text=True, timeout=120,
                           check=False, env={**os.environ, "NO_COLOR": "1"})
    return len(findings), plain.stdout + plain.stderr
