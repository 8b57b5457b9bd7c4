"""The short soak that runs in CI: `bench/soak.py`'s mixed traffic for a dozen seconds against a real
`lkps serve` (PostgreSQL when LKPS_TEST_POSTGRES_URL is set, else SQLite). The ten-minute run and its last
results are in docs/security/hardening.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Options, soak
from tests.support.db import POSTGRES_SERVER

pytestmark = pytest.mark.slow


def test_short_soak_has_no_5xx_and_a_row_for_every_200(tmp_path: Path) -> None:
    """Mixed traffic (valid starts, invalid tokens, registrations, webhooks when served) gets no 5xx and no
    transport error, every 200 session start has exactly one row, refused ones none, and RSS is reported."""
    options = Options(
        minutes=0.2,
        db="sqlite" if POSTGRES_SERVER is None else "postgres",
        postgres_url=POSTGRES_SERVER or "",
        connections=16,
        users=100,
        warmup_seconds=2,
    )
    summary = soak(options, tmp_path)
    print(summary)  # noqa: T201 - visible with pytest -s
    assert summary["server_errors_5xx"] == 0, summary["by_kind"]
    assert summary["transport_errors"] == {}
    sessions = summary["sessions"]
    assert sessions["ok_responses"] > 0
    assert sessions["rows"] == sessions["ok_responses"]
    assert sessions["missing_rows"] == sessions["doubled_rows"] == sessions["wrong_room"] == 0
    assert sessions["rows_for_refused_requests"] == 0
    assert set(summary["by_kind"]) >= {"start", "invalid", "register"}
    assert summary["by_kind"]["invalid"].keys() == {"401"}
    assert summary["latency"]["start"]["p99_ms"] > 0
    assert summary["worker_rss_kib"]["start"] > 0
    assert summary["worker_rss_kib"]["end"] > 0
