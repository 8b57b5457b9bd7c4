"""Refuse a busy port before any server starts: one line naming the port and the flag that changes it.

Granian binds with SO_REUSEPORT, so a second server on a busy port would start and share its connections
with the first instead of failing. Every server the `lkps` commands start (lkps, the dev issuer, LiveKit)
checks its port here first.
"""

from __future__ import annotations

import errno
import socket

from lkps.commands import CommandError, ExitCode


def require_free(host: str, port: int, flag: str, what: str = "lkps") -> None:
    """Raise CommandError (PORT_BUSY) when `host:port` cannot be bound; `flag` is how to pick another."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Without SO_REUSEPORT the bind fails whenever anything listens there; SO_REUSEADDR only lets it
        # pass over connections of an earlier run still in TIME_WAIT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            fix = f"pass {flag} <another port>"
            if exc.errno == errno.EADDRINUSE:
                message = f"port {port} ({what}) is in use on {host}: stop what listens there, or {fix}"
            else:
                message = f"cannot listen on {host}:{port} ({what}): {exc.strerror}; {fix}"
            raise CommandError(ExitCode.PORT_BUSY, message) from None
