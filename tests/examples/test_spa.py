"""The browser example end to end: headless Chromium signs in with MSAL, starts a session both ways and
joins each room on `lkps dev`'s real LiveKit server with a fake microphone; and every failure a newcomer
meets (untrusted issuer certificate, an origin lkps does not allow, lkps refusing) is shown on the page as
what failed and what to do."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
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


# config.json is served this late, as over a slow network, so that every run clicks Sign in while the page
# is still setting up: the page must take no click it cannot act on yet (such a click would be lost).
CONFIG_DELAY_SECONDS = 1.0


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Serve the file, config.json only after CONFIG_DELAY_SECONDS."""
        if urlsplit(self.path).path.endswith("/config.json"):
            time.sleep(CONFIG_DELAY_SECONDS)
        super().do_GET()


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


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, built once for the module."""
    assert (SPA_DIR / "node_modules" / "playwright-core").is_dir(), "run: npm ci --prefix examples/spa"
    assert CHROMIUM.exists(), "install Debian's chromium (scripts/test does)"
    npm = shutil.which("npm")
    assert npm, "npm is required to build the example"
    site = tmp_path_factory.mktemp("spa") / "site"
    built = run(npm, "run", "build", "--silent", "--", "--outdir", str(site))
    assert built.returncode == 0, built.stdout + built.stderr
    return site


def drive(
    lkps_dev: DevService,
    built_site: Path,
    tmp_path: Path,
    *,
    origin: str | None = None,
    trust_issuer: bool = True,
    agent_id: str | None = None,
    while_connected: Callable[[dict[str, Any]], None] | None = None,
    expect_agent: bool = False,
) -> dict[str, Any]:
    """Serve the example at `origin` (default: the one lkps allows) for `lkps dev`, and drive it in Chromium;
    `while_connected` looks at what the page showed while the page is still in its rooms."""
    site = tmp_path / "site"
    shutil.copytree(built_site, site)
    configured = run("node", "scripts/dev-config.mjs", str(lkps_dev.state.dir), str(site / "config.json"))
    assert configured.returncode == 0, configured.stderr
    if agent_id is not None:
        config = json.loads((site / "config.json").read_text())
        (site / "config.json").write_text(json.dumps(config | {"agentId": agent_id}))
    spki = lkps_dev.issuer_spki_hash() if trust_issuer else "-"
    with static_server(site, origin or lkps_dev.spa_origin) as page:
        browser = subprocess.Popen(
            [
                "node",
                "e2e/sign-in.mjs",
                page,
                str(tmp_path / "spa.png"),
                spki,
                str(tmp_path / "chromium"),
                *(["--expect-agent"] if expect_agent else []),
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
            if while_connected is not None:
                while_connected(result)
        finally:
            _, errors = browser.communicate(timeout=60)  # closing stdin lets the page go
    assert browser.returncode == 0, json.dumps(result, indent=2) + errors
    assert (tmp_path / "spa.png").read_bytes().startswith(b"\x89PNG")
    return dict(result)


def test_browser_signs_in_and_joins_real_rooms(
    lkps_dev: DevService, built_site: Path, tmp_path: Path
) -> None:
    """MSAL signs in against the dev issuer; both session paths give the page a token that verifies and
    joins its room on the real LiveKit server, where the page's microphone track is published and the demo
    agent joins and greets; the page shows the connection state, the participants, the agent's message and
    what lkps says of the agent (GET /api/session/{room}), and the test keeps a screenshot of it."""
    require_livekit()
    drive(
        lkps_dev,
        built_site,
        tmp_path,
        while_connected=lambda result: check_page(lkps_dev, result),
        expect_agent=True,
    )
    shutil.copy(tmp_path / "spa.png", SCREENSHOT)


def check_page(lkps_dev: DevService, result: dict[str, Any]) -> None:
    """What the connected page shows, checked against the tokens and the LiveKit server itself."""
    assert result["account"] == "Signed in as Alice (alice@dev.lkps.invalid)."
    assert result["error"] == ""
    identity = lkps_dev.state.identity
    rooms = set()
    for panel in ("session-api", "token-endpoint"):
        shown = result["panels"][panel]
        assert shown["error"] == ""
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
        you, agent = shown["participants"].split("; ")
        assert you == "Alice (ALICE, you)", shown
        assert agent.startswith("agent-"), shown
        assert agent.endswith(", agent)"), shown
        [greeting] = shown["messages"]
        assert greeting.startswith("agent-"), shown
        assert f"this is the lkps demo agent {lkps_dev.agent_id}" in greeting, shown
        assert shown["microphone"] == "published", shown
        assert shown["agentStatus"] == "the agent is in the room", shown
        # While the page is still connected, the server itself knows the user and the published audio.
        in_room = {
            p.identity: p
            for p in asyncio.run(
                room_participants(
                    lkps_dev.livekit_url,
                    identity.livekit_api_key,
                    identity.livekit_api_secret,
                    claims.video.room,
                )
            )
        }
        user = in_room.pop("ALICE")
        assert [track.type for track in user.tracks] == [api.TrackType.AUDIO]
        [agent_participant] = in_room.values()
        assert agent_participant.kind == api.ParticipantInfo.Kind.AGENT
    assert len(rooms) == 2


def test_an_untrusted_issuer_certificate_says_how_to_trust_it(
    lkps_dev: DevService, built_site: Path, tmp_path: Path
) -> None:
    """A browser that does not trust the dev CA gets, on Sign in, the URL to accept and the CA file to import."""
    result = drive(lkps_dev, built_site, tmp_path, trust_issuer=False)
    assert result["account"] == "Not signed in."
    assert "does not trust its certificate" in result["error"]
    assert f"{lkps_dev.authority}/" in result["error"]
    assert ".lkps-dev/ca.pem" in result["error"]
    assert "examples/spa/README.md" in result["error"]


def test_an_origin_lkps_does_not_allow_is_named_with_the_fix(
    lkps_dev: DevService, built_site: Path, tmp_path: Path
) -> None:
    """The page opened at localhost while lkps allows only 127.0.0.1 says it is CORS, naming the origin and
    `--cors-origin`, on both session paths (not just "Failed to fetch")."""
    origin = lkps_dev.spa_origin.replace("127.0.0.1", "localhost")
    result = drive(lkps_dev, built_site, tmp_path, origin=origin)
    assert result["account"] == "Signed in as Alice (alice@dev.lkps.invalid)."
    for panel in ("session-api", "token-endpoint"):
        error = result["panels"][panel]["error"]
        assert f"does not allow this page's origin {origin} (CORS)" in error, error
        assert f"--cors-origin {origin}" in error


def test_an_lkps_refusal_shows_lkps_message(lkps_dev: DevService, built_site: Path, tmp_path: Path) -> None:
    """An agent that is not connected: both paths show lkps's status, code and message, with the request id."""
    agent = str(uuid.uuid4())
    result = drive(lkps_dev, built_site, tmp_path, agent_id=agent)
    for panel in ("session-api", "token-endpoint"):
        error = result["panels"][panel]["error"]
        assert error.startswith(
            f"lkps refused the session (404 agent_not_connected): Agent with app ID '{agent}' is not connected"
        ), error
        assert "(request id " in error


def test_signed_in_the_page_offers_sign_out_and_it_signs_out(
    lkps_dev: DevService, built_site: Path, tmp_path: Path
) -> None:
    """Signed in, Sign out replaces Sign in; Sign out goes through the authority's logout and back to the
    page, signed out, with Sign in offered again."""
    site = tmp_path / "site"
    shutil.copytree(built_site, site)
    configured = run("node", "scripts/dev-config.mjs", str(lkps_dev.state.dir), str(site / "config.json"))
    assert configured.returncode == 0, configured.stderr
    with static_server(site, lkps_dev.spa_origin) as page:
        done = run("node", "e2e/sign-out.mjs", page, lkps_dev.issuer_spki_hash(), str(tmp_path / "chromium"))
    result = json.loads(done.stdout or "{}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert result["signedIn"] == {
        "account": "Signed in as Alice (alice@dev.lkps.invalid).",
        "signIn": False,
        "signOut": True,
    }
    assert result["signedOut"] == {"account": "Not signed in.", "signIn": True, "signOut": False}
    assert result["error"] == ""
