"""Where a rollout step goes: the Target protocol, and the local target (the replicas `inv serve`
started). Other targets (kit/k8s/target.py) implement the same protocol and are registered in
kit/targets.py; the generic rollout (updates.py, plan.py) never imports one of them."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

from invoke.exceptions import Exit

from kit.serve import server as serving

Say = Callable[[str], None]


class Target(Protocol):
    name: str  # as a step's line names it: "local", "k8s namespace prod"
    timeout: float  # how long a step waits for every replica to agree
    dry_run: bool  # show each step's commands and config, change nothing

    def replicas(self) -> ContextManager[list[str]]:
        """Every replica's REST base URL, reachable while the context is open."""

    def config_written(self) -> None:
        """Run after each write of build/models/models.config (and after a restore)."""

    def offline(self) -> bool:
        """True when no replica runs: a step then only writes the config, which they read at start."""

    def show_start(self, say: Say) -> None:
        """Dry run: what the step does first to find its replicas."""

    def show_config(self, config_file: Path, say: Say) -> None:
        """Dry run: how one step's config file reaches the replicas."""


class Local:
    """The replicas `inv serve` started on this machine: they poll build/models/models.config."""

    name = "local"
    timeout = 60.0
    dry_run = False

    @contextlib.contextmanager
    def replicas(self) -> Iterator[list[str]]:
        state = serving.running()
        if state is None:
            raise Exit(serving.NO_SERVER)
        yield serving.rest_urls(state)

    def config_written(self) -> None:
        """Nothing to do: each replica polls the file every second."""

    def offline(self) -> bool:
        return serving.running() is None

    def show_start(self, say: Say) -> None:
        raise NotImplementedError  # create() refuses a local dry run

    def show_config(self, config_file: Path, say: Say) -> None:
        raise NotImplementedError


LOCAL = Local()


def create(namespace: str = "", dry_run: bool = False, say: Say = print) -> Target:
    if dry_run:
        raise Exit("--dry-run goes with --target=k8s (a local step is shown by inv versions)")
    return LOCAL
