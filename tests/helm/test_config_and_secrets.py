"""Settings and secrets: the ConfigMap, the roll-on-change checksum, secrets only by reference, workload
identity, and the migration and retention commands."""

from __future__ import annotations

from collections.abc import Callable

import helm_python as helm
import pytest

from config import Settings
from config.settings import is_guid
from tests.helm.conftest import (
    RELEASE,
    SCENARIOS,
    SECRET_SETTINGS,
    Manifest,
    containers,
    lint_findings,
    merged,
    of_kind,
    one,
    pod_specs,
    render,
    scenario_values,
)

Rendered = Callable[..., list[Manifest]]
FEDERATED_TOKEN_FILE = "/var/run/secrets/azure/tokens/azure-identity-token"
WORKLOAD_CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def checksum(manifests: list[Manifest]) -> str:
    return one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_map_holds_the_non_secret_settings(rendered: Rendered) -> None:
    """The ConfigMap carries the `config` values as strings and the Deployment reads it with envFrom."""
    manifests = rendered("values-np-us")
    config_map = one(manifests, "ConfigMap")
    assert config_map["data"]["LKPS_ENTRA_TENANT_ID"] == "00000000-0000-0000-0000-000000000000"
    assert config_map["data"]["LKPS_ENVIRONMENT"] == "np-us"
    assert all(isinstance(value, str) for value in config_map["data"].values())
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]


def test_numbers_and_booleans_become_strings(chart: helm.Chart) -> None:
    """Non-string config values become the strings lkps parses: whole numbers never in exponent notation."""
    config = {
        "LKPS_ENTRA_ALLOW_V1": True,
        "LKPS_VERIFIED_TOKEN_CACHE_SIZE": 1_000_000,
        "LKPS_ENTRA_HTTP_TIMEOUT_SECONDS": 2.5,
    }
    data = one(render(chart, {"config": config}), "ConfigMap")["data"]
    assert {key: data[key] for key in config} == {
        "LKPS_ENTRA_ALLOW_V1": "true",
        "LKPS_VERIFIED_TOKEN_CACHE_SIZE": "1000000",
        "LKPS_ENTRA_HTTP_TIMEOUT_SECONDS": "2.5",
    }


def test_checksum_follows_the_config(chart: helm.Chart, rendered: Rendered) -> None:
    """Changing a setting changes the pod's checksum/config annotation; changing anything else does not."""
    baseline = checksum(rendered("defaults"))
    assert checksum(render(chart, {"config": {"LKPS_LOG_LEVEL": "debug"}})) != baseline
    assert checksum(render(chart, {"replicaCount": 3, "resources": {"requests": {"cpu": "1"}}})) == baseline


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secrets_are_only_referenced(scenario: str, rendered: Rendered) -> None:
    """Secret settings reach every container only through secretKeyRef; no Secret or ConfigMap holds them."""
    manifests = rendered(scenario)
    assert of_kind(manifests, "Secret") == []
    assert SECRET_SETTINGS.isdisjoint(one(manifests, "ConfigMap")["data"])
    for container in containers(manifests):
        env = {entry["name"]: entry for entry in container.get("env", [])}
        for name in SECRET_SETTINGS & env.keys():
            assert "value" not in env[name], name
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "lkps", name
        assert "LKPS_DATABASE_URL" in env
    server = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {entry["name"] for entry in server["env"]} >= {"LKPS_LIVEKIT_API_KEY", "LKPS_LIVEKIT_API_SECRET"}


def test_existing_secret_name_and_keys_are_configurable(chart: helm.Chart) -> None:
    """secrets.existingSecret and secrets.keys choose the Secret and keys; an empty key leaves the variable unmapped."""
    values = {
        "secrets": {
            "existingSecret": "lkps-prod",
            "keys": {"LKPS_ENTRA_CLIENT_SECRET": "graph-client-secret", "LKPS_DATABASE_URL": "pg-url"},
        }
    }
    container = one(render(chart, values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    refs = {entry["name"]: entry["valueFrom"]["secretKeyRef"] for entry in container["env"]}
    assert refs["LKPS_ENTRA_CLIENT_SECRET"] == {"name": "lkps-prod", "key": "graph-client-secret"}
    assert refs["LKPS_DATABASE_URL"] == {"name": "lkps-prod", "key": "pg-url"}
    assert "LKPS_ENTRA_CLIENT_CERTIFICATE_PASSWORD" not in refs


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"LKPS_LIVEKIT_API_SECRET": "s" * 40}, "LKPS_LIVEKIT_API_SECRET is a secret"),
        ({"LKPS_LIVEKIT_API_KEY": "APIkey"}, "LKPS_LIVEKIT_API_KEY is a secret"),
        ({"LKPS_DATABASE_URL": "postgresql+asyncpg://db/lkps"}, "LKPS_DATABASE_URL is a secret"),
        ({"LKPS_ENTRA_CLIENT_SECRET": "abc"}, "LKPS_ENTRA_CLIENT_SECRET is a secret"),
        ({"LKPS_REDIS_PASSWORD": "hunter2"}, "looks like a secret setting"),
        ({"LKPS_REDIS_URL": "redis://:hunter2@redis.example.com:6379/0"}, "URL with credentials"),
        ({"LKPS_ENTRA_CA_BUNDLE": "-----BEGIN CERTIFICATE-----"}, "PEM material"),
        ({"LKPS_LIVEKIT_API_SECRET_FILE": "/var/run/secrets/lk"}, "conflicts with secrets.keys"),
    ],
)
def test_inline_secret_in_config_fails_the_render(
    config: dict[str, str], message: str, chart: helm.Chart
) -> None:
    """A secret-looking setting under `config` stops the render with a message naming it."""
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, {"config": config})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LKPS_REDIS_URL", "rediss://lkps:hunter2@redis.example.com:6380/0"),
        ("LKPS_REDIS_URL", "rediss://:hunter2@redis.example.com:6380/0"),
        ("LKPS_REDIS_URL", "rediss://hunter2@redis.example.com:6380/0"),
        ("LKPS_REDIS_URL", "rediss://redis.example.com:6380/0?password=hunter2"),
        ("LKPS_REDIS_URL", "rediss://redis.example.com:6380/0?ssl_cert_reqs=required&Password=hunter2"),
        ("LKPS_OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com/v1?api_key=hunter2"),
        ("LKPS_OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com/v1?sig=hunter2"),
        ("LKPS_CORS_ALLOWED_ORIGINS", "https://app.example.com,https://user:hunter2@other.example.com"),
        ("LKPS_LIVEKIT_API_URL", "https://livekit.example.com/?token=hunter2"),
    ],
)
def test_credentials_anywhere_in_a_config_url_fail_the_render(
    name: str, value: str, chart: helm.Chart
) -> None:
    """User info of any form and credential query parameters, in any URL of any setting, stop the render."""
    with pytest.raises(helm.HelmRenderError, match=f"config.{name} contains a URL with credentials"):
        render(chart, {"config": {name: value}})


def test_a_redis_url_without_credentials_may_be_plain_config(chart: helm.Chart) -> None:
    """An in-cluster Redis without a password is an ordinary setting in the ConfigMap."""
    values = {"config": {"LKPS_REDIS_URL": "redis://redis.lkps.svc:6379/0?socket_timeout=1"}}
    data = one(render(chart, values), "ConfigMap")["data"]
    assert data["LKPS_REDIS_URL"] == "redis://redis.lkps.svc:6379/0?socket_timeout=1"


def test_the_redis_url_is_mapped_from_the_secret(chart: helm.Chart) -> None:
    """secrets.keys.LKPS_REDIS_URL injects the URL with its password by secretKeyRef; no ConfigMap holds it."""
    manifests = render(chart, {"secrets": {"keys": {"LKPS_REDIS_URL": "redis-url"}}})
    assert "LKPS_REDIS_URL" not in one(manifests, "ConfigMap")["data"]
    server = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    refs = {entry["name"]: entry["valueFrom"]["secretKeyRef"] for entry in server["env"]}
    assert refs["LKPS_REDIS_URL"] == {"name": RELEASE, "key": "redis-url"}
    for container in containers(manifests):
        assert all("value" not in e for e in container.get("env", []) if e["name"] == "LKPS_REDIS_URL")


def test_a_setting_both_in_config_and_the_secret_fails(chart: helm.Chart) -> None:
    """The same variable under config and secrets.keys is refused instead of one silently winning."""
    values = {
        "config": {"LKPS_REDIS_URL": "redis://redis.lkps.svc:6379/0"},
        "secrets": {"keys": {"LKPS_REDIS_URL": "redis-url"}},
    }
    with pytest.raises(helm.HelmRenderError, match="is also mapped from the Secret"):
        render(chart, values)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_overlay_is_a_configuration_lkps_accepts(scenario: str, rendered: Rendered) -> None:
    """The settings each scenario renders, with its secrets filled in, pass lkps's own start-up validation
    (notably: the audiences include the client id GUID Entra v2.0 tokens carry)."""
    environ = dict(one(rendered(scenario), "ConfigMap")["data"])
    environ |= {
        "LKPS_LIVEKIT_API_KEY": "APIkey",
        "LKPS_LIVEKIT_API_SECRET": "s" * 32,
        "LKPS_DATABASE_URL": "postgresql+asyncpg://db/lkps",
    }
    if "LKPS_ENTRA_CLIENT_ID" in environ and "LKPS_ENTRA_FEDERATED_TOKEN_FILE" not in environ:
        environ["LKPS_ENTRA_CLIENT_SECRET"] = "graph-secret"
    settings = Settings.from_env(environ)
    assert any(is_guid(audience) for audience in settings.entra_audiences)


def test_secret_file_paths_are_not_secrets(chart: helm.Chart) -> None:
    """A `_FILE` path setting for an unmapped secret is ordinary config (the file itself is mounted separately)."""
    values = {"config": {"LKPS_ENTRA_CLIENT_SECRET_FILE": "/var/run/secrets/graph/secret"}}
    assert (
        one(render(chart, values), "ConfigMap")["data"]["LKPS_ENTRA_CLIENT_SECRET_FILE"]
        == "/var/run/secrets/graph/secret"
    )


@pytest.mark.parametrize("key", ["LKPS_LIVEKIT_API_KEY", "LKPS_DATABASE_URL"])
def test_required_secret_mappings_cannot_be_removed(key: str) -> None:
    """Unmapping a secret lkps cannot start without is reported by lint."""
    findings = lint_findings({"secrets": {"keys": {key: ""}}})
    assert findings
    assert key in str(findings)


def test_workload_identity_wiring(rendered: Rendered) -> None:
    """Workload identity labels the pod, annotates the ServiceAccount and points lkps at the projected token."""
    manifests = rendered("ci/workload-identity")
    pod = one(manifests, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    account = one(manifests, "ServiceAccount")
    assert account["metadata"]["annotations"]["azure.workload.identity/client-id"] == WORKLOAD_CLIENT_ID
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    data = one(manifests, "ConfigMap")["data"]
    assert data["LKPS_ENTRA_CLIENT_ID"] == WORKLOAD_CLIENT_ID
    assert data["LKPS_ENTRA_FEDERATED_TOKEN_FILE"] == FEDERATED_TOKEN_FILE


def test_workload_identity_is_off_by_default(rendered: Rendered) -> None:
    """Without workload identity there is no webhook label, no client-id annotation and no token path."""
    manifests = rendered("defaults")
    assert (
        "azure.workload.identity/use"
        not in one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    )
    assert "annotations" not in one(manifests, "ServiceAccount")["metadata"]
    assert "LKPS_ENTRA_FEDERATED_TOKEN_FILE" not in one(manifests, "ConfigMap")["data"]


def test_api_token_automount_is_a_value(chart: helm.Chart) -> None:
    """serviceAccount.automountToken switches the Kubernetes API token mount for the server pods."""
    values = merged(scenario_values("ci/workload-identity"), {"serviceAccount": {"automountToken": True}})
    manifests = render(chart, values)
    assert one(manifests, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert one(manifests, "ServiceAccount")["automountServiceAccountToken"] is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"secrets": {"keys": {"LKPS_ENTRA_CLIENT_SECRET": "graph-secret"}}}, "one Graph credential"),
        (
            {"config": {"LKPS_ENTRA_CLIENT_ID": "22222222-2222-3333-4444-555555555555"}},
            "LKPS_ENTRA_CLIENT_ID must not be set",
        ),
    ],
)
def test_workload_identity_conflicts_fail(
    override: dict[str, object], message: str, chart: helm.Chart
) -> None:
    """A second Graph credential next to workload identity stops the render."""
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, merged(scenario_values("ci/workload-identity"), override))


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(rendered: Rendered) -> None:
    """`lkps migrate` runs as a hook Job before install and upgrade, replaced on rerun and removed on success."""
    job = one(rendered("defaults"), "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert "serviceAccountName" not in spec  # the chart's ServiceAccount does not exist yet on first install
    assert spec["containers"][0]["args"] == ["migrate"]


@pytest.mark.parametrize("scenario", ["defaults", "values-prod-eu", "ci/workload-identity"])
def test_commands_get_the_settings_and_of_the_secrets_only_the_database_url(
    scenario: str, chart: helm.Chart
) -> None:
    """Migration and prune pods get every ConfigMap setting inline, the database URL as the server gets it,
    and no other secret (LiveKit, Entra, Redis), nor a Kubernetes API token."""
    mapped = {"LKPS_REDIS_URL": "redis-url"}
    if scenario != "ci/workload-identity":
        mapped["LKPS_ENTRA_CLIENT_SECRET"] = "graph-client-secret"
    values = merged(scenario_values(scenario), {"secrets": {"keys": mapped}, "retention": {"enabled": True}})
    manifests = render(chart, values)
    config = one(manifests, "ConfigMap")["data"]
    server = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {entry["name"] for entry in server["env"]} >= {"LKPS_LIVEKIT_API_SECRET", *mapped}
    [database_url] = [entry for entry in server["env"] if entry["name"] == "LKPS_DATABASE_URL"]
    commands = {key: spec for key, spec in pod_specs(manifests).items() if not key.startswith("Deployment/")}
    assert sorted(commands) == [f"CronJob/{RELEASE}-prune", f"Job/{RELEASE}-migrate"]
    for spec in commands.values():
        assert spec["automountServiceAccountToken"] is False
        [container] = spec["containers"]
        inline = {entry["name"]: entry["value"] for entry in container["env"] if "value" in entry}
        assert inline == config
        assert [entry for entry in container["env"] if "valueFrom" in entry] == [database_url]


def test_migration_can_be_disabled(chart: helm.Chart) -> None:
    """migration.enabled=false removes the hook Job."""
    assert of_kind(render(chart, {"migration": {"enabled": False}}), "Job") == []


def test_retention_cronjob_runs_prune(rendered: Rendered) -> None:
    """The retention CronJob runs `lkps prune` on the configured schedule, never two at once."""
    manifests = rendered("ci/retention")
    cron = one(manifests, "CronJob")["spec"]
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == (
        "30 2 * * *",
        "Europe/Berlin",
        "Forbid",
    )
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["prune"]
    assert {entry["name"] for entry in container["env"]} >= set(one(manifests, "ConfigMap")["data"])


def test_retention_is_off_by_default(rendered: Rendered) -> None:
    """No CronJob is rendered until retention is enabled."""
    assert of_kind(rendered("defaults"), "CronJob") == []
