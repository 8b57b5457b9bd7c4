"""Settings from the environment: typed values, secrets from files, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings
from config.settings import database_url_from_env, retention_from_env

TENANT = "0d0a8b5e-95a2-4b8b-9d0e-7d6c5b4a3f21"
SECRET = "s" * 32


def env(**overrides: str) -> dict[str, str]:
    base = {
        "LKPS_ENTRA_TENANT_ID": TENANT,
        "LKPS_ENTRA_AUDIENCES": "api://lkps, 9a1f5d2c-3b4e-4f60-8a7b-9c0d1e2f3a4b",
        "LKPS_LIVEKIT_URL": "wss://livekit.example.com",
        "LKPS_LIVEKIT_API_KEY": "APIkey",
        "LKPS_LIVEKIT_API_SECRET": SECRET,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v != "<unset>"}


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value.problems


class TestValidConfiguration:
    def test_minimal_environment_gives_secure_defaults(self) -> None:
        """Only the required variables yield v2-only, 60 s leeway, cwid-then-oid ids and a 10 minute TTL."""
        settings = Settings.from_env(env())
        assert settings.entra_tenant_id == TENANT
        assert settings.entra_audiences == ("api://lkps", "9a1f5d2c-3b4e-4f60-8a7b-9c0d1e2f3a4b")
        assert settings.entra_authority == "https://login.microsoftonline.com"
        assert settings.entra_allow_v1 is False
        assert settings.entra_leeway_seconds == 60
        assert settings.user_id_claims == ("cwid", "oid")
        assert settings.participant_token_ttl_seconds == 600
        assert settings.client_roles == ()
        assert settings.agent_roles == ()
        assert settings.graph is None
        assert settings.database_url.startswith("sqlite+aiosqlite://")

    def test_database_pool_size_and_wait_are_typed_with_defaults(self) -> None:
        """The pool holds 10 connections and a request waits up to 5 s for one, unless configured."""
        defaults = Settings.from_env(env())
        assert (defaults.database_pool_size, defaults.database_pool_timeout_seconds) == (10, 5.0)
        tuned = Settings.from_env(env(LKPS_DATABASE_POOL_SIZE="40", LKPS_DATABASE_POOL_TIMEOUT_SECONDS="1.5"))
        assert (tuned.database_pool_size, tuned.database_pool_timeout_seconds) == (40, 1.5)

    def test_secret_values_never_appear_in_repr(self) -> None:
        """The LiveKit secret and database URL are kept out of the settings' repr (and so out of logs)."""
        settings = Settings.from_env(env(LKPS_DATABASE_URL="postgresql+asyncpg://u:pw@db/lkps"))
        assert SECRET not in repr(settings)
        assert "pw@db" not in repr(settings)

    def test_secrets_can_come_from_files(self, tmp_path: Path) -> None:
        """`<NAME>_FILE` supplies a secret from a mounted file, trimmed of whitespace."""
        secret_file = tmp_path / "secret"
        secret_file.write_text("f" * 40 + "\n")
        settings = Settings.from_env(
            env(LKPS_LIVEKIT_API_SECRET="<unset>", LKPS_LIVEKIT_API_SECRET_FILE=str(secret_file))
        )
        assert settings.livekit_api_secret == "f" * 40

    def test_user_id_claims_always_end_with_oid(self) -> None:
        """The configured user-id claims fall back to oid, which every token carries."""
        assert Settings.from_env(env(LKPS_USER_ID_CLAIMS="employeeid")).user_id_claims == (
            "employeeid",
            "oid",
        )

    def test_graph_credential_with_exactly_one_form(self) -> None:
        """A client id plus one credential form configures Graph access."""
        settings = Settings.from_env(
            env(
                LKPS_ENTRA_CLIENT_ID="9a1f5d2c-3b4e-4f60-8a7b-9c0d1e2f3a4b", LKPS_ENTRA_CLIENT_SECRET="x" * 20
            )
        )
        assert settings.graph is not None
        assert settings.graph.client_secret == "x" * 20
        assert "x" * 20 not in repr(settings)

    def test_plaintext_livekit_url_is_allowed_on_loopback(self) -> None:
        """A ws:// LiveKit URL on loopback (a local server) needs no opt-in."""
        assert (
            Settings.from_env(env(LKPS_LIVEKIT_URL="ws://127.0.0.1:7880")).livekit_url
            == "ws://127.0.0.1:7880"
        )

    def test_cors_origins_are_exact_and_off_by_default(self) -> None:
        """CORS is off unless origins are listed; listed origins are kept exactly, lower-cased like browsers."""
        assert Settings.from_env(env()).cors_allowed_origins == ()
        settings = Settings.from_env(
            env(LKPS_CORS_ALLOWED_ORIGINS="https://App.Example.com, http://127.0.0.1:5173")
        )
        assert settings.cors_allowed_origins == ("https://app.example.com", "http://127.0.0.1:5173")


class TestRefusedConfiguration:
    def test_every_problem_is_reported_together(self) -> None:
        """Several mistakes produce one error listing each of them, naming the variable."""
        found = problems(
            env(
                LKPS_ENTRA_TENANT_ID="common",
                LKPS_ENTRA_AUDIENCES="<unset>",
                LKPS_LIVEKIT_API_SECRET="short",
                LKPS_ENTRA_CLOCK_SKEW_SECONDS="900",
                LKPS_ENTRA_ALLOW_V1="maybe",
            )
        )
        assert len(found) == 5
        for variable in (
            "LKPS_ENTRA_TENANT_ID",
            "LKPS_ENTRA_AUDIENCES",
            "LKPS_LIVEKIT_API_SECRET",
            "LKPS_ENTRA_CLOCK_SKEW_SECONDS",
            "LKPS_ENTRA_ALLOW_V1",
        ):
            assert any(variable in problem for problem in found), variable

    def test_missing_required_variables_are_named(self) -> None:
        """An empty environment lists each required variable."""
        found = problems({})
        for variable in (
            "LKPS_ENTRA_TENANT_ID",
            "LKPS_ENTRA_AUDIENCES",
            "LKPS_LIVEKIT_URL",
            "LKPS_LIVEKIT_API_KEY",
        ):
            assert any(problem.startswith(variable) for problem in found), variable

    @pytest.mark.parametrize(
        ("name", "value", "fragment"),
        [
            ("LKPS_ENTRA_AUTHORITY", "http://login.microsoftonline.com", "must be an https:// URL"),
            ("LKPS_GRAPH_URL", "http://graph.microsoft.com", "must be an https:// URL"),
            ("LKPS_LIVEKIT_URL", "ws://livekit.example.com", "plaintext to a non-loopback host"),
            ("LKPS_LIVEKIT_URL", "ftp://livekit.example.com", "must be a wss:// or https:// URL"),
            ("LKPS_ENTRA_AUDIENCES", "*", "wildcards are not allowed"),
            ("LKPS_DATABASE_URL", "mysql://db/lkps", "must start with"),
            ("LKPS_CLIENT_APP_IDS", "not-a-guid", "not lowercase GUIDs"),
            ("LKPS_USER_ID_CLAIMS", "bad claim", "invalid value"),
            ("LKPS_ENTRA_CA_BUNDLE", "/nonexistent/ca.pem", "not a readable file"),
            ("LKPS_LOG_FORMAT", "xml", "must be json or console"),
            ("LKPS_DATABASE_POOL_TIMEOUT_SECONDS", "0", "out of range"),
            ("LKPS_DATABASE_POOL_TIMEOUT_SECONDS", "soon", "is not a number"),
            ("LKPS_CORS_ALLOWED_ORIGINS", "https://app.example.com, *", "wildcards are not allowed"),
            ("LKPS_CORS_ALLOWED_ORIGINS", "https://*.example.com", "wildcards are not allowed"),
            ("LKPS_CORS_ALLOWED_ORIGINS", "https://app.example.com/spa", "is not an origin"),
            ("LKPS_CORS_ALLOWED_ORIGINS", "app.example.com", "is not an origin"),
        ],
    )
    def test_insecure_or_malformed_values_are_refused(self, name: str, value: str, fragment: str) -> None:
        """Each insecure or malformed value is refused with a message naming the variable and the fix."""
        [problem] = problems(env(**{name: value}))
        assert problem.startswith(name)
        assert fragment in problem

    def test_plaintext_livekit_url_needs_an_explicit_opt_in(self) -> None:
        """A plaintext LiveKit URL to another host starts only with LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL=true."""
        settings = Settings.from_env(
            env(LKPS_LIVEKIT_URL="ws://livekit.internal", LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL="true")
        )
        assert settings.livekit_url == "ws://livekit.internal"

    def test_secret_and_its_file_together_are_ambiguous(self, tmp_path: Path) -> None:
        """Setting both a secret and its _FILE variant is refused rather than guessing."""
        path = tmp_path / "s"
        path.write_text("y" * 40)
        [problem] = problems(env(LKPS_LIVEKIT_API_SECRET_FILE=str(path)))
        assert "are both set" in problem

    def test_unreadable_secret_file_is_reported(self, tmp_path: Path) -> None:
        """A _FILE variable naming a missing file is reported with the path."""
        missing = tmp_path / "absent"
        [problem] = problems(
            env(LKPS_LIVEKIT_API_SECRET="<unset>", LKPS_LIVEKIT_API_SECRET_FILE=str(missing))
        )
        assert str(missing) in problem

    def test_graph_credential_forms_are_exclusive(self, tmp_path: Path) -> None:
        """Two Graph credential forms at once, or one without a client id, are refused."""
        token_file = tmp_path / "federated"
        token_file.write_text("jwt")
        both = problems(
            env(
                LKPS_ENTRA_CLIENT_ID="9a1f5d2c-3b4e-4f60-8a7b-9c0d1e2f3a4b",
                LKPS_ENTRA_CLIENT_SECRET="x",
                LKPS_ENTRA_FEDERATED_TOKEN_FILE=str(token_file),
            )
        )
        assert any("exactly one of" in problem for problem in both)
        orphan = problems(env(LKPS_ENTRA_CLIENT_SECRET="x"))
        assert any("LKPS_ENTRA_CLIENT_ID is not" in problem for problem in orphan)


class TestDatabaseUrlOnly:
    def test_migrate_needs_only_the_database_url(self) -> None:
        """`lkps migrate` reads the database URL without requiring the gateway's other settings."""
        assert database_url_from_env({"LKPS_DATABASE_URL": "postgresql+asyncpg://db/lkps"}) == (
            "postgresql+asyncpg://db/lkps"
        )
        assert database_url_from_env({}).startswith("sqlite+aiosqlite://")


class TestLifecycleSettings:
    def test_defaults_keep_admin_off_and_ninety_days(self) -> None:
        """Without the new variables: no admin role (admin API off), 90-day retention, 5 s LiveKit API timeout."""
        settings = Settings.from_env(env())
        assert settings.admin_roles == ()
        assert settings.retention_days == 90
        assert settings.livekit_api_url is None
        assert settings.livekit_api_timeout_seconds == 5.0

    def test_values_are_parsed(self) -> None:
        """Admin roles are a comma list; the API URL, its timeout and the retention period are typed."""
        settings = Settings.from_env(
            env(
                LKPS_ADMIN_ROLES="Lkps.Admin, Lkps.Auditor",
                LKPS_RETENTION_DAYS="30",
                LKPS_LIVEKIT_API_URL="https://livekit-api.internal/",
                LKPS_LIVEKIT_API_TIMEOUT_SECONDS="2.5",
            )
        )
        assert settings.admin_roles == ("Lkps.Admin", "Lkps.Auditor")
        assert settings.retention_days == 30
        assert settings.livekit_api_url == "https://livekit-api.internal"
        assert settings.livekit_api_timeout_seconds == 2.5

    def test_a_plaintext_api_url_is_fine_on_loopback_or_with_the_opt_in(self) -> None:
        """http:// for the server API needs loopback or LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL, like the client URL."""
        assert Settings.from_env(env(LKPS_LIVEKIT_API_URL="http://127.0.0.1:7880")).livekit_api_url == (
            "http://127.0.0.1:7880"
        )
        opted_in = env(
            LKPS_LIVEKIT_API_URL="http://livekit.lkps.svc:7880", LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL="true"
        )
        assert Settings.from_env(opted_in).livekit_api_url == "http://livekit.lkps.svc:7880"

    @pytest.mark.parametrize(
        ("name", "value", "fragment"),
        [
            ("LKPS_RETENTION_DAYS", "0", "out of range"),
            ("LKPS_RETENTION_DAYS", "3651", "out of range"),
            ("LKPS_RETENTION_DAYS", "ninety", "not a number"),
            ("LKPS_LIVEKIT_API_TIMEOUT_SECONDS", "0", "out of range"),
            ("LKPS_LIVEKIT_API_URL", "wss://livekit.example.com", "must be an https:// URL"),
            ("LKPS_LIVEKIT_API_URL", "http://livekit.example.com", "plaintext to a non-loopback host"),
            ("LKPS_LIVEKIT_API_URL", "https://livekit.example.com/?x=1", "must not carry a query"),
            ("LKPS_ADMIN_ROLES", "Lkps Admin", "invalid value"),
        ],
    )
    def test_bad_values_are_refused(self, name: str, value: str, fragment: str) -> None:
        """Each bad value is one problem naming the variable."""
        [problem] = problems(env(**{name: value}))
        assert problem.startswith(name)
        assert fragment in problem

    def test_prune_needs_only_the_database_url_and_period(self) -> None:
        """`lkps prune` reads the database URL and retention period alone, reporting both problems at once."""
        assert retention_from_env({"LKPS_RETENTION_DAYS": "7"}) == (
            "sqlite+aiosqlite:///./lkps.db",
            7,
        )
        with pytest.raises(ConfigError) as caught:
            retention_from_env({"LKPS_RETENTION_DAYS": "-1", "LKPS_DATABASE_URL": "mysql://db"})
        assert len(caught.value.problems) == 2


class TestSecurityReviewSettings:
    def test_a_livekit_secret_one_short_of_32_characters_is_refused(self) -> None:
        """LiveKit's own floor is 32 characters: 31 is one problem naming the variable, 32 is accepted."""
        [problem] = problems(env(LKPS_LIVEKIT_API_SECRET="x" * 31))
        assert problem.startswith("LKPS_LIVEKIT_API_SECRET must be at least 32 characters")
        assert Settings.from_env(env(LKPS_LIVEKIT_API_SECRET="x" * 32)).livekit_api_secret == "x" * 32

    @pytest.mark.parametrize(
        "audiences",
        ["api://livekit-platform-service.example.com", "api://lkps, https://lkps.example.com"],
    )
    def test_audiences_without_the_client_id_guid_are_refused(self, audiences: str) -> None:
        """v2.0 tokens carry the API's client id in aud: audiences without it are one clear problem, and a
        client id written in uppercase is kept in the lowercase form Entra sends."""
        [problem] = problems(env(LKPS_ENTRA_AUDIENCES=audiences))
        assert problem.startswith("LKPS_ENTRA_AUDIENCES lists no GUID")
        assert "client id" in problem
        upper = Settings.from_env(env(LKPS_ENTRA_AUDIENCES="api://lkps,9A1F5D2C-3B4E-4F60-8A7B-9C0D1E2F3A4B"))
        assert upper.entra_audiences == ("api://lkps", "9a1f5d2c-3b4e-4f60-8a7b-9c0d1e2f3a4b")

    def test_admin_access_needs_its_own_settings(self) -> None:
        """The admin client allow-list is empty by default (admin API off); admin scopes default to the client
        scopes; the allow-list takes lowercase GUIDs only."""
        defaults = Settings.from_env(env(LKPS_CLIENT_SCOPES="access_as_user"))
        assert (defaults.admin_client_app_ids, defaults.admin_scopes) == ((), ("access_as_user",))
        admin_app = "8c3e1f7a-2b4d-4e6f-9a8b-7c6d5e4f3a2b"
        configured = Settings.from_env(
            env(
                LKPS_ADMIN_CLIENT_APP_IDS=admin_app,
                LKPS_CLIENT_SCOPES="access_as_user",
                LKPS_ADMIN_SCOPES="lkps.admin",
            )
        )
        assert (configured.admin_client_app_ids, configured.admin_scopes) == ((admin_app,), ("lkps.admin",))
        [problem] = problems(env(LKPS_ADMIN_CLIENT_APP_IDS="admin-portal"))
        assert problem.startswith("LKPS_ADMIN_CLIENT_APP_IDS: not lowercase GUIDs")

    def test_the_per_user_rate_limit_stays_below_the_client_ceiling(self) -> None:
        """Per user 30/min (burst 10) under a per-client ceiling; a user limit above the ceiling is refused."""
        defaults = Settings.from_env(env())
        assert (defaults.user_rate_limit_per_minute, defaults.user_rate_limit_burst) == (30, 10)
        assert (defaults.rate_limit_per_minute, defaults.rate_limit_burst) == (3000, 100)
        [problem] = problems(env(LKPS_RATE_LIMIT_PER_MINUTE="100", LKPS_USER_RATE_LIMIT_PER_MINUTE="101"))
        assert problem.startswith("LKPS_USER_RATE_LIMIT_PER_MINUTE (101) is above LKPS_RATE_LIMIT_PER_MINUTE")
        unbounded = Settings.from_env(
            env(LKPS_RATE_LIMIT_PER_MINUTE="0", LKPS_USER_RATE_LIMIT_PER_MINUTE="500")
        )
        assert (unbounded.rate_limit_per_minute, unbounded.user_rate_limit_per_minute) == (0, 500)


class TestWorkerRelaySettings:
    def test_defaults_and_a_public_url(self) -> None:
        """No public URL (worker URLs come from each request), a 2 s key check and a 30 s refusal hold by
        default; LKPS_PUBLIC_URL is kept without its trailing slash."""
        defaults = Settings.from_env(env())
        assert (defaults.public_url, defaults.worker_check_interval_seconds) == (None, 2.0)
        assert defaults.worker_refusal_hold_seconds == 30.0
        tuned = Settings.from_env(
            env(LKPS_PUBLIC_URL="https://lkps.example.com/", LKPS_WORKER_REFUSAL_HOLD_SECONDS="5")
        )
        assert (tuned.public_url, tuned.worker_refusal_hold_seconds) == ("https://lkps.example.com", 5.0)
        assert (
            Settings.from_env(env(LKPS_PUBLIC_URL="http://127.0.0.1:8000")).public_url
            == "http://127.0.0.1:8000"
        )

    @pytest.mark.parametrize(
        ("name", "value", "problem"),
        [
            ("LKPS_PUBLIC_URL", "http://lkps.example.com", "plaintext to a non-loopback host"),
            ("LKPS_PUBLIC_URL", "ftp://lkps.example.com", "must be an https:// URL"),
            ("LKPS_PUBLIC_URL", "https://lkps.example.com/?x=1", "must not carry a query"),
            ("LKPS_WORKER_CHECK_INTERVAL_SECONDS", "5", "out of range"),
            ("LKPS_WORKER_REFUSAL_HOLD_SECONDS", "0", "out of range"),
        ],
    )
    def test_unsafe_values_are_refused(self, name: str, value: str, problem: str) -> None:
        """A plaintext or malformed public URL, a key check slower than the 5 s revocation bound, and a
        refusal hold that would let a refused worker reconnect in a loop are refused with the variable named."""
        [found] = problems(env(**{name: value}))
        assert found.startswith(name)
        assert problem in found

    def test_worker_bounds_default_and_parse(self) -> None:
        """The relay's per-agent cap, handshake rate and key grace default to 100, 120/min and one hour and
        are read from their variables; the previous LiveKit secret is unset by default."""
        default = Settings.from_env(env())
        assert (
            default.worker_max_connections_per_agent,
            default.worker_handshakes_per_minute,
            default.worker_key_grace_seconds,
            default.livekit_previous_api_secret,
        ) == (100, 120, 3600, None)
        tuned = Settings.from_env(
            env(
                LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT="5",
                LKPS_WORKER_HANDSHAKES_PER_MINUTE="10",
                LKPS_WORKER_KEY_GRACE_SECONDS="60",
                LKPS_LIVEKIT_PREVIOUS_API_SECRET="p" * 32,
            )
        )
        assert (
            tuned.worker_max_connections_per_agent,
            tuned.worker_handshakes_per_minute,
            tuned.worker_key_grace_seconds,
            tuned.livekit_previous_api_secret,
        ) == (5, 10, 60, "p" * 32)
        assert "p" * 32 not in repr(tuned)

    def test_a_previous_livekit_secret_equal_to_the_current_one_is_refused(self) -> None:
        """LKPS_LIVEKIT_PREVIOUS_API_SECRET set to the current secret is a configuration problem (a rotation
        half done), named with what to do."""
        [problem] = problems(env(LKPS_LIVEKIT_PREVIOUS_API_SECRET=SECRET))
        assert "LKPS_LIVEKIT_PREVIOUS_API_SECRET" in problem
        assert "unset it" in problem

    def test_a_worker_cap_of_zero_is_refused(self) -> None:
        """A connection cap of 0 would refuse every worker: refused at start."""
        [problem] = problems(env(LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT="0"))
        assert "LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT" in problem
