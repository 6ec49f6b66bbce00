"""What a person sees in the Dagster UI over the demo's state, in a real browser (Debian's
chromium, driven by Playwright): the lineage, the training data and one of its partitions, the
model and its evaluation."""

from __future__ import annotations

import re
import time

import pytest

from recsys_platform.batch import checks as training_checks
from recsys_platform.batch.contract import Selection
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.cli.runs import CODE_LOCATION
from recsys_platform.settings import Settings
from tests.browser import (
    ASSETS,
    LINEAGE_VIEWPORT,
    browser_page,
    graphql,
    open_ui,
    show_whole_lineage,
)

pytestmark = pytest.mark.webserver


def test_the_lineage_shows_every_asset_with_its_kinds_and_passing_checks(webserver):
    width, height = LINEAGE_VIEWPORT
    # Per asset card: training data 6 checks, model 4, item_emb 4, user_emb 2, item_attributes 2,
    # customer_purchases 1, customer_recommendations 2, recommendations 3, interactions 2, online_metrics 1.
    expected = sorted([("6", "6"), ("4", "4"), ("4", "4"), ("2", "2"), ("2", "2"), ("1", "1"), ("2", "2"),
                       ("3", "3"), ("2", "2"), ("1", "1")])
    with browser_page(width, height) as page:
        open_ui(page, webserver, "/asset-groups")
        show_whole_lineage(page, width, height)
        deadline = time.monotonic() + 15  # each card loads its checks' status on its own
        while True:
            text = page.locator("body").inner_text()
            passed = sorted(re.findall(r"(\d+) / (\d+) Passed", text))
            if passed == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    for name in ASSETS:
        assert name in text, name
    for kind in ("SQL", "Arrow", "Parquet", "Scikit Learn", "pgvector", "Postgres"):
        assert kind in text, kind
    assert passed == expected, passed
    assert "122 partitions" in text


def test_a_partition_page_shows_its_own_row_count_and_the_checks_pass(demo_home, webserver):
    db = SourceDatabase(Settings.build(home=str(demo_home)).source_url)
    partition = str(db.customer_numbers()[5])
    own_rows = db.count_ratings(Selection.of_customers([int(partition)]))
    with browser_page() as page:
        open_ui(page, webserver, f"/assets/ratings_ml_training?view=partitions&partition={partition}")
        row = page.locator("tr", has_text="dagster/row_count").first
        row.wait_for()
        assert row.inner_text().split() == ["dagster/row_count", str(own_rows)], "the partition's own count"
        assert page.locator("tr", has_text="run_rows").first.inner_text().split() == ["run_rows", str(db.count_ratings())]
        open_ui(page, webserver, "/assets/ratings_ml_training?view=checks")
        page.get_by_text(training_checks.ALL_CHECKS[0], exact=True).first.wait_for()
        text = page.locator("body").inner_text()
    for check in training_checks.ALL_CHECKS:
        assert check in text, check
    assert text.count("Succeeded") == len(training_checks.ALL_CHECKS), "each check's latest run, in the list"
    assert "Failed" not in text
    assert training_checks.DESCRIPTIONS[training_checks.NULL_KEYS] in text, "the check described in words"


def test_the_model_page_shows_its_evaluation_against_the_baselines(webserver):
    with browser_page() as page:
        open_ui(page, webserver, "/assets/recommender_model")
        page.get_by_text("evaluation", exact=True).first.wait_for()
        text = page.locator("body").inner_text()
        open_ui(page, webserver, "/assets/recommender_model?view=checks")
        page.get_by_text("beats_bias_baseline", exact=True).first.wait_for()
        checks = page.locator("body").inner_text()
    for row in ("NDCG@10", "RMSE (lower is better)", "Recall@10", "catalog coverage of the top 10"):
        assert row in text, row
    assert "popularity" in text and "training_rows" in text and "held_out_ratings" in text
    assert "Row count" not in text, "the model has no rows: its metadata says training rows"
    assert "held-out RMSE" in checks and "Passed" in checks


def test_the_demos_runs_belong_to_the_code_location_are_in_the_timeline_and_re_execute(webserver):
    runs = graphql(webserver, "{ runsOrError { ... on Runs { results { runId jobName status "
                              "repositoryOrigin { repositoryLocationName repositoryName } } } } }")["runsOrError"]["results"]
    jobs = {r["jobName"] for r in runs}
    assert {"classicmodels_ratings_observation", "ratings_ml_training_job", "model_and_vectors_job",
            "recommendations_job"} <= jobs, jobs
    for run in runs:
        assert run["status"] == "SUCCESS", run
        assert run["repositoryOrigin"] == {"repositoryLocationName": CODE_LOCATION, "repositoryName": "__repository__"}, run
    with browser_page() as page:
        open_ui(page, webserver, "/overview/activity/timeline")
        page.get_by_text("ratings_ml_training_job").first.wait_for()
        text = page.locator("body").inner_text()
    assert "No runs" not in text
    for job in jobs:
        assert job in text, job
    # "Re-execute" from the UI: the webserver finds the run's job in its code location and queues
    # a new run (no daemon here to start it, so it is deleted again for the other tests).
    parent = next(r["runId"] for r in runs if r["jobName"] == "recommendations_job")
    launched = graphql(webserver, f'mutation {{ launchRunReexecution(reexecutionParams: {{parentRunId: "{parent}", '
                                  'strategy: ALL_STEPS}) { __typename ... on LaunchRunSuccess { run { runId jobName '
                                  'parentRunId } } ... on PythonError { message } } }')["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert launched["run"]["jobName"] == "recommendations_job" and launched["run"]["parentRunId"] == parent
    for mutation in ("terminateRun", "deleteRun"):
        graphql(webserver, f'mutation {{ {mutation}(runId: "{launched["run"]["runId"]}") {{ __typename }} }}')
