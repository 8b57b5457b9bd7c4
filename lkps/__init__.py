"""Python client for lkps: Entra client credentials, session start, agent registration and renewal.

from lkps import EntraCredential, LkpsClient

credential = EntraCredential(tenant_id=..., client_id=..., client_secret=..., scope="api://lkps/.default")
with LkpsClient("https://lkps.example.com", credential) as lkps:
    session = lkps.start_session("<agent app id>", {"language": "en"})
"""

from __future__ import annotations

from lkps.agent_token import AgentTokenProvider, AsyncAgentTokenProvider
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

__all__ = [
    "AgentRegistration",
    "AgentTokenProvider",
    "AsyncAgentTokenProvider",
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
]
