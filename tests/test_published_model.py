"""The serving path's model (`ml.published`, numpy alone) computes the training library's vectors.

The Lambdas embed customers with `PublishedModel`; the published vectors in pgvector were made by
`HybridRecommender`. If the two drifted apart, live embeddings would be scored against vectors of
another model: every user and item of a model must agree to 1e-6, cold rows included.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys_platform.assets.ml.assets import ModelConfig
from recsys_platform.batch.seed import training_table
from recsys_platform.ml import artifacts
from recsys_platform.ml.collaborative import CollaborativeSettings
from recsys_platform.ml.hybrid import HybridRecommender, HybridSettings
from recsys_platform.ml.published import PublishedModel
from recsys_platform.ml.spec import RecommenderSpec
from recsys_platform.ml.training import train_recommender
from recsys_platform.storage.object_store import ObjectStore
from tests.test_model import _movies


def _published(model: HybridRecommender, frame: pd.DataFrame, tmp_path) -> tuple[PublishedModel, pd.DataFrame,
                                                                                 pd.DataFrame, dict]:
    s = model.spec
    users = frame[s.user_columns()].drop_duplicates(s.user_id)
    items = frame[s.item_columns()].drop_duplicates(s.item_id)
    store = ObjectStore.from_url((tmp_path / "art").as_uri())
    artifacts.publish(store, model, users, items, {}, "t")
    _, _, csv = artifacts.load_embeddings(store)
    return PublishedModel.load(store), users, items, csv


def _rows(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


@pytest.fixture(scope="module")
def demo_model():
    """The demo's model: the asset's settings and procedure on the demo's data."""
    frame = training_table()
    return frame, ModelConfig().train(frame).model


def test_every_user_and_item_of_the_demos_model_gets_the_published_vector(demo_model, tmp_path):
    frame, model = demo_model
    assert model.settings.collaborative.factors > 0 and model.ranking.collaborative > 0
    published, users, items, csv = _published(model, frame, tmp_path)
    lean_users, lean_items = published.user_embeddings(_rows(users)), published.item_embeddings(_rows(items))
    np.testing.assert_allclose(lean_users, model.user_embeddings(users), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lean_items, model.item_embeddings(items), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lean_users, csv["user"][1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lean_items, csv["item"][1], rtol=0, atol=1e-6)
    assert published.version and published.dim == model.dim == 16 + model.settings.collaborative.factors
    assert published.tower_width == 14


def test_cold_and_odd_rows_are_embedded_as_training_embeds_them(demo_model, tmp_path):
    """A new customer (no id, an unknown id, an unseen city, a missing credit limit) and ids of
    other types (103.0, "103") go through the same rules on both paths, the new-user weights
    (here set apart from a known user's) included."""
    frame, model = demo_model
    model = copy.copy(model)
    model.ranking = replace(model.ranking, new_user_collaborative=0.5, new_user_prior=3.0)
    published, users, _, _ = _published(model, frame, tmp_path)
    known = users.iloc[:5]
    odd = pd.concat([
        known.assign(customerNumber=None),
        known.assign(customerNumber=999_999),
        known.assign(city="Atlantis"),
        known.assign(creditLimit=np.nan),
        known.assign(customerNumber=known["customerNumber"].astype(float)),
        known.assign(customerNumber=known["customerNumber"].astype(str)),
    ], ignore_index=True)
    expected = np.vstack([model.user_embeddings(odd.iloc[n:n + 5]) for n in range(0, len(odd), 5)])
    np.testing.assert_allclose(published.user_embeddings(_rows(odd)), expected, rtol=0, atol=1e-6)
    prior = expected[:, model.tower_width + 1]  # the coordinate that weighs the item bias and prior
    assert (prior[:10] == 3.0).all() and (prior[10:] == 1.0).all(), "new: no id or an unknown one; the rest known"


@pytest.mark.parametrize("with_ids", [True, False])
def test_binary_and_multi_valued_features_agree_too(tmp_path, with_ids):
    frame = _movies()
    spec = RecommenderSpec(user_id="user", item_id="movie", rating="stars", user_categorical=["country"],
                           user_numeric=[], user_binary=["vip"], item_categorical=[], item_numeric=[],
                           item_multi=["genres"])
    model = HybridRecommender(spec, HybridSettings(with_ids=with_ids, max_iter=50,
                                                   collaborative=CollaborativeSettings(factors=8)))
    model = train_recommender(frame, model.spec, model.settings, l2_grid=None, baselines=False).model
    published, users, items, _ = _published(model, frame, tmp_path)
    np.testing.assert_allclose(published.user_embeddings(_rows(users)), model.user_embeddings(users), rtol=0, atol=1e-6)
    np.testing.assert_allclose(published.item_embeddings(_rows(items)), model.item_embeddings(items), rtol=0, atol=1e-6)
    lists = items.assign(genres=items["genres"].str.split("|"))  # a list per row, as the spec allows
    np.testing.assert_allclose(published.item_embeddings(_rows(lists)), model.item_embeddings(items), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"binary feature\(s\) \['vip'\] hold values other than 0/1"):
        published.user_embeddings([{"user": "u1", "country": "FR", "vip": 2}])
