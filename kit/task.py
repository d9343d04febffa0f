"""What every task shares: Invoke's `@task`, with every option's type and default in `--help` and
bad values in one line, and the one way a task runs a command (`runner`) or shows it (`show`).

`from kit.task import task` replaces `from invoke import task`: the type and default of each option
are read from the task's signature (invoke's own Arguments carry both), so no help string states
them by hand. `--epochs=abc` is refused with one line naming the option, not a traceback.
"""
from __future__ import annotations

import io
import shlex
import sys
from typing import Any, Callable, Optional, Sequence, Union

import invoke
from invoke.exceptions import Exit, ParseError
from invoke.parser import Argument, ParserContext

from kit import output
from kit.errors import KitError

Command = Union[str, Sequence[str]]  # a shell line, or an argv list (quoted for the shell)


def _line(command: Command) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def show(command: Command) -> None:
    """Print a command as it is run (or, in a dry run, instead of running it)."""
    print(f"$ {_line(command)}", flush=True)


def runner(c: invoke.Context, verbose: bool = False, check: bool = True,
           hide: bool = False) -> Callable[[Command], invoke.Result]:
    """Print each command, run it through the task's Context (stdout shown and captured, stdin
    at EOF), and with `check` stop with one line (Exit) when it fails; without, the caller reads
    the result's exit code. TensorFlow's start-up noise is dropped from stderr unless `verbose`;
    with `hide` the output is only captured (the caller shows what matters of it)."""
    def run(command: Command) -> invoke.Result:
        line = _line(command)
        show(line)
        # (invoke shows a stream given as err_stream even when hidden)
        stderr = None if hide else sys.stderr if verbose else output.QuietLines(sys.stderr)
        try:
            # An empty in_stream: the child reads EOF at once (in_stream=False left its stdin pipe open).
            result = c.run(line, warn=True, pty=False, in_stream=io.StringIO(), env=output.child_env(verbose),
                           err_stream=stderr, hide=hide)
        finally:
            if stderr is not None and stderr is not sys.stderr:
                stderr.close()
        if check and result.exited != 0:
            raise Exit(f"command failed (exit {result.exited}): {line}")
        return result
    return run


_WORDS = {int: "an integer", float: "a number"}


class KitArgument(Argument):
    """An option whose bad value stops the parse with one line (invoke prints a ParseError, exit 1)."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError:
            raise ParseError(f"--{self.names[0]}: {value!r} is not {_WORDS.get(self.kind, 'valid')}") from None


def described(help_text: Optional[str], default: Any) -> str:
    """The help text, with the default appended unless it says its default in words already."""
    text = help_text or ""
    if "default" in text.lower() or default is None or default is False:
        return text
    shown = {True: "on", "": "none"}.get(default, default) if isinstance(default, (bool, str)) else default
    return f"{text} (default: {shown})".strip()


class KitTask(invoke.Task):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except KitError as exc:  # a user's mistake: one line, exit 1 (a bug keeps its traceback)
            raise Exit(str(exc)) from None

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> list[Argument]:
        # invoke consumes self.help while building arguments; keep it for the next parse.
        given = dict(self.help)
        try:
            arguments = super().get_arguments(ignore_unknown_help)
        finally:
            self.help = given
        return [KitArgument(names=a.names, kind=a.kind, default=a.default, help=described(a.help, a.default),
                            positional=a.positional, optional=a.optional, incrementable=a.incrementable,
                            attr_name=a.attr_name) for a in arguments]


def task(*args: Any, **kwargs: Any) -> Any:
    """`invoke.task` making a KitTask (bare `@task` and `@task(help=...)` alike)."""
    return invoke.task(*args, klass=KitTask, **kwargs)


_invoke_help_for = ParserContext.help_for


def _help_for(self: ParserContext, flag: str) -> tuple[str, str]:
    names, text = _invoke_help_for(self, flag)
    if isinstance(self.flags[flag], KitArgument) and self.flags[flag].kind is float:
        names = ", ".join(f"{n}=FLOAT" if n.startswith("--") else f"{n} FLOAT" for n in names.split(", "))
    return names, text


# invoke 3.0.3 shows STRING and INT placeholders only, so a float option looked like an on/off
# switch. Program builds its ParserContexts itself (and rebuilds the Collection tasks.py exports),
# so subclassing cannot reach this; the wrapper changes the kit's own options only.
ParserContext.help_for = _help_for
