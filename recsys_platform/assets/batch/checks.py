"""The asset checks of `ratings_ml_training`: specs for the asset, results from the core rules."""

import dagster as dg

from recsys_platform.batch import checks as training_checks


def training_check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    """Every contract check, blocking: downstream (the model) never reads data that failed one."""
    return [
        dg.AssetCheckSpec(name, asset=asset_key, description=training_checks.DESCRIPTIONS[name], blocking=True)
        for name in training_checks.ALL_CHECKS
    ]


def training_check_results(asset_key: dg.AssetKey, outcomes: list[training_checks.Outcome]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(check_name=o.name, asset_key=asset_key, passed=o.passed,
                            severity=dg.AssetCheckSeverity.ERROR, description=o.message, metadata=o.metadata)
        for o in outcomes
    ]
