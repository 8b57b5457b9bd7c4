"""The `lkps dev` state directory: the lock that gives it to one `lkps dev` at a time, and `lkps dev token`.
The files through which the other commands find the running service are the client's contract
(`lkps.dev_state`).

Light on imports on purpose: `lkps dev token` (run often) loads this and the issuer's keys, nothing else.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from lkps.commands import CommandError, ExitCode
from lkps.dev_state import DEMO_AGENT_NAME, DEMO_BACKEND, DEMO_OPERATOR, LOCK_FILE, DevStateError, authority


class StateLock:
    """An exclusive `flock` on `<state dir>/lock` held for the life of one `lkps dev`; the kernel drops it
    when the process ends, however it ends, so there is never a stale lock to clean up."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[str] | None = None

    def acquire(self) -> StateLock:
        """Take the lock or raise CommandError (DEV_STATE) naming the running `lkps dev`; nothing in the
        directory is changed either way but the lock file's content (the holder's pid)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = (self.directory / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise CommandError(
                ExitCode.DEV_STATE,
                f"another `lkps dev` (pid {holder}) is running on {self.directory}: use it, stop it, "
                "or pass --state-dir <another directory>",
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def mint(directory: Path, kind: str, user: str, agent: str = DEMO_AGENT_NAME) -> str:
    """`lkps dev token`: a token from the dev issuer's keys (a user, or the backend, an agent or the operator
    app)."""
    try:
        issuer = authority(directory)
    except DevStateError as error:
        raise CommandError(ExitCode.DEV_STATE, error.message) from None
    # The issuer module loads PyJWT and cryptography: only once a state is known to be there.
    from authz.dev_issuer import DevState  # noqa: PLC0415

    state = DevState(directory)
    if kind == "user":
        return state.user_token(issuer, user)
    if kind == "agent":
        try:
            return state.app_token(issuer, state.identity.agent(agent, directory))
        except DevStateError as error:
            raise CommandError(ExitCode.DEV_STATE, error.message) from None
    clients = {"app": DEMO_BACKEND, "admin": DEMO_OPERATOR}
    return state.app_token(issuer, state.client(clients[kind]))
