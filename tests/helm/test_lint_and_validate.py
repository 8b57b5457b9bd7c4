"""Every values set (defaults, environment overlays, ci scenarios) lints clean and renders manifests that
the Kubernetes API schemas of each supported version accept."""

from __future__ import annotations

from collections.abc import Callable

import kubernetes_validate
import pytest

from tests.helm.conftest import (
    CRD_KINDS,
    KUBE_VERSIONS,
    SCENARIOS,
    Manifest,
    lint_findings,
    scenario_values,
    validate_manifest,
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_reports_nothing_above_info(scenario: str) -> None:
    """Strict lint (templates and values schema) yields no warning or error message, not merely an empty `errors`."""
    assert lint_findings(scenario_values(scenario)) == []


def test_lint_fails_on_schema_violations() -> None:
    """The lint gate itself works: values the schema rejects produce an error-severity finding."""
    findings = lint_findings({"replicaCount": 0})
    assert findings
    assert all(finding["severity"] == 3 for finding in findings)
    assert any("/replicaCount" in finding["error"] for finding in findings)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate_against_kubernetes_schemas(
    scenario: str, kube_version: str, rendered: Callable[..., list[Manifest]]
) -> None:
    """Every rendered manifest passes strict schema validation for the cluster version it was rendered for."""
    manifests = rendered(scenario, kube_version)
    validated = [manifest["kind"] for manifest in manifests if validate_manifest(manifest, kube_version)]
    assert "Deployment" in validated
    skipped = {manifest["kind"] for manifest in manifests} - set(validated)
    assert skipped <= CRD_KINDS


def test_strict_validation_rejects_unknown_fields(rendered: Callable[..., list[Manifest]]) -> None:
    """The validator is strict: a misspelt field in a rendered manifest is an error."""
    service = next(manifest for manifest in rendered("defaults") if manifest["kind"] == "Service")
    broken = {**service, "spec": {**service["spec"], "selecter": {}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="selecter"):
        validate_manifest(broken, KUBE_VERSIONS[0])


def test_only_allow_listed_kinds_lack_a_schema(rendered: Callable[..., list[Manifest]]) -> None:
    """Each allow-listed kind really has no bundled schema, so the allow-list hides nothing else."""
    monitor = next(manifest for manifest in rendered("values-prod-eu") if manifest["kind"] in CRD_KINDS)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(monitor, KUBE_VERSIONS[-1], strict=True)
