"""Offline chart harness: value scenarios, rendering, linting and Kubernetes schema validation.

Everything runs in-process through helm-python-sdk (no helm binary) and kubernetes-validate (bundled
schemas, no network).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from helm_python import _native

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "lkps"
RELEASE = "lkps"
NAMESPACE = "lkps-test"
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0")
DEFAULT_KUBE_VERSION = "1.31.0"
# Custom resources: kubernetes-validate has no schema for them (their CRD defines it in the cluster).
CRD_KINDS = frozenset({"ServiceMonitor"})
# Settings lkps reads as secrets (config/settings.py `secret(...)`): only ever from a secretKeyRef.
SECRET_SETTINGS = frozenset(
    {
        "LKPS_LIVEKIT_API_KEY",
        "LKPS_LIVEKIT_API_SECRET",
        "LKPS_DATABASE_URL",
        "LKPS_ENTRA_CLIENT_SECRET",
        "LKPS_ENTRA_CLIENT_CERTIFICATE_PASSWORD",
    }
)
# Lint findings at or above this severity fail (0 unknown, 1 info, 2 warning, 3 error): a broken
# template is reported as a severity-3 message while `errors` stays empty.
LINT_FAILURE_SEVERITY = 2

Manifest = dict[str, Any]
Values = dict[str, Any]


def _scenario_files() -> dict[str, Path | None]:
    """Chart defaults, every environment overlay and every chart-testing `ci/` scenario, by name."""
    files: dict[str, Path | None] = {"defaults": None}
    files |= {path.stem: path for path in sorted(CHART_DIR.glob("values-*.yaml"))}
    files |= {
        f"ci/{path.stem.removesuffix('-values')}": path for path in sorted(CHART_DIR.glob("ci/*-values.yaml"))
    }
    return files


SCENARIOS = _scenario_files()


@functools.cache
def _load_values(name: str) -> Values:
    path = SCENARIOS[name]
    return {} if path is None else yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def scenario_values(name: str) -> Values:
    """A private copy of a scenario's values file (empty for the chart defaults)."""
    return copy.deepcopy(_load_values(name))


def merged(base: Values, override: Values) -> Values:
    """`base` with `override` merged in recursively, as Helm layers values files (neither is changed)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def render(
    chart: helm.Chart, values: Values | None = None, *, kube_version: str = DEFAULT_KUBE_VERSION
) -> list[Manifest]:
    """Render an install for one Kubernetes version and return its manifests (NOTES.txt excluded).

    `Chart.render` does not forward `kube_version` to the library, so the native call is made directly:
    the chart branches on `.Capabilities.KubeVersion` (the preStop sleep action) and must be rendered
    the way each cluster version would.
    """
    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{kube_version}",
    }
    payload = _native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(options))
    texts: dict[str, str] = json.loads(payload)
    return [
        document
        for path, text in sorted(texts.items())
        if path.endswith(".yaml")
        for document in yaml.load_all(text, Loader=yaml.CSafeLoader)
        if document
    ]


def render_notes(chart: helm.Chart, values: Values | None = None) -> str:
    """The rendered NOTES.txt."""
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def lint_findings(values: Values | None = None) -> list[dict[str, Any]]:
    """Lint messages of warning severity or worse for these values (strict mode, schema included).

    Lint renders in Helm's lint mode, where `required` and `fail` only log: the chart's own refusals
    are exercised through `render`, not here.
    """
    report = helm.lint(CHART_DIR, values or {}, strict=True, namespace=NAMESPACE)
    return [message for message in report["messages"] if message["severity"] >= LINT_FAILURE_SEVERITY]


def validate_manifest(manifest: Manifest, kube_version: str) -> bool:
    """Validate one manifest strictly (unknown fields rejected); False when it is an allow-listed CRD kind."""
    if manifest["kind"] in CRD_KINDS:
        return False
    _validate_json(json.dumps(manifest, sort_keys=True), kube_version)
    return True


@functools.cache
def _validate_json(manifest: str, kube_version: str) -> None:
    """Scenarios share most manifests verbatim: each distinct one is validated once per version."""
    kubernetes_validate.validate(json.loads(manifest), kube_version, strict=True)


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The manifest of `kind` called `name`; fails when there is none or more than one."""
    found = [manifest for manifest in of_kind(manifests, kind) if manifest["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    """The single manifest of `kind`; fails when there is none or more than one."""
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Every pod spec the chart renders (Deployment, hook Job, CronJob), keyed by kind/name."""
    specs: dict[str, Manifest] = {}
    for manifest in manifests:
        key = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] in {"Deployment", "Job"}:
            specs[key] = manifest["spec"]["template"]["spec"]
        elif manifest["kind"] == "CronJob":
            specs[key] = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def containers(manifests: list[Manifest]) -> list[Manifest]:
    return [container for spec in pod_specs(manifests).values() for container in spec["containers"]]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def rendered(chart: helm.Chart) -> Callable[..., list[Manifest]]:
    """Render a named scenario once per Kubernetes version and share the result (read-only)."""

    @functools.cache
    def render_once(name: str, kube_version: str) -> list[Manifest]:
        return render(chart, scenario_values(name), kube_version=kube_version)

    def render_scenario(name: str, kube_version: str = DEFAULT_KUBE_VERSION) -> list[Manifest]:
        return render_once(name, kube_version)

    return render_scenario


@pytest.fixture(scope="session", autouse=True)
def _cached_kubernetes_schemas() -> Iterator[None]:
    """Memoise kubernetes-validate's schema file reads for the session.

    `validate()` re-reads and re-parses the multi-megabyte definitions file on every call (~70% of its
    time); the files are immutable, so caching them keeps a hundred validations well under a second.
    """
    utils = kubernetes_validate.utils
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, "schema_contents", functools.cache(utils.schema_contents))
        patch.setattr(utils, "all_versions", functools.cache(utils.all_versions))
        yield
