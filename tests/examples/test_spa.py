"""The browser example end to end: headless Chromium signs in with MSAL, starts a session both ways and
joins each room on `lkps dev`'s real LiveKit server with a fake microphone."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from livekit import api

from tests.support.dev_service import DevService
from tests.support.livekit import verify_python
from tests.support.livekit_server import require_livekit

SPA_DIR = Path(__file__).resolve().parents[2] / "examples" / "spa"
CHROMIUM = Path("/usr/bin/chromium")
# Kept after the run (CI's artifacts, and a look for whoever changes the page); ignored by git.
SCREENSHOT = Path(__file__).resolve().parents[2] / "tests" / "examples" / "spa-connected.png"

pytestmark = pytest.mark.slow


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Keep test output quiet."""


@contextmanager
def static_server(directory: Path, origin: str) -> Iterator[str]:
    """Serve `directory` on the origin lkps allows (the example is plain static files)."""
    address = urlsplit(origin)
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer((address.hostname or "127.0.0.1", address.port or 80), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{origin}/"
    finally:
        server.shutdown()
        server.server_close()


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=SPA_DIR, capture_output=True, text=True, timeout=300, check=False)


async def room_participants(livekit_url: str, key: str, secret: str, room: str) -> list[Any]:
    lk = api.LiveKitAPI(livekit_url.replace("ws://", "http://"), key, secret, failover=False)
    try:
        return list((await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants)
    finally:
        await lk.aclose()


def test_browser_signs_in_and_joins_real_rooms(lkps_dev: DevService, tmp_path: Path) -> None:
    """MSAL signs in against the dev issuer; both session paths give the page a token that verifies and
    joins its room on the real LiveKit server, where the page's microphone track is published; the page
    shows the connection state and the participants, and the test keeps a screenshot of it."""
    require_livekit()
    assert (SPA_DIR / "node_modules" / "playwright-core").is_dir(), "run: npm ci --prefix examples/spa"
    assert CHROMIUM.exists(), "install Debian's chromium (scripts/test does)"
    npm = shutil.which("npm")
    assert npm, "npm is required to build the example"
    site = tmp_path / "site"
    built = run(npm, "run", "build", "--silent", "--", "--outdir", str(site))
    assert built.returncode == 0, built.stdout + built.stderr
    configured = run("node", "scripts/dev-config.mjs", str(lkps_dev.state.dir), str(site / "config.json"))
    assert configured.returncode == 0, configured.stderr

    screenshot = tmp_path / "spa.png"
    with static_server(site, lkps_dev.spa_origin) as page:
        browser = subprocess.Popen(
            [
                "node",
                "e2e/sign-in.mjs",
                page,
                str(screenshot),
                lkps_dev.issuer_spki_hash(),
                str(tmp_path / "chromium"),
            ],
            cwd=SPA_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert browser.stdout is not None
            result = json.loads(browser.stdout.readline() or "{}")
            assert "failure" not in result, json.dumps(result, indent=2)
            check_page(lkps_dev, result)
        finally:
            _, errors = browser.communicate(timeout=60)  # closing stdin lets the page go
        assert browser.returncode == 0, errors
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    shutil.copy(screenshot, SCREENSHOT)


def check_page(lkps_dev: DevService, result: dict[str, Any]) -> None:
    """What the connected page shows, checked against the tokens and the LiveKit server itself."""
    assert result["account"] == "Signed in as Alice (alice@dev.lkps.invalid)."
    assert result["error"] == ""
    identity = lkps_dev.state.identity
    rooms = set()
    for panel in ("session-api", "token-endpoint"):
        shown = result["panels"][panel]
        claims = verify_python(
            shown["participantToken"], identity.livekit_api_key, identity.livekit_api_secret
        )
        assert claims.identity == "ALICE"
        assert claims.attributes["lkps.client_app_id"] == identity.spa_client_id
        assert claims.video is not None
        assert claims.room_config is not None
        assert [(a.agent_name, json.loads(a.metadata)["source"]) for a in claims.room_config.agents] == [
            (lkps_dev.agent_id, "lkps browser example")
        ]
        rooms.add(claims.video.room)
        assert shown["connection"] == "connected", shown
        assert shown["participants"] == "Alice (ALICE, you)", shown
        assert shown["microphone"] == "published", shown
        # While the page is still connected, the server itself knows the user and the published audio.
        [participant] = asyncio.run(
            room_participants(
                lkps_dev.livekit_url, identity.livekit_api_key, identity.livekit_api_secret, claims.video.room
            )
        )
        assert participant.identity == "ALICE"
        assert [track.type for track in participant.tracks] == [api.TrackType.AUDIO]
    assert len(rooms) == 2
