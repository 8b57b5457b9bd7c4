"""Configuring the client commands: flags over `LKPS_CLIENT_*`, a `lkps dev` state, and every problem at once."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import pytest

from gateway.cli import main
from lkps.cli import add_client_commands, client_config
from lkps.config import ClientConfig, ClientConfigError

TENANT = "0d0a8b5e-95a2-4b8b-9d0e-7d6c5b4a3f21"
CLIENT = "9a1f5d2c-3b4e-4f60-8a7b-9c0d1e2f3a4b"
ENVIRONMENT = {
    "LKPS_CLIENT_URL": "https://lkps.example.com",
    "LKPS_CLIENT_TENANT_ID": TENANT,
    "LKPS_CLIENT_ID": CLIENT,
    "LKPS_CLIENT_SECRET": "from-the-environment",
    "LKPS_CLIENT_SCOPE": "api://lkps/.default",
}


def parsed(*argv: str) -> argparse.Namespace:
    """The namespace `lkps session start` parses, without running it."""
    parser = argparse.ArgumentParser(prog="lkps")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["session", "start", "--agent", CLIENT, *argv])


def test_environment_configures_the_client() -> None:
    """`LKPS_CLIENT_*` alone describe lkps, the tenant and the client credential."""
    config = client_config(parsed(), ENVIRONMENT)
    assert config == ClientConfig(
        url="https://lkps.example.com",
        tenant_id=TENANT,
        client_id=CLIENT,
        scope="api://lkps/.default",
        client_secret="from-the-environment",
    )
    assert "from-the-environment" not in repr(config)


def test_flags_override_the_environment(tmp_path: Path) -> None:
    """A flag wins over its variable; a credential flag replaces the environment's credential, not clash."""
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    config = client_config(
        parsed("--url", "https://other.example.com", "--client-secret-file", str(secret)), ENVIRONMENT
    )
    assert (config.url, config.client_secret) == ("https://other.example.com", "from-a-file")


def test_dev_state_is_used_only_when_nothing_is_configured(tmp_path: Path) -> None:
    """A `lkps dev` state is picked up automatically only without LKPS_CLIENT_* variables and flags."""
    (tmp_path / "authority").write_text("https://127.0.0.1:8001")
    state = ("--state-dir", str(tmp_path))
    assert client_config(parsed(*state), ENVIRONMENT).url == "https://lkps.example.com"
    with pytest.raises(ClientConfigError, match="exactly one of"):
        client_config(parsed(*state, "--client-id", CLIENT), {})
    assert client_config(parsed(*state), {}).authority == "https://127.0.0.1:8001"


def test_missing_settings_are_listed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a dev directory and with nothing configured, the command exits 2 naming each setting."""
    monkeypatch.chdir(tmp_path)
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert main(["session", "start", "--agent", str(uuid.uuid4())]) == 2
    problems = capsys.readouterr().err
    for setting in ("LKPS_CLIENT_URL", "LKPS_CLIENT_TENANT_ID", "LKPS_CLIENT_ID", "LKPS_CLIENT_SCOPE"):
        assert f"{setting} is required" in problems
    assert "exactly one of LKPS_CLIENT_SECRET(_FILE) and LKPS_CLIENT_CERTIFICATE" in problems


@pytest.mark.parametrize(
    "url", ["http://lkps.example.com", "http://10.0.0.5:8000", "HTTP://lkps.internal/base"]
)
def test_a_plaintext_url_to_another_host_is_refused(url: str) -> None:
    """An http URL to anything but loopback, from the variable or the flag, is one line naming both and https."""
    expected = f"LKPS_CLIENT_URL (--url) {url!r} is plaintext http to a non-loopback host: use https://"
    with pytest.raises(ClientConfigError) as from_env:
        client_config(parsed(), {**ENVIRONMENT, "LKPS_CLIENT_URL": url})
    assert from_env.value.problems == [expected]
    with pytest.raises(ClientConfigError) as from_flag:
        client_config(parsed("--url", url), ENVIRONMENT)
    assert from_flag.value.problems == [expected]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_a_plaintext_url_on_loopback_is_accepted(url: str) -> None:
    """Plain http stays allowed to this machine's loopback (`lkps dev`)."""
    assert client_config(parsed("--url", url), ENVIRONMENT).url == url
