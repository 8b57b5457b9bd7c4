"""`lkps dev agent add|list`: a team's own agents in dev mode, each an application of the embedded issuer.

An agent added here registers itself like any agent (`lkps agent run --dev --agent NAME`, its own
client-credentials token); the running issuer reads the new application from the state at its first token.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from authz.dev_issuer import DevState
from lkps.commands import CommandError, ExitCode
from lkps.dev_state import DevStateError, read_identity


def add_agent(directory: Path, name: str) -> int:
    """Print the agent's app id (stdout, for `AGENT=$(...)`), and on stderr how to run its worker."""
    try:
        agent = DevState(directory).add_agent(name)
    except DevStateError as error:
        raise CommandError(ExitCode.USAGE, error.message) from None
    print(agent.client_id)  # noqa: T201 - the app id is the output
    state = shlex.quote(str(directory))
    print(  # noqa: T201
        f"lkps: agent {name} ({agent.client_id}); run its worker with:\n"
        f"  lkps agent run --dev --state-dir {state} --agent {name} -- python agent.py start",
        file=sys.stderr,
    )
    return ExitCode.OK


def list_agents(directory: Path) -> int:
    """One line per agent: its name and app id (the demo agent as `demo`)."""
    try:
        agents = read_identity(directory).agents()
    except DevStateError as error:
        raise CommandError(ExitCode.DEV_STATE, error.message) from None
    for name, agent in agents.items():
        print(f"{name}\t{agent.client_id}")  # noqa: T201
    return ExitCode.OK
