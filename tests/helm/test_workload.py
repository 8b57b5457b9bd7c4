"""The pods: hardening, probes, graceful shutdown, scaling objects, labels and the environment overlays."""

from __future__ import annotations

from collections.abc import Callable

import helm_python as helm
import pytest

from tests.helm.conftest import (
    KUBE_VERSIONS,
    RELEASE,
    SCENARIOS,
    Manifest,
    containers,
    named,
    of_kind,
    one,
    pod_specs,
    render,
    render_notes,
    scenario_values,
)

Rendered = Callable[..., list[Manifest]]
UID = 10001
RECOMMENDED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


def server_container(manifests: list[Manifest]) -> Manifest:
    return one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_hardened(scenario: str, rendered: Rendered) -> None:
    """Every pod runs as UID 10001, non-root, seccomp RuntimeDefault, read-only root, no privilege escalation, no capabilities."""
    manifests = rendered(scenario)
    for name, spec in pod_specs(manifests).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == UID, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        tmp = next(volume for volume in spec["volumes"] if volume["name"] == "tmp")
        assert "emptyDir" in tmp, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == UID, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in context["capabilities"], name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
            assert "memory" in container["resources"]["limits"], name


def test_server_runs_one_worker_on_the_container_port(rendered: Rendered) -> None:
    """The container runs `lkps serve` on its named http port with exactly one worker."""
    container = server_container(rendered("defaults"))
    assert container["args"] == ["serve", "--port", "8000", "--workers", "1"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["image"] == "registry.example.com/platform/lkps:0.1.0"


def test_probes_target_the_health_endpoints(rendered: Rendered) -> None:
    """Startup and liveness hit /api/health/live and readiness /api/health/ready, all on the http port."""
    container = server_container(rendered("defaults"))
    expected = {
        "startupProbe": "/api/health/live",
        "livenessProbe": "/api/health/live",
        "readinessProbe": "/api/health/ready",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe


@pytest.mark.parametrize(
    ("kube_version", "action"), [("1.29.0", "exec"), ("1.30.0", "sleep"), ("1.31.0", "sleep")]
)
def test_pre_stop_uses_the_sleep_action_from_1_30(kube_version: str, action: str, rendered: Rendered) -> None:
    """The preStop pause is the native sleep action on 1.30+ and an exec of `sleep` on older clusters."""
    pre_stop = server_container(rendered("defaults", kube_version))["lifecycle"]["preStop"]
    assert list(pre_stop) == [action]
    assert pre_stop == (
        {"sleep": {"seconds": 5}} if action == "sleep" else {"exec": {"command": ["sleep", "5"]}}
    )


def test_grace_period_covers_pre_stop_and_drain(rendered: Rendered) -> None:
    """terminationGracePeriodSeconds exceeds the preStop pause plus the server's 30 s drain."""
    spec = one(rendered("defaults"), "Deployment")["spec"]["template"]["spec"]
    pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + 30


def test_too_short_grace_period_is_refused(chart: helm.Chart) -> None:
    """A grace period that would kill requests mid-drain fails the render."""
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(chart, {"terminationGracePeriodSeconds": 20})


@pytest.mark.parametrize("scenario", ["ci/hpa", "values-prod-eu", "values-prod-us"])
def test_hpa_owns_the_replica_count(scenario: str, rendered: Rendered) -> None:
    """With autoscaling on, an autoscaling/v2 HPA targets the Deployment, which omits `replicas`."""
    manifests = rendered(scenario)
    assert "replicas" not in one(manifests, "Deployment")["spec"]
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}


def test_fixed_replicas_without_hpa(rendered: Rendered) -> None:
    """Without autoscaling the Deployment carries replicaCount and no HPA is rendered."""
    manifests = rendered("values-np-eu")
    assert one(manifests, "Deployment")["spec"]["replicas"] == 2
    assert of_kind(manifests, "HorizontalPodAutoscaler") == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 1}, False),
        ({"replicaCount": 2}, True),
        ({"autoscaling": {"enabled": True, "minReplicas": 1}}, False),
        ({"autoscaling": {"enabled": True, "minReplicas": 3}, "replicaCount": 1}, True),
        ({"replicaCount": 3, "podDisruptionBudget": {"enabled": False}}, False),
    ],
)
def test_pdb_only_when_more_than_one_pod(
    values: dict[str, object], expected: bool, chart: helm.Chart
) -> None:
    """A policy/v1 PodDisruptionBudget exists only when more than one pod runs (fixed or HPA minimum)."""
    budgets = of_kind(render(chart, values), "PodDisruptionBudget")
    assert bool(budgets) is expected
    if budgets:
        assert budgets[0]["apiVersion"] == "policy/v1"
        assert budgets[0]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recommended_labels_and_narrow_selectors(scenario: str, rendered: Rendered) -> None:
    """Every resource has the recommended labels, and selectors use only name and instance."""
    manifests = rendered(scenario)
    for manifest in manifests:
        assert manifest["metadata"]["labels"].keys() >= RECOMMENDED_LABELS, manifest["kind"]
    selector = {"app.kubernetes.io/name": "lkps", "app.kubernetes.io/instance": RELEASE}
    assert one(manifests, "Deployment")["spec"]["selector"] == {"matchLabels": selector}
    assert one(manifests, "Service")["spec"]["selector"] == selector


def test_service_never_selects_job_pods(rendered: Rendered) -> None:
    """Migration and prune pods fall outside the selector shared by the Service, HPA, PDB and NetworkPolicy."""
    manifests = rendered("ci/retention")
    selector = one(manifests, "Service")["spec"]["selector"]
    job_pods = [
        one(manifests, "Job")["spec"]["template"],
        one(manifests, "CronJob")["spec"]["jobTemplate"]["spec"]["template"],
    ]
    for pod in job_pods:
        labels = pod["metadata"]["labels"]
        assert labels.keys() >= RECOMMENDED_LABELS
        assert not selector.items() <= labels.items()


def test_image_tag_is_pinned_everywhere(rendered: Rendered) -> None:
    """Every overlay pins an image tag, and no scenario deploys `latest`."""
    for scenario in SCENARIOS:
        if scenario.startswith("values-"):
            assert scenario_values(scenario)["image"]["tag"] not in {"", "latest"}, scenario
        for container in containers(rendered(scenario)):
            assert not container["image"].endswith(":latest"), scenario


def test_image_digest_wins_over_the_tag(chart: helm.Chart) -> None:
    """An image digest replaces the tag in every container reference."""
    digest = "sha256:" + "a" * 64
    for container in containers(render(chart, {"image": {"digest": digest}})):
        assert container["image"] == f"registry.example.com/platform/lkps@{digest}"


@pytest.mark.parametrize("region", ["eu", "us"])
def test_non_production_overlays(region: str, rendered: Rendered) -> None:
    """Non-production overlays use the non-production audience and regional LiveKit URL with two fixed pods."""
    manifests = rendered(f"values-np-{region}")
    data = one(manifests, "ConfigMap")["data"]
    assert data["LKPS_ENTRA_AUDIENCES"].endswith(",api://livekit-platform-service-np.example.com")
    assert data["LKPS_LIVEKIT_URL"] == f"wss://{region}.livekit-np.example.com"
    assert one(manifests, "PodDisruptionBudget")
    for kind in ("HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"):
        assert of_kind(manifests, kind) == [], kind


@pytest.mark.parametrize("region", ["eu", "us"])
def test_production_overlays(region: str, rendered: Rendered) -> None:
    """Production overlays use the production audience and LiveKit URL, HPA from 3 pods, PDB, NetworkPolicy and ServiceMonitor."""
    manifests = rendered(f"values-prod-{region}")
    data = one(manifests, "ConfigMap")["data"]
    assert data["LKPS_ENTRA_AUDIENCES"].endswith(",api://livekit-platform-service.example.com")
    assert data["LKPS_LIVEKIT_URL"] == f"wss://{region}.livekit.example.com"
    assert one(manifests, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    for kind in ("PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"):
        assert one(manifests, kind), kind
    spread = one(manifests, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_service_monitor_scrapes_metrics(rendered: Rendered) -> None:
    """The ServiceMonitor scrapes /metrics on the http port of this release's Service."""
    monitor = one(rendered("ci/servicemonitor"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")


def test_network_policy_admits_only_configured_peers(rendered: Rendered) -> None:
    """Ingress reaches only the http port from the configured peers; explicit egress also allows DNS."""
    policy = one(rendered("ci/networkpolicy"), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(policy["ingress"][0]["from"]) == 2
    assert {"port": 53, "protocol": "UDP"} in policy["egress"][0]["ports"]
    assert len(policy["egress"]) == 3


def test_network_policy_leaves_egress_open_by_default(rendered: Rendered) -> None:
    """Without egress rules the policy restricts ingress only (lkps must reach Entra, LiveKit and the database)."""
    policy = one(rendered("values-prod-eu"), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert "egress" not in policy


def test_ingress_exposes_only_the_public_api(rendered: Rendered) -> None:
    """The Ingress routes the public prefixes of its host to the Service's http port, with TLS; never
    /api/admin."""
    ingress = named(rendered("ci/ingress"), "Ingress", RELEASE)["spec"]
    assert ingress["ingressClassName"] == "nginx"
    rule = ingress["rules"][0]
    assert rule["host"] == "lkps.np.example.com"
    backend = {"service": {"name": RELEASE, "port": {"name": "http"}}}
    assert rule["http"]["paths"] == [
        *(
            {"path": path, "pathType": "Prefix", "backend": backend}
            for path in ("/api/session", "/api/livekit", "/api/agent")
        ),
        {"path": "/api/health/live", "pathType": "Exact", "backend": backend},
    ]
    assert ingress["tls"] == [{"hosts": ["lkps.np.example.com"], "secretName": "lkps-tls"}]


def test_the_default_ingress_paths_leave_out_the_admin_api(chart: helm.Chart) -> None:
    """Turning the Ingress on with the chart's default hosts publishes no path that reaches /api/admin."""
    ingress = named(render(chart, {"ingress": {"enabled": True}}), "Ingress", RELEASE)
    paths = [entry["path"] for rule in ingress["spec"]["rules"] for entry in rule["http"]["paths"]]
    assert paths
    assert not [path for path in paths if "/api/admin".startswith(path) or path.startswith("/api/admin")]


def test_the_default_ingress_serves_only_liveness_of_the_health_endpoints(chart: helm.Chart) -> None:
    """The chart's default public paths route /api/health/live alone of the health endpoints, exactly."""
    ingress = named(render(chart, {"ingress": {"enabled": True}}), "Ingress", RELEASE)
    entries = [entry for rule in ingress["spec"]["rules"] for entry in rule["http"]["paths"]]
    health = [
        (entry["path"], entry["pathType"]) for entry in entries if entry["path"].startswith("/api/health")
    ]
    assert health == [("/api/health/live", "Exact")]


@pytest.mark.parametrize(
    ("path", "path_type"),
    [("/api/health", "Prefix"), ("/api/health", "Exact"), ("/api/health/ready", "Exact")],
)
def test_a_public_path_to_the_readiness_checks_fails_the_render(
    chart: helm.Chart, path: str, path_type: str
) -> None:
    """A public Ingress path routing /api/health or /api/health/ready stops the render naming /api/health/live."""
    values = {
        "ingress": {
            "enabled": True,
            "hosts": [{"host": "lkps.example.com", "paths": [{"path": path, "pathType": path_type}]}],
        }
    }
    with pytest.raises(helm.HelmRenderError, match=r"would publish the readiness checks.*/api/health/live"):
        render(chart, values)


@pytest.mark.parametrize("path", ["/", "/api", "/api/", "/api/admin", "/api/admin/agents", "/api/(.*)"])
def test_a_public_path_that_would_route_the_admin_api_fails_the_render(chart: helm.Chart, path: str) -> None:
    """A public Ingress path covering /api/admin (or a regex that could) stops the render naming adminIngress."""
    values = {
        "ingress": {
            "enabled": True,
            "hosts": [{"host": "lkps.example.com", "paths": [{"path": path, "pathType": "Prefix"}]}],
        }
    }
    with pytest.raises(helm.HelmRenderError, match="would publish the admin API"):
        render(chart, values)


def test_the_admin_ingress_is_opt_in_and_routes_only_the_admin_api(rendered: Rendered) -> None:
    """adminIngress adds a second Ingress, on its own class and host, for /api/admin alone."""
    assert sorted(i["metadata"]["name"] for i in of_kind(rendered("ci/ingress"), "Ingress")) == [
        RELEASE,
        f"{RELEASE}-worker",
    ]
    manifests = rendered("ci/admin-ingress")
    public, admin = named(manifests, "Ingress", RELEASE), named(manifests, "Ingress", f"{RELEASE}-admin")
    assert admin["metadata"]["name"] == f"{RELEASE}-admin"
    spec = admin["spec"]
    assert spec["ingressClassName"] == "nginx-internal"
    [rule] = spec["rules"]
    assert rule["host"] == "lkps-admin.internal.example.com"
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/api/admin", "Prefix")]
    assert spec["tls"] == [{"hosts": ["lkps-admin.internal.example.com"], "secretName": "lkps-admin-tls"}]
    assert admin["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"
    }
    assert public["spec"]["ingressClassName"] == "nginx"


def test_an_admin_ingress_on_a_public_host_and_class_fails(chart: helm.Chart) -> None:
    """The admin Ingress may not share a public host on the public ingress class (that publishes it)."""
    values = {
        "ingress": {"enabled": True, "className": "nginx"},
        "adminIngress": {"enabled": True, "className": "nginx", "host": "lkps.example.com"},
    }
    with pytest.raises(helm.HelmRenderError, match="is a public host on the same ingress class"):
        render(chart, values)


def test_worker_ingress_routes_the_relay_with_long_idle_timeouts(rendered: Rendered) -> None:
    """A second Ingress routes /worker (websocket upgrade and Twirp) of the same host with TLS, the API's
    annotations plus hour-long proxy timeouts, and the public URL the worker URL is built from is set."""
    manifests = rendered("ci/ingress")
    worker = named(manifests, "Ingress", f"{RELEASE}-worker")
    assert worker["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "64k",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
    }
    spec = worker["spec"]
    assert spec["rules"] == [
        {
            "host": "lkps.np.example.com",
            "http": {
                "paths": [
                    {
                        "path": "/worker",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": RELEASE, "port": {"name": "http"}}},
                    }
                ]
            },
        }
    ]
    assert spec["tls"] == [{"hosts": ["lkps.np.example.com"], "secretName": "lkps-tls"}]
    assert one(manifests, "ConfigMap")["data"]["LKPS_PUBLIC_URL"] == "https://lkps.np.example.com"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "https://lkps.example.com"),  # the (placeholder) ingress host, with the Ingress off too
        (
            {
                "ingress": {
                    "enabled": True,
                    "hosts": [
                        {"host": "api.example.org", "paths": [{"path": "/api/session", "pathType": "Prefix"}]}
                    ],
                }
            },
            "https://api.example.org",
        ),
        ({"config": {"LKPS_PUBLIC_URL": "https://workers.example.org"}}, "https://workers.example.org"),
    ],
    ids=["first-host", "ingress-without-tls", "configured"],
)
def test_the_public_url_is_always_set(chart: helm.Chart, values: dict[str, object], expected: str) -> None:
    """Every render sets LKPS_PUBLIC_URL (lkps hands out no worker URL without it): configured, else the first
    TLS host, else the first ingress host, as https; the migration Job gets the same."""
    manifests = render(chart, values)
    assert one(manifests, "ConfigMap")["data"]["LKPS_PUBLIC_URL"] == expected
    job = one(manifests, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LKPS_PUBLIC_URL", "value": expected} in job["env"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ingress": {"hosts": []}}, "config.LKPS_PUBLIC_URL is required"),
        ({"config": {"LKPS_PUBLIC_URL": "http://lkps.example.com"}}, "must be an https:// URL"),
    ],
)
def test_no_public_url_or_a_plaintext_one_fails_the_render(
    chart: helm.Chart, values: dict[str, object], message: str
) -> None:
    """Without a public URL to set (no setting, no ingress host), or with an http one, the render stops."""
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_optional_objects_are_off_by_default(kube_version: str, rendered: Rendered) -> None:
    """The defaults render only the core objects: no Ingress, HPA, PDB, NetworkPolicy, ServiceMonitor or CronJob."""
    kinds = sorted(manifest["kind"] for manifest in rendered("defaults", kube_version))
    assert kinds == ["ConfigMap", "Deployment", "Job", "Service", "ServiceAccount"]


def test_notes_name_the_secret_keys(chart: helm.Chart) -> None:
    """NOTES.txt tells the operator which Secret and keys the pods expect."""
    notes = render_notes(chart)
    assert f'Secret "{RELEASE}"' in notes
    assert "livekit-api-secret  ->  LKPS_LIVEKIT_API_SECRET" in notes


def test_notes_name_the_worker_url_and_a_placeholder(chart: helm.Chart) -> None:
    """NOTES.txt names where workers are sent, and warns while that is still the placeholder host."""
    notes = render_notes(chart)
    assert "Agents' workers are sent to https://lkps.example.com/worker" in notes
    assert "WARNING: LKPS_PUBLIC_URL is still a placeholder" in notes
    configured = render_notes(chart, {"config": {"LKPS_PUBLIC_URL": "https://lkps.corp.internal"}})
    assert "sent to https://lkps.corp.internal/worker" in configured
    assert "LKPS_PUBLIC_URL is still a placeholder" not in configured


def test_notes_say_where_the_admin_api_is(chart: helm.Chart) -> None:
    """NOTES.txt tells the operator the admin API is in-cluster only, or on the admin Ingress's host."""
    assert f"in-cluster only: http://{RELEASE}.lkps-test.svc:80/api/admin" in render_notes(chart)
    values = {
        "adminIngress": {"enabled": True, "className": "internal", "host": "lkps-admin.corp.example.com"}
    }
    assert "http://lkps-admin.corp.example.com/api/admin" in render_notes(chart, values)
