"""Every command the READMEs show is runnable as written (issue 24), checked as cheaply as it can
be, and for real.

The commands are read from the READMEs themselves, so one added there is checked with no change
here: every line of a ```shell block, every `$ ` line of a plain block (a transcript of what a
task prints), and every inline code span that starts with one of the kit's own entry points
(`make X`, `inv X`, `.venv/bin/...`, `python ...`, `tensorflow_model_server ...`; `a|b` in a span
means each of them). Placeholders (`<repo>`, `N`, `DIR`, ...) take a sample value (PLACEHOLDERS);
`...` abridges a command: the arguments shown are checked, not that none is missing.

* `make X VAR=...`: `make -n` knows the target, the Makefile uses each variable, and what make
  would run (`.venv/bin/inv ...`, `.venv/bin/python bench/...`) is checked in turn; `make help` runs.
* `inv`: invoke's own parser, over tasks.py's Collection, takes each task and each option with its
  type. A command with --help, --list or --dry-run runs in this process (in a build folder of stub
  model versions), and one of a task whose dry run needs no server, cluster or engine (DRY_RUN)
  runs with --dry-run added: the task's own checks of the values run too.
* `tensorflow_model_server` (ours, the Bazel-built one, KServe's): pyserving's flag parser takes
  every flag, and a whole command passes its start-up checks.
* `python`: the module or script exists; one of ours with an argparse parser runs, in one child
  process for all of them, until its parser has read the arguments (argparse stops it there);
  one without is imported; `-c` code compiles. The repo's code runs under `.venv/bin/python`.
* `curl`: pyserving's REST route table (TF Serving's /v1 grammar, or the Open Inference Protocol's
  /v2 routes) takes the URL's path with curl's method, an inline JSON body parses, and an
  `@file` body is written by an earlier line of the same block.
* a heredoc into a `.config` file parses with pyserving's model config reader.
* docker, kubectl, bazel, git and the shell's tools do not run here: EXTERNAL names each with its
  reason; their compose files, services, profiles and the image tags are checked.
* every path into the repository a command names exists (build/ and .venv/ outputs aside).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import pytest
import yaml
from invoke import Program
from invoke.exceptions import ParseError
from invoke.parser import Parser

import tasks
from kit.serve.docker import TF_SERVING_VERSION
from pyserving import cli
from pyserving.core import config as model_config
from pyserving.errors import ServingError
from pyserving.protocols import oip_rest, routes
from tests.helpers import ROOT, inv_exit_code

SHELL_BLOCKS = {"shell", "sh", "bash", "console"}
OWN_HEADS = ("make ", "inv ", ".venv/bin/", "python ", "python3 ", "tensorflow_model_server ")
PLACEHOLDERS = {"<repo>": str(ROOT), "$PWD": str(ROOT), "<git revision>": "HEAD", "<uid>:<gid>": "1000:1000",
                "<name>": "svm"}
WORDS = {"N": "2", "V": "1", "DIR": "/tmp/readme-dir"}  # a whole word, or an option's value
# Tasks whose --dry-run only prints (no server, cluster or Docker engine asked; a stub build does).
# deploy's dry run renders and validates for real, 2-4 s each: tests/kit/k8s covers it.
DRY_RUN = {"train-svm", "train-mnist", "serve", "reproduce", "image", "build-server"}
# Programs that cannot run here, each with the reason; their paths, files and tags are checked.
EXTERNAL = {
    "docker": "needs a Docker engine (none here); compose files, services, profiles and tags are checked",
    "kubectl": "needs a cluster; `inv deploy` (tests/kit/k8s) runs the venv's kubectl offline",
    "bazel": "Debian's bazel-bootstrap, used by `inv zlib-repro` (tests/kit/images run it for real)",
    "git": "clones TF Serving over the network (`inv build-server`)",
    "grpcurl": "a third-party gRPC CLI, not installed by the kit",
    "patch": "GNU patch on Bazel's fetched protobuf, which exists only after a build-server run",
    "apt-get": "installs system packages as root",
    "cat": "the shell's own tool", "head": "the shell's own tool", "mkdir": "the shell's own tool",
    "cp": "the shell's own tool", "readlink": "the shell's own tool", "rm": "the shell's own tool",
}
READER_FILES = {"grpc_call.py": "the README's ```python block, saved by the reader"}
FENCE = re.compile(r"^\s*```([\w-]*)\s*$")
OPERATORS = {";", "&&", "||", "|", "&", "(", ")"}
REDIRECTS = {">", ">>", "<"}
DOCKER_RUN_VALUES = {"-p", "--publish", "-v", "--volume", "-e", "--env", "--name", "-w", "--workdir", "-u", "--user",
                     "--mount", "--network", "--entrypoint"}
PYTHON = re.compile(r"python(3(\.\d+)?)?|kit-python")
OWN_PROGRAMS = {"make": "make", "inv": "inv", "tensorflow_model_server": "model_server", "pyserving": "model_server",
                "curl": "curl"}


@dataclass(frozen=True)
class Command:
    where: str                    # README.md:125
    argv: tuple[str, ...]
    block: str = ""               # the fenced block it is in (README.md:123), "" inline
    partial: bool = False         # abridged with `...`
    writes: tuple[str, ...] = ()  # files its `>` redirections write
    stdin: str = ""               # its heredoc's body
    env: tuple[str, ...] = ()     # NAME=value words before the program

    @property
    def readme(self) -> str:
        return self.where.split(":")[0]

    @property
    def line(self) -> int:
        return int(re.search(r":(\d+)", self.where).group(1))

    def __str__(self) -> str:
        return f"{self.where} `{shlex.join(self.argv)}{' ...' if self.partial else ''}`"


# ---- extraction ---------------------------------------------------------------------------------
def readmes(root: Path = ROOT) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("build", "mutants", "node_modules"))
        found += [Path(folder) / "README.md"] if "README.md" in files else []
    return found


def extract(readme: Path, root: Path = ROOT) -> list[Command]:
    """The commands a README shows, in order."""
    name = readme.relative_to(root).as_posix()
    lines = readme.read_text(encoding="utf-8").splitlines()
    commands: list[Command] = []
    prose: list[str] = []  # the text outside fenced blocks, line for line
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            prose.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        if fence.group(1) in SHELL_BLOCKS or not fence.group(1):
            commands += block_commands(name, i + 2, lines[i + 1:end], transcript=not fence.group(1))
        prose += [""] * (end + 1 - i)
        i = end + 1
    text = "\n".join(prose)
    for span in re.finditer(r"(?<!`)`((?:[^`\n]|\n(?!\s*\n))+)`(?!`)", text):  # a span ends its paragraph
        words = " ".join(span.group(1).replace("\\|", "|").split())
        if words.startswith(OWN_HEADS) and " " in words:  # a program's bare name is a mention
            where = f"{name}:{text.count(chr(10), 0, span.start()) + 1}"
            for alternative in alternatives(words):
                commands += simple_commands(where, alternative)
    return commands


def alternatives(words: str) -> list[str]:
    """`inv canary|promote|rollback --target=k8s` -> one command per alternative."""
    choice = re.search(r"[\w.-]+(?:\|[\w.-]+)+", words)
    if not choice:
        return [words]
    return [alt for option in choice.group(0).split("|")
            for alt in alternatives(words[:choice.start()] + option + words[choice.end():])]


def block_commands(name: str, first: int, body: list[str], transcript: bool) -> list[Command]:
    """A shell block's commands (continuations joined, heredocs read); a transcript's `$ ` lines."""
    commands: list[Command] = []
    k = 0
    while k < len(body):
        start, line = k, body[k]
        k += 1
        if transcript and not line.startswith("$ "):
            continue
        line = line[2:] if transcript else line
        while line.endswith("\\") and k < len(body):
            line, k = line[:-1] + " " + body[k].strip(), k + 1
        stdin = ""
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            end = next((j for j in range(k, len(body)) if body[j].strip() == heredoc.group(1)), len(body))
            stdin, k = "\n".join(body[k:end]) + "\n", end + 1
            line = line[:heredoc.start()] + line[heredoc.end():]
        commands += simple_commands(f"{name}:{first + start}", line, block=f"{name}:{first - 1}", stdin=stdin)
    return commands


def simple_commands(where: str, line: str, block: str = "", stdin: str = "") -> list[Command]:
    """One shell line -> its simple commands (split at ; && || | &), redirections and comments off."""
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[Command] = []
    words: list[str] = []
    writes: list[str] = []
    tokens = iter(list(lexer) + [";"])
    for token in tokens:
        if token in REDIRECTS:
            target = next(tokens)
            writes += [target] if token != "<" else []
        elif token not in OPERATORS:
            words.append(token)
        else:
            env = []
            while words and re.match(r"[A-Za-z_]\w*=", words[0]):
                env.append(words.pop(0))
            partial = "..." in words
            argv = [substitute(w) for w in (words[:words.index("...")] if partial else words)]
            if argv:
                commands.append(Command(where, tuple(argv), block, partial, tuple(writes), stdin, tuple(env)))
            words, writes = [], []
    return commands


def substitute(word: str) -> str:
    if word in WORDS:
        return WORDS[word]
    option, sep, value = word.partition("=")
    return f"{option}={WORDS[value]}" if sep and option.startswith("-") and value in WORDS else word


def unique(commands: Iterable[Command]) -> list[Command]:
    """The first of commands the same README shows alike."""
    seen: set = set()
    return [c for c in commands if (key := (c.readme, c.argv, c.partial, c.stdin)) not in seen and not seen.add(key)]


# ---- what runs where ------------------------------------------------------------------------------
def kind(command: Command) -> str:
    """Which check a command gets: by its program's name."""
    program = command.argv[0]
    base = os.path.basename(program)
    if base in OWN_PROGRAMS:
        return OWN_PROGRAMS[base]
    if PYTHON.fullmatch(base):
        return "python"
    if base in EXTERNAL:
        return "external"
    return "built" if program.startswith(("build/", f"{ROOT}/build/")) else "unknown"


@lru_cache(maxsize=None)
def make_dry_run(args: tuple[str, ...]) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


def expand(command: Command) -> list[Command]:
    """The command, and for `make` the kit's own commands `make -n` says it would run."""
    if kind(command) != "make":
        return [command]
    code, out = make_dry_run(command.argv[1:])
    lines = out.replace("\\\n", " ").splitlines() if code == 0 else []
    made = [c for line in lines for c in simple_commands(f"{command.where} (make -n)", line)]
    return [command, *(replace(c, block=command.block) for c in made
                       if kind(c) in ("inv", "model_server") or (kind(c) == "python" and runs_ours(c)))]


def runs_ours(command: Command) -> bool:
    args = command.argv[1:]
    if not args or args[0] == "-c":
        return False
    if args[0] == "-m":
        return len(args) > 1 and (ROOT / args[1].split(".")[0]).is_dir()
    return not args[0].startswith("-")


# ---- python: one child process parses every command's arguments ------------------------------------
DRIVER = r'''
import argparse, importlib, importlib.util, json, os, runpy, sys
class Parsed(Exception): pass
class Refused(Exception): pass
parse_args = argparse.ArgumentParser.parse_args
def stop_once_parsed(self, args=None, namespace=None):
    parse_args(self, args, namespace)
    raise Parsed
def refuse(self, message):
    raise Refused(message)
argparse.ArgumentParser.parse_args = stop_once_parsed
argparse.ArgumentParser.error = refuse
root, calls, out = os.getcwd(), sys.argv[1], sys.argv[2]
def verdict(args, partial):
    if args[0] == "-c":
        compile(args[1], "<-c>", "exec")
        return ""
    if args[0] == "-m":
        spec = importlib.util.find_spec(args[1])
        if spec is None:
            return f"no module named {args[1]}"
        path, rest = spec.origin, args[2:]
    else:
        path, rest = os.path.abspath(args[0]), args[1:]
        if not os.path.isfile(path):
            return f"no such script: {args[0]}"
    if not path or not path.startswith(root + os.sep) or os.sep + ".venv" + os.sep in path:
        return ""  # a third-party module: it is there
    if ".parse_args(" not in open(path, encoding="utf-8").read():
        if args[0] == "-m":
            importlib.import_module(args[1])
        return ""
    sys.argv = [path, *rest]
    try:
        if args[0] == "-m":
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(path))
            runpy.run_path(path, run_name="__main__")
    except Parsed:
        return ""
    except Refused as exc:
        if partial and "the following arguments are required" in str(exc):
            return ""
        return f"its argument parser refuses the arguments: {exc}"
    except SystemExit as exc:
        return "" if exc.code in (0, None) else f"exited {exc.code} before its parser read the arguments"
    return "ran to its end without parsing its arguments"
verdicts = []
for args, partial in json.load(open(calls)):
    try:
        verdicts.append(verdict(args, partial))
    except BaseException as exc:
        verdicts.append(f"{type(exc).__name__}: {exc}")
json.dump(verdicts, open(out, "w"))
'''


class PythonVerdicts:
    """(python args, partial) -> "" when the module or script takes them, else why not: judged in
    one child process (TensorFlow's import is its cost), started at once and waited for when read."""

    def __init__(self, commands: Iterable[Command], work: Path):
        self.calls = sorted({(c.argv[1:], c.partial) for command in commands for c in expand(command)
                             if kind(c) == "python" and c.argv[1:] and c.argv[1:][0] not in READER_FILES})
        self.out, self.log = work / "verdicts.json", work / "driver.log"
        (work / "calls.json").write_text(json.dumps(self.calls))
        env = {**os.environ, "KIT_BUILD_DIR": str(work / "build"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-c", DRIVER, str(work / "calls.json"), str(self.out)],
                                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.verdicts: dict | None = None

    def __getitem__(self, call: tuple) -> str:
        if self.verdicts is None:
            code = self.process.wait(timeout=240)
            assert code == 0, self.log.read_text()[-3000:]
            self.verdicts = dict(zip(self.calls, json.loads(self.out.read_text())))
        return self.verdicts[call]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # by its own handle: the child this object started
            self.process.wait()


# ---- the checks ---------------------------------------------------------------------------------------
@dataclass
class Checks:
    commands: list[Command]  # the README's, for files written by an earlier line
    verdicts: PythonVerdicts
    used: Counter = field(default_factory=Counter)  # check -> how many commands it ran on

    def problems(self, command: Command) -> list[str]:
        found = []
        for c in expand(command):
            check = getattr(self, kind(c))
            found += [f"{c}: {p}" for p in [*check(c), *self.paths(c), *self.heredoc(c), *self.tags(c)]]
        return found

    def paths(self, c: Command) -> list[str]:
        self.used["repo paths exist"] += 1
        missing = [c.argv[0]] if c.argv[0].startswith(".venv/bin/") and not (ROOT / c.argv[0]).exists() else []
        script = c.argv[1:2] if kind(c) == "python" else ()  # the child process says whether it is there
        for token in c.argv:
            if token in script:
                continue
            for word in re.split(r"[=@:,\s]", token):
                rel = word[len(str(ROOT)) + 1:] if word.startswith(f"{ROOT}/") else word
                top = rel.split("/")[0]
                if "/" in rel and top and not top.startswith(".") and top != "build" and (ROOT / top).exists():
                    missing += [] if (ROOT / rel).exists() or rel in READER_FILES else [rel]
        return [f"no such file in the repository: {m}" for m in missing]

    def heredoc(self, c: Command) -> list[str]:
        if not (c.stdin and any(w.endswith(".config") for w in c.writes)):
            return []
        self.used["heredoc: pyserving's model config reader"] += 1
        try:
            model_config.models_from_text(c.stdin, c.writes[0])
        except ServingError as exc:
            return [f"its models.config does not parse: {exc}"]
        return []

    def tags(self, c: Command) -> list[str]:
        found = []
        for token in c.argv:
            if m := re.search(r"(?:^|=)tensorflow/serving:(\d+\.\d+\.\d+)", token):
                self.used["image tags"] += 1
                found += [] if m.group(1) == TF_SERVING_VERSION else [f"TF Serving {m.group(1)}, the kit pins "
                                                                      f"{TF_SERVING_VERSION}"]
            if m := re.fullmatch(r"kit-pyserving:(.+)", token):
                self.used["image tags"] += 1
                version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
                found += [] if m.group(1) == version else [f"kit-pyserving:{m.group(1)}, the image is tagged {version}"]
        return found

    def make(self, c: Command) -> list[str]:
        self.used["make -n"] += 1
        makefile = (ROOT / "Makefile").read_text()
        variables = [word.partition("=")[0] for word in c.argv[1:] if "=" in word]
        found = [f"the Makefile uses no variable {name}" for name in variables
                 if not re.search(rf"\$\({name}\)|^{name}\s*[?:]?=", makefile, re.M)]
        code, out = make_dry_run(c.argv[1:])
        if code != 0:
            return found + [f"make -n exits {code}: {out.strip().splitlines()[-1]}"]
        if c.argv[1:] == ("help",):
            self.used["run: make help"] += 1
            done = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
            found += [] if done.returncode == 0 and "make reproduce" in done.stdout else [f"make help: {done.stderr}"]
        return found

    def inv(self, c: Command) -> list[str]:
        self.used["invoke's parser"] += 1
        argv = list(c.argv[1:])
        program = Program(namespace=tasks.ns, binary="inv", version="test")
        try:
            parsed = Parser(initial=program.initial_context, contexts=tasks.ns.to_contexts()).parse_argv(argv)
        except ParseError as exc:
            return [f"inv refuses it: {exc}"]
        named = [context.name for context in parsed[1:]]
        if {"--help", "-h", "--list", "-l", "--dry-run"} & set(argv):
            self.used["run in-process: as written"] += 1
        elif len(named) == 1 and named[0] in DRY_RUN and not c.partial:
            self.used["run in-process: with --dry-run"] += 1
            argv.append("--dry-run")
        else:
            return []
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = inv_exit_code(*argv)
        return [] if code == 0 else [f"`inv {shlex.join(argv)}` exits {code}: {out.getvalue().strip()[-300:]}"]

    def model_server(self, c: Command, complete: bool = True) -> list[str]:
        """complete: the command line is the whole of the server's configuration (a container
        image adds its own, MODEL_NAME and MODEL_BASE_PATH)."""
        self.used["pyserving's flag parser"] += 1
        try:
            settings, _ = cli.parse(c.argv[1:])
        except cli.UsageError as exc:
            return [str(exc)]
        return cli.validate(settings) if complete and not c.partial else []

    def python(self, c: Command) -> list[str]:
        args = c.argv[1:]
        if not args:
            return []
        if args[0] in READER_FILES:
            self.used["python: the README's python blocks compile"] += 1
            blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / c.readme).read_text(encoding="utf-8"), re.M | re.S)
            try:
                for block in blocks:
                    compile(block, c.readme, "exec")
            except SyntaxError as exc:
                return [f"{args[0]}: the README's python block does not compile: {exc}"]
            return [] if blocks else [f"{args[0]}: {READER_FILES[args[0]]} is missing"]
        self.used["python: -c compiles" if args[0] == "-c" else "python: module or script, its argparse"] += 1
        found = [self.verdicts[(args, c.partial)]] if self.verdicts[(args, c.partial)] else []
        if runs_ours(c) and not c.argv[0].startswith((".venv/bin/", "kit-python")):
            found.append(f"runs the repo's code with `{c.argv[0]}`: write `.venv/bin/python` (the venv make creates)")
        return found

    def curl(self, c: Command) -> list[str]:
        self.used["curl: pyserving's REST routes"] += 1
        method, body, urls, args = None, None, [], iter(c.argv[1:])
        for arg in args:
            if arg in ("-d", "--data", "--data-raw", "--data-binary"):
                body = next(args)
            elif arg in ("-X", "--request"):
                method = next(args)
            elif arg in ("-H", "--header", "-o", "--output"):
                next(args)
            elif not arg.startswith("-"):
                urls.append(arg)
        method = method or ("GET" if body is None else "POST")
        found = []
        for url in urls:
            path = urlsplit(url if "://" in url else f"http://{url}").path
            if oip_rest.V2_RE.fullmatch(path):  # the Open Inference Protocol's routes
                if not any(verb == method and re.fullmatch(pattern, path) for verb, pattern, _h, _a in oip_rest.ROUTES):
                    found.append(f"pyserving's Open Inference Protocol API does not take {method} {path}")
                continue
            try:
                routes.parse_path(method, path)
            except ServingError as exc:
                found.append(f"pyserving's REST API does not take {method} {path}: {exc}")
        if body and body.startswith("@"):
            written = {w for other in self.commands if other.block == c.block and other.line < c.line
                       for w in other.writes}
            found += [] if body[1:] in written or (ROOT / body[1:]).is_file() else [f"nothing writes {body[1:]}"]
        elif body is not None:
            self.used["curl: the JSON body parses"] += 1
            try:
                json.loads(body)
            except ValueError as exc:
                found.append(f"its JSON body does not parse: {exc}")
        return found

    def external(self, c: Command) -> list[str]:
        self.used["external (allow-listed)"] += 1
        if c.argv[:2] == ("docker", "run"):
            return self.docker_run(c)
        if c.argv[:2] != ("docker", "compose"):
            return []
        self.used["docker compose: file, services, profiles"] += 1
        files, profiles, rest, args = [], [], [], iter(c.argv[2:])
        for arg in args:
            if arg in ("-f", "--file"):
                files.append(next(args))
            elif arg == "--profile":
                profiles.append(next(args))
            else:
                rest.append(arg)  # the subcommand, its options and the services it names
        found = []
        for name in files:
            text = (ROOT / name).read_text()
            services = yaml.safe_load(text)["services"]
            known = {p for service in services.values() for p in service.get("profiles", [])}
            found += [f"{name} has no profile {p}" for p in profiles if p not in known]
            found += [f"{name} has no service {s}" for s in rest[1:] if not s.startswith("-") and s not in services]
            found += [f"{name} does not read ${v}" for v, _, _ in (e.partition("=") for e in c.env)
                      if f"${{{v}" not in text]
        return found

    def docker_run(self, c: Command) -> list[str]:
        """The flags after a serving image (the official one, or ours with its contract) are
        tensorflow_model_server's."""
        args = iter(c.argv[2:])
        for arg in args:
            if arg in DOCKER_RUN_VALUES:
                next(args)
            elif not arg.startswith("-"):
                if re.fullmatch(r"tensorflow/serving:\d[\w.]*|kit-pyserving:.+", arg):
                    return self.model_server(replace(c, argv=("tensorflow_model_server", *args)), complete=False)
                return []
        return []

    def built(self, c: Command) -> list[str]:
        self.used["a program the kit builds under build/"] += 1
        return []

    def unknown(self, c: Command) -> list[str]:
        return [f"no check knows `{c.argv[0]}`: add one, or name it in EXTERNAL with the reason it cannot run here"]


# ---- the tests --------------------------------------------------------------------------------------
COMMANDS = [c for readme in readmes() for c in extract(readme)]
# python and make (which may run python) last: the child judging python commands works meanwhile.
UNIQUE = sorted(unique(COMMANDS), key=lambda c: kind(c) in ("python", "make"))


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> Iterator[PythonVerdicts]:
    judge = PythonVerdicts(UNIQUE, tmp_path_factory.mktemp("readme-python"))
    yield judge
    judge.stop()


@pytest.fixture
def stub_build(tmp_path, monkeypatch) -> Path:
    """The kit's build folder with a version of each model (a folder the dry runs look for)."""
    build = tmp_path / "build"
    monkeypatch.setenv("KIT_BUILD_DIR", str(build))
    for model in ("svm", "mnist"):
        (build / "models" / model / "1" / "variables").mkdir(parents=True)
        (build / "models" / model / "1" / "saved_model.pb").write_bytes(b"stub")
    return build


@pytest.mark.usefixtures("stub_build")
@pytest.mark.parametrize("command", UNIQUE, ids=lambda c: f"{c.where} {shlex.join(c.argv)[:60]}")
def test_the_command_runs_as_written(command, verdicts):
    assert Checks(COMMANDS, verdicts).problems(command) == []


def test_the_readmes_show_the_headline_commands_and_every_kind():
    shown = {(c.readme, shlex.join(c.argv)) for c in COMMANDS}
    assert {("README.md", "make reproduce"), ("README.md", "make test")} <= shown
    assert {c.readme for c in COMMANDS} >= {"README.md", "docker/README.md", "patches/README.md"}
    assert {kind(c) for c in COMMANDS} >= {"make", "inv", "model_server", "python", "curl", "external"}


BROKEN = """# A README gone stale

```shell
make reproduce
make no-such-target
make reproduce BAKEND=docker
.venv/bin/inv serve --no-such-option
.venv/bin/inv serve --backend=podman
.venv/bin/tensorflow_model_server --port=8500 --no_such_flag=1
.venv/bin/tensorflow_model_server --port=8500
curl -d '{"instances": [1.0' localhost:8501/v1/models/m:predict
curl localhost:8501/v1/models/m:predicts
curl -d @/tmp/nothing.json localhost:8501/v1/models/m:predict
curl localhost:8501/v2/models/m/infer
.venv/bin/python client/no_such_client.py
.venv/bin/python -m models.svm.corpus --out /tmp/x.csv --no_such_option
.venv/bin/python -m kit.no_such_module
docker compose -f docker/compose.yaml --profile nope up
docker run --rm -p 8501:8501 tensorflow/serving:2.21.0 --model_name=m --no_such_flag
frobnicate --now
```

Train with `inv train-svm|train-mnist --epochs=5` after `python -m models.svm.corpus --out /tmp/x.csv`,
and never `.venv/bin/inv publish --source=models/no/such`; `.venv/bin/inv --list` lists the tasks.
"""
# each command the extractor finds in BROKEN -> a part of its one problem ("" for none)
STALE = {
    "make reproduce": "",
    "make no-such-target": "make -n exits 2: make: *** No rule to make target 'no-such-target'",
    "make reproduce BAKEND=docker": "the Makefile uses no variable BAKEND",
    ".venv/bin/inv serve --no-such-option": "inv refuses it: No idea what '--no-such-option' is!",
    ".venv/bin/inv serve --backend=podman": "`inv serve --backend=podman --dry-run` exits 1: unknown backend 'podman'",
    ".venv/bin/tensorflow_model_server --port=8500 --no_such_flag=1": "unknown flag: --no_such_flag",
    ".venv/bin/tensorflow_model_server --port=8500": "Both server_options.model_base_path and server_options.model_con",
    "curl -d '{\"instances\": [1.0' localhost:8501/v1/models/m:predict": "its JSON body does not parse",
    "curl localhost:8501/v1/models/m:predicts": "REST API does not take GET /v1/models/m:predicts: Malformed request",
    "curl -d @/tmp/nothing.json localhost:8501/v1/models/m:predict": "nothing writes /tmp/nothing.json",
    "curl localhost:8501/v2/models/m/infer": "Open Inference Protocol API does not take GET /v2/models/m/infer",
    ".venv/bin/python client/no_such_client.py": "no such script: client/no_such_client.py",
    ".venv/bin/python -m models.svm.corpus --out /tmp/x.csv --no_such_option":
        "its argument parser refuses the arguments: unrecognized arguments: --no_such_option",
    ".venv/bin/python -m kit.no_such_module": "no module named kit.no_such_module",
    "docker compose -f docker/compose.yaml --profile nope up": "docker/compose.yaml has no profile nope",
    "docker run --rm -p 8501:8501 tensorflow/serving:2.21.0 --model_name=m --no_such_flag": "unknown flag: --no_such_f",
    "frobnicate --now": "no check knows `frobnicate`",
    "inv train-svm --epochs=5": "",
    "inv train-mnist --epochs=5": "inv refuses it: No idea what '--epochs' is!",
    "python -m models.svm.corpus --out /tmp/x.csv": "runs the repo's code with `python`: write `.venv/bin/python`",
    ".venv/bin/inv publish --source=models/no/such": "no such file in the repository: models/no/such",
    ".venv/bin/inv --list": "",
}


@pytest.mark.usefixtures("stub_build")
def test_a_stale_readme_is_reported_line_by_line(tmp_path):
    """Each broken line of a README in tmp_path is named with what is wrong, and only those."""
    (tmp_path / "README.md").write_text(BROKEN)
    commands = extract(tmp_path / "README.md", tmp_path)
    judge = PythonVerdicts(commands, tmp_path)
    try:
        checks = Checks(commands, judge)
        problems = {shlex.join(c.argv): checks.problems(c) for c in commands}
    finally:
        judge.stop()
    assert list(problems) == list(STALE)
    for command, problem in STALE.items():
        found = problems[command]
        assert (len(found) == 1 and problem in found[0]) if problem else found == [], (command, found)
