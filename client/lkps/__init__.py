"""Python client for lkps: Entra client credentials, session start, agent registration and renewal.

The light distribution `lkps-client` (Python >= 3.10, no server dependencies); `lkps agent run` runs an
unmodified LiveKit Agents worker with the worker settings of a renewed registration (`lkps.agent_run`).

from lkps import EntraCredential, LkpsClient

credential = EntraCredential(tenant_id=..., client_id=..., client_secret=..., scope="api://lkps/.default")
with LkpsClient("https://lkps.example.com", credential) as lkps:
    session = lkps.start_session("<agent app id>", {"language": "en"})
"""

from __future__ import annotations

from lkps.client import AgentRegistration, EndedSession, LkpsClient, Session
from lkps.credentials import EntraCredential, TokenProvider
from lkps.errors import (
    ConnectionFailed,
    CredentialError,
    Forbidden,
    InvalidRequest,
    LkpsError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from lkps.worker_settings import AsyncWorkerSettingsProvider, WorkerSettingsProvider, worker_environment

__all__ = [
    "AgentRegistration",
    "AsyncWorkerSettingsProvider",
    "ConnectionFailed",
    "CredentialError",
    "EndedSession",
    "EntraCredential",
    "Forbidden",
    "InvalidRequest",
    "LkpsClient",
    "LkpsError",
    "NotFound",
    "RateLimited",
    "ServiceUnavailable",
    "Session",
    "TokenProvider",
    "Unauthorized",
    "WorkerSettingsProvider",
    "worker_environment",
]
