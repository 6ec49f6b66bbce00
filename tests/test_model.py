"""The two-tower recommender, its evaluation and its artifacts, on seeded training data."""

import json

import numpy as np
import pandas as pd
import pytest

from recsys_platform.batch.seed import training_table
from recsys_platform.ml import artifacts
from recsys_platform.ml.evaluation import evaluate, train_and_evaluate
from recsys_platform.ml.model import TwoTowerRecommender, TwoTowerSpec
from recsys_platform.storage.object_store import ObjectStore


@pytest.fixture(scope="module")
def frame():
    return training_table()


@pytest.fixture(scope="module")
def trained(frame):
    """The pipeline's own procedure: fit on train, popularity prior from valid, test held out."""
    run = train_and_evaluate(frame, TwoTowerRecommender(dim=32))
    assert run.model.popularity_weight > 0, "on this data the prior helps ranking"
    return run.model, run.train, run.test


def test_model_beats_the_bias_baseline_and_popularity(trained):
    model, train, test = trained
    m = evaluate(model, train, test)
    assert m["rmse"] < m["rmse_bias"] < m["rmse_global_mean"]
    assert m["mae"] < m["mae_bias"]
    assert m["ndcg@10"] > m["ndcg@10_popularity"]
    assert m["recall@10"] > m["recall@10_popularity"]
    assert 0 < m["coverage"] <= 1


def test_embedding_inner_product_is_the_predicted_rating_plus_the_popularity_prior(trained):
    model, _, test = trained
    rows = test.head(20)
    u = model.user_embeddings(rows).astype(float)
    i = model.item_embeddings(rows).astype(float)
    assert u.shape == (20, 32) and i.shape == (20, 32)
    w = model.popularity_weight
    prior = w * np.log1p(rows["productCode"].map(model.item_counts).fillna(0).to_numpy(float))
    np.testing.assert_allclose(model.global_mean + (u * i).sum(axis=1), model.predict(rows) + prior, rtol=1e-5, atol=1e-5)
    model.popularity_weight = 0.0
    try:
        ip = (u * model.item_embeddings(rows).astype(float)).sum(axis=1)
        np.testing.assert_allclose(model.global_mean + ip, model.predict(rows), rtol=1e-5, atol=1e-5)
    finally:
        model.popularity_weight = w


def test_popularity_prior_is_chosen_on_validation_and_lifts_ranking():
    frame = training_table(3, seed=5)
    run = train_and_evaluate(frame, TwoTowerRecommender(max_iter=150))
    assert set(run.popularity_ndcg_by_weight) == {0.0, 0.25, 0.5, 1.0, 2.0, 4.0}
    best = max(run.popularity_ndcg_by_weight.values())
    assert run.popularity_ndcg_by_weight[run.model.popularity_weight] == best
    assert run.metrics["ndcg@10"] > run.metrics["ndcg@10_popularity"]
    assert run.metrics["rmse"] < run.metrics["rmse_bias"]
    assert len(run.train) + len(run.valid) + len(run.test) == len(frame)


def test_unseen_customer_and_product_are_embedded_from_features(trained):
    model, _, _ = trained
    new_user = pd.DataFrame([{"city": "Nantes", "country": "France", "creditLimit": 21000.0}])
    new_item = pd.DataFrame([{"productLine": "Motorcycles", "productScale": "1:10", "quantityInStock": 10,
                              "buyPrice": 50.0, "MSRP": 95.0}])
    u, i = model.user_embeddings(new_user), model.item_embeddings(new_item)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(i))
    rich = model.user_embeddings(new_user.assign(creditLimit=200000.0))
    assert not np.allclose(u, rich), "features move the embedding"


def test_trainer_is_generic_over_column_names(frame):
    renamed = frame.rename(columns={"customerNumber": "user", "productCode": "movie", "productRating": "stars",
                                    "country": "nation", "productLine": "genre", "MSRP": "price"})
    spec = TwoTowerSpec(user_id="user", item_id="movie", rating="stars", user_categorical=["nation"],
                        user_numeric=["creditLimit"], item_categorical=["genre"], item_numeric=["price"])
    model = TwoTowerRecommender(spec, dim=8, max_iter=50).fit(renamed)
    assert model.predict(renamed.head(5)).shape == (5,)


def test_training_is_deterministic_for_a_seed(frame):
    a = TwoTowerRecommender(max_iter=30, seed=3).fit(frame).predict(frame.head(10))
    b = TwoTowerRecommender(max_iter=30, seed=3).fit(frame).predict(frame.head(10))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f.drop(columns=["MSRP"]), r"training data lacks columns \['MSRP'\]"),
    (lambda f: f.iloc[0:0], "training data is empty"),
])
def test_bad_training_data_is_a_clear_error(frame, mutate, message):
    with pytest.raises(ValueError, match=message):
        TwoTowerRecommender().fit(mutate(frame))


# -- artifacts -----------------------------------------------------------------------------------
@pytest.fixture
def published(trained, tmp_path):
    model, train, _ = trained
    s = model.spec
    store = ObjectStore.from_url((tmp_path / "ml-artifacts").as_uri())
    users = train[s.user_columns()].drop_duplicates(s.user_id)
    items = train[s.item_columns()].drop_duplicates(s.item_id)
    result = artifacts.publish(store, model, users, items, {"rmse": 0.8}, "data-v1")
    return store, result, model, users, items


def test_publish_lays_out_the_contract_and_load_round_trips(published):
    store, result, model, users, items = published
    keys = {o.key for o in store.list()}
    v = result.version
    assert {f"{v}/model/weights.npz", f"{v}/scalers/user_ohe.json", f"{v}/scalers/user_std_scaler.json",
            f"{v}/scalers/item_ohe.json", f"{v}/scalers/item_std_scaler.json", f"{v}/manifest.json",
            f"{v}/embeddings/item_embeddings.csv", f"{v}/embeddings/user_embeddings.csv", "LATEST"} <= keys
    assert "CURRENT" not in keys, "CURRENT moves only when the version's vectors are active"
    text = store.read_bytes(f"{v}/embeddings/item_embeddings.csv").decode().splitlines()
    assert text[0] == "id,embedding"
    first_id, literal = text[1].split(",", 1)
    assert literal.startswith('"[') and literal.endswith(']"') and first_id in set(items["productCode"])
    version, loaded = artifacts.load_model(store)
    assert version == v
    np.testing.assert_array_equal(loaded.user_embeddings(users), model.user_embeddings(users))
    np.testing.assert_array_equal(loaded.item_embeddings(items), model.item_embeddings(items))
    _, manifest, emb = artifacts.load_embeddings(store)
    assert manifest["training_data_version"] == "data-v1"
    assert emb["item"][1].shape == (len(items), 32)
    np.testing.assert_allclose(emb["item"][1], model.item_embeddings(items), rtol=1e-6)


def test_a_changed_file_fails_its_checksum(published):
    store, result, *_ = published
    path = f"{result.version}/model/weights.npz"
    data = store.read_bytes(path)
    store.write_bytes(path, data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(artifacts.ArtifactError, match="checksum mismatch for model/weights.npz"):
        artifacts.load_model(store)


@pytest.mark.parametrize("pointer", ["LATEST", "CURRENT"])
def test_a_pointer_naming_a_missing_version_is_a_clear_error(published, pointer):
    store, *_ = published
    store.write_bytes(pointer, b"20990101T000000000000Z")
    read = artifacts.load_model if pointer == "LATEST" else artifacts.current_version
    with pytest.raises(artifacts.ArtifactError, match=f"{pointer} names version '20990101T000000000000Z', which has no manifest"):
        read(store)
    with pytest.raises(artifacts.ArtifactError, match="cannot make '20990101T000000000000Z' current"):
        artifacts.set_current(store, "20990101T000000000000Z")


def test_pickles_are_refused(published):
    """A weights file that needs unpickling (object arrays) is never loaded."""
    import hashlib
    import io

    store, result, *_ = published
    buf = io.BytesIO()
    np.savez(buf, user_weights=np.array([object()], dtype=object), item_weights=np.zeros(1))
    path = f"{result.version}/model/weights.npz"
    store.write_bytes(path, buf.getvalue())
    manifest_key = f"{result.version}/manifest.json"
    manifest = json.loads(store.read_bytes(manifest_key))
    manifest["files"]["model/weights.npz"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    store.write_bytes(manifest_key, json.dumps(manifest).encode())
    with pytest.raises(ValueError, match="allow_pickle"):
        artifacts.load_model(store)


@pytest.mark.parametrize(("body", "message"), [
    ("id,embedding\nA,\"[1,2,3]\"\n", "dimension 3, expected 4"),
    ("id,embedding\nA,\"[1,2,nan,4]\"\n", "holds NaN"),
    ("id,embedding\nA,\"[1,2,3,4]\"\nA,\"[1,2,3,4]\"\n", "duplicate id 'A'"),
    ("id,vector\nA,\"[1,2,3,4]\"\n", "header is"),
    ("id,embedding\nA,\"[1,x,3,4]\"\n", "not numbers"),
])
def test_bad_embedding_csvs_are_rejected_with_the_line(body, message):
    with pytest.raises(artifacts.ArtifactError, match=message):
        artifacts.read_embeddings_csv(body.encode(), 4, "item_embeddings.csv")
