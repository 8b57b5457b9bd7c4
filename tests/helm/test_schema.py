"""values.schema.json rejects every known-bad overlay (the shipped values sets pass it in the lint tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helm.conftest import CHART_DIR, merged, scenario_values

BAD_VALUES: dict[str, dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "bad-values.yaml").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_rejects_known_bad_values(case: str, chart: helm.Chart) -> None:
    """Each known-bad overlay of tests/helm/bad-values.yaml is rejected by values.schema.json."""
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(BAD_VALUES[case])


def test_bad_values_are_rejected_even_on_a_production_overlay(chart: helm.Chart) -> None:
    """Layering a bad value over a complete production overlay still fails, naming the offending key."""
    with pytest.raises(helm.HelmValuesError, match="LKPS_LIVEKIT_URL"):
        chart.validate_schema(merged(scenario_values("values-prod-eu"), BAD_VALUES["plaintext-livekit-url"]))


def test_every_default_is_described_by_the_schema(chart: helm.Chart) -> None:
    """Every top-level key of values.yaml is declared in the schema, which forbids undeclared keys."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    assert set(chart.values) == set(schema["properties"])
