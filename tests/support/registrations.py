"""An agent registration request as the register route builds it, for tests of the registry."""

from __future__ import annotations

from gateway.persistence.agents import NewRegistration


def new_registration(agent_app_id: str, *, enforce_client_authz: bool = True) -> NewRegistration:
    return NewRegistration(
        agent_app_id=agent_app_id,
        tenant_id="0d0a8b5e-95a2-4b8b-9d0e-7d6c5b4a3f21",
        requester_object_id="1c9a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        enforce_client_authz=enforce_client_authz,
        display_name="Agent",
        description=None,
        agent_version="1.2.3",
        request_id="req-1",
    )
