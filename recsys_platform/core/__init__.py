"""Pure code shared by the Dagster assets, the Lambdas, the CLI and the tests (no Dagster import)."""
