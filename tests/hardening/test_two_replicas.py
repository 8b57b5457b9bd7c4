"""Two replicas: two real `lkps serve` processes on one PostgreSQL database and one Redis, as the Helm chart
runs them. A user's rate limit is one budget across both, and an agent revoked through one replica is
refused by the other as soon as the change announced through Redis arrives, long before
LKPS_AGENT_CACHE_TTL_SECONDS."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authz.dev_issuer import DEMO_OPERATOR
from bench.harness import Deployment, Server
from tests.support.db import POSTGRES_SERVER

REDIS_URL = os.environ.get("LKPS_TEST_REDIS_URL")
AGENT_CACHE_TTL_SECONDS = 60  # the longest allowed: only the announcement can explain a prompt refusal
ANNOUNCED_WITHIN_SECONDS = 5
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        POSTGRES_SERVER is None or REDIS_URL is None,
        reason="needs LKPS_TEST_POSTGRES_URL and LKPS_TEST_REDIS_URL",
    ),
]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Server, Server]]:
    extra = {
        "LKPS_REDIS_URL": str(REDIS_URL),
        "LKPS_USER_RATE_LIMIT_PER_MINUTE": "60",
        "LKPS_USER_RATE_LIMIT_BURST": "2",
        "LKPS_AGENT_CACHE_TTL_SECONDS": str(AGENT_CACHE_TTL_SECONDS),
    }
    work = Path(tmp_path_factory.mktemp("replicas"))
    with (
        Deployment.create(work, "postgres", str(POSTGRES_SERVER), extra_env=extra) as deployment,
        deployment.server() as first,
        deployment.server() as second,
    ):
        yield deployment, first, second


def start(deployment: Deployment, server: Server, user: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/session/start",
        json={"agent_entra_app_id": deployment.agent},
        headers={"Authorization": f"Bearer {deployment.user_token(user)}"},
        timeout=30,
    )


def test_a_users_rate_limit_is_one_budget_across_replicas(
    replicas: tuple[Deployment, Server, Server],
) -> None:
    """A user who spent their burst on one replica is refused by the other (429 with Retry-After), while a
    colleague is served there."""
    deployment, first, second = replicas
    user = f"replicated-{uuid.uuid4().hex[:8]}"  # a budget no earlier run left in the shared Redis
    assert [start(deployment, first, user).status_code for _ in range(3)] == [200, 200, 200]
    refused = start(deployment, second, user)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert start(deployment, second, f"colleague-{uuid.uuid4().hex[:8]}").status_code == 200


def test_a_revocation_on_one_replica_reaches_the_other(replicas: tuple[Deployment, Server, Server]) -> None:
    """Revoked through the first replica's admin API: the first refuses at once, the second (whose cache
    said "connected" for another minute) within moments, and registration is refused on both."""
    deployment, first, second = replicas
    assert start(deployment, second, f"warm-{uuid.uuid4().hex[:8]}").status_code == 200
    operator = deployment.state.app_token(deployment.issuer.authority, deployment.state.client(DEMO_OPERATOR))
    revoked = httpx.post(
        f"{first.url}/api/admin/agents/{deployment.agent}/revoke",
        json={"reason": "two-replica drill"},
        headers={"Authorization": f"Bearer {operator}"},
        timeout=30,
    )
    assert revoked.status_code == 200, revoked.text
    revoked_at = time.monotonic()
    assert start(deployment, first, f"after-{uuid.uuid4().hex[:8]}").status_code == 404

    statuses = []
    while time.monotonic() - revoked_at < ANNOUNCED_WITHIN_SECONDS:
        statuses.append(start(deployment, second, f"poll-{uuid.uuid4().hex[:8]}").status_code)
        if statuses[-1] == 404:
            break
        time.sleep(0.1)
    assert statuses[-1] == 404, statuses
    assert start(deployment, second, f"later-{uuid.uuid4().hex[:8]}").status_code == 404
    for server in (first, second):
        registration = httpx.post(
            f"{server.url}/api/agent/register",
            json={"enforce_client_authz": False},
            headers={"Authorization": f"Bearer {deployment.agent_token()}"},
            timeout=30,
        )
        assert registration.status_code == 403, registration.text
        assert registration.json()["error"] == "agent_revoked"
