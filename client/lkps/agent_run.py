"""`lkps agent run -- COMMAND...`: an unmodified LiveKit Agents worker, with only the agent's Entra credential.

Registers the agent, starts COMMAND with the worker settings in its environment (`worker_environment()`;
the agent's own `LKPS_CLIENT_*` settings are not passed on), renews the registration in the background
before every expiry without restarting the worker, forwards signals, and exits with the worker's status.
Every expected failure is one line on stderr and an exit status of its own (`EXIT_STATUSES`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from lkps.errors import (
    ConnectionFailed,
    CredentialError,
    Forbidden,
    LkpsError,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)

if TYPE_CHECKING:  # the client (httpx, MSAL) loads with the provider; `lkps --help` needs only this table
    from lkps.worker_settings import WorkerSettingsProvider

Say = Callable[[str], None]

EXIT_NOT_CONFIGURED = 2
EXIT_UNEXPECTED = 76  # lkps answered something else (an invalid request, an unexpected body)
EXIT_REFUSED = 77  # 403: also the status after a refused renewal stopped the worker
# Checked in order (subclasses of LkpsError): exit status, what happened, what to do. The worker's own
# status is passed through unchanged.
EXIT_STATUSES: tuple[tuple[type[LkpsError], int, str, str], ...] = (
    (
        CredentialError,
        67,
        "Entra gave no token for the agent",
        "check LKPS_CLIENT_ID and its secret or certificate",
    ),
    (ConnectionFailed, 69, "lkps could not be reached", "check LKPS_CLIENT_URL and the network"),
    (
        Unauthorized,
        78,
        "lkps refused the agent's Entra token (401)",
        "check LKPS_CLIENT_SCOPE and LKPS_CLIENT_TENANT_ID",
    ),
    (Forbidden, EXIT_REFUSED, "lkps refused the agent (403)", "ask the lkps operators"),
    (RateLimited, 75, "lkps is rate limiting", "try again later"),
    (ServiceUnavailable, 75, "lkps is unavailable", "try again later"),
)
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126


def _exit_help() -> str:
    """The exit statuses in order, one line each (statuses shared by several failures on one line)."""
    meanings: dict[int, list[str]] = {
        EXIT_NOT_CONFIGURED: ["not configured, or no COMMAND"],
        EXIT_UNEXPECTED: ["lkps gave an unexpected answer"],
        EXIT_COMMAND_NOT_EXECUTABLE: ["COMMAND cannot be run"],
        EXIT_COMMAND_NOT_FOUND: ["COMMAND is not found"],
    }
    for _, status, what, _ in EXIT_STATUSES:
        meanings.setdefault(status, []).append(what)
    return "\n".join(
        [
            "exit status: the worker's own (128+N if signal N ended it), or",
            *(f"  {status:>3}  {' / '.join(meanings[status])}" for status in sorted(meanings)),
            f"A renewal refused with 403 (e.g. agent_revoked) stops the worker (SIGTERM), then exits {EXIT_REFUSED}.",
            "`python` in COMMAND is the one of the virtualenv lkps runs from, as if it were activated.",
            "A stock worker in `start` mode serves its health check on port 8081: give each agent on one",
            "machine its own (AgentServer(port=...), or port=0 for any free one).",
        ]
    )


EXIT_HELP = _exit_help()

# Signals a supervisor sends to stop or poke the worker: all are passed on to it.
FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# A terminal sends these to its whole foreground process group, the worker included: passing them on as
# well would be a second signal, which a LiveKit Agents worker takes as "exit now, skip the drain".
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT})


def failure(error: LkpsError) -> tuple[int, str]:
    """The exit status and the one line for a failed registration."""
    for cls, status, what, hint in EXIT_STATUSES:
        if isinstance(error, cls):
            return status, f"{what}: {error}; {hint}"
    return EXIT_UNEXPECTED, f"lkps gave an unexpected answer: {error}; check LKPS_CLIENT_URL points at lkps"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between failed renewals: doubling from `first_seconds` up to `max_seconds`, jittered, and never
    shorter than lkps's Retry-After."""

    first_seconds: float = 1.0
    max_seconds: float = 60.0

    def delay(self, failures: int, retry_after: float | None) -> float:
        base = min(self.max_seconds, self.first_seconds * 2.0 ** (failures - 1))
        return max(retry_after or 0.0, base * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy


def this_virtualenv() -> Path | None:
    """The scripts directory of the virtualenv this interpreter runs in, or None outside one."""
    return Path(sys.executable).parent if sys.prefix != sys.base_prefix else None


def worker_path(path: str, virtualenv: Path | None) -> str:
    """PATH for the worker: `virtualenv`'s scripts first, as activating it would, so the `python` of
    `lkps agent run -- python agent.py start` is the interpreter that has lkps-client[agents] installed
    (not whichever `python` the shell would find)."""
    if virtualenv is None:
        return path
    entries = [entry for entry in path.split(os.pathsep) if entry and entry != str(virtualenv)]
    return os.pathsep.join([str(virtualenv), *entries])


def run_agent(
    provider: WorkerSettingsProvider,
    command: Sequence[str],
    *,
    environ: Mapping[str, str],
    say: Say,
    backoff: Backoff | None = None,
    virtualenv: Path | None = None,
) -> int:
    """Register, run `command` as the worker until it exits, renewing meanwhile; returns the exit status.
    `virtualenv` (a scripts directory) comes first on the worker's PATH (see `worker_path`)."""
    try:
        registration = provider.renew()
    except LkpsError as error:
        status, line = failure(error)
        say(line)
        return status
    # The worker gets its worker settings and nothing of the agent's Entra credential.
    env = {name: value for name, value in environ.items() if not name.startswith("LKPS_CLIENT_")}
    from lkps.worker_settings import worker_environment  # noqa: PLC0415 - see the imports

    env.update(worker_environment(registration))
    env["PATH"] = worker_path(env.get("PATH", os.defpath), virtualenv)
    program = shutil.which(command[0], path=env["PATH"]) or command[0]
    deployment = env.get("LIVEKIT_AGENT_DEPLOYMENT") or "none: LiveKit's default"
    say(
        f"registered agent {registration.agent_name} (registration {registration.registration_id}, "
        f"expires {_utc(registration.expires_at)}); starting the worker (deployment {deployment}): "
        f"{' '.join([program, *command[1:]])}"
    )
    with _forwarding_signals() as forward_to:
        try:
            process = subprocess.Popen(list(command), env=env)  # noqa: S603 - running it is the command's purpose
        except FileNotFoundError:
            say(f"the worker command was not found: {command[0]}")
            return EXIT_COMMAND_NOT_FOUND
        except PermissionError:
            say(f"the worker command is not executable: {command[0]}")
            return EXIT_COMMAND_NOT_EXECUTABLE
        forward_to(process)
        renewal = _Renewal(provider, process, say, backoff or Backoff())
        renewal.start()
        try:
            returncode = process.wait()
        finally:
            renewal.stop()
    if renewal.refused is not None:
        return failure(renewal.refused)[0]
    return 128 - returncode if returncode < 0 else returncode


class _Renewal(threading.Thread):
    """Registers again whenever renewal is due; a refusal (403) stops the worker, other failures retry."""

    def __init__(
        self, provider: WorkerSettingsProvider, process: subprocess.Popen[bytes], say: Say, backoff: Backoff
    ) -> None:
        super().__init__(name="lkps-agent-renewal", daemon=True)
        self._provider = provider
        self._process = process
        self._say = say
        self._backoff = backoff
        self._stopped = threading.Event()
        self.refused: LkpsError | None = None

    def stop(self) -> None:
        # A renewal under way may take the client's timeout; the worker has exited, so do not wait for it.
        self._stopped.set()
        self.join(timeout=1.0)

    def run(self) -> None:
        failures = 0
        delay = self._provider.seconds_until_renewal()
        while not self._stopped.wait(delay):
            try:
                registration = self._provider.renew()
            except Forbidden as error:
                # Revoked (or no longer allowed): the worker is refused anyway; stop it cleanly and say why.
                self.refused = error
                self._say(f"{failure(error)[1]}; stopping the worker")
                self._process.terminate()
                return
            except LkpsError as error:
                failures += 1
                delay = self._backoff.delay(failures, error.retry_after)
                left = self._provider.seconds_until_expiry()
                self._say(
                    f"renewing the registration failed ({error}); retry {failures} in {delay:.0f} s, "
                    + (f"registration valid for {left:.0f} s more" if left else "the agent is not connected")
                )
                continue
            failures = 0
            delay = self._provider.seconds_until_renewal()
            self._say(
                f"renewed (registration {registration.registration_id}, expires {_utc(registration.expires_at)})"
            )


@contextlib.contextmanager
def _forwarding_signals() -> Iterator[Callable[[subprocess.Popen[bytes]], None]]:
    """Pass FORWARDED_SIGNALS on to the worker; one that comes before it has started is passed on then."""
    process: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum in TERMINAL_SIGNALS and _terminal_signals_reach_the_worker():
            return
        if process is None:
            pending.append(signum)
        else:
            process.send_signal(signum)  # a no-op once the worker has been reaped

    def attach(started: subprocess.Popen[bytes]) -> None:
        nonlocal process
        process = started
        for signum in pending:
            started.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        yield attach
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminal_signals_reach_the_worker() -> bool:
    """Whether our process group (the worker's too) is the foreground group of a controlling terminal."""
    try:
        terminal = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: the signal was sent to us alone
    try:
        return os.tcgetpgrp(terminal) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(terminal)


def _utc(unix: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))
