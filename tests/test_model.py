"""The hybrid recommender, its tuning, its evaluation and its artifacts, on seeded training data."""

import copy
import datetime as dt
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys_platform.batch.seed import training_table
from recsys_platform.ml import artifacts
from recsys_platform.ml.collaborative import CollaborativeSettings
from recsys_platform.ml.evaluation import evaluate
from recsys_platform.ml.hybrid import HybridRecommender, HybridSettings
from recsys_platform.ml.published import RankingWeights
from recsys_platform.ml.spec import RETAIL, RecommenderSpec
from recsys_platform.ml.training import TrainingRun, train_recommender
from recsys_platform.ml.tuning import BLEND_POPULARITY, BLEND_WEIGHTS, NORM_POWERS, BlendGrid
from recsys_platform.storage.object_store import ObjectStore


def train(frame: pd.DataFrame, model: HybridRecommender, **options) -> TrainingRun:
    """`train_recommender` at `model`'s spec and settings, its L2 as it is."""
    return train_recommender(frame, model.spec, model.settings, **{"l2_grid": None, **options})


def hybrid_model(spec: RecommenderSpec | None = None, als_factors: int = 0, **settings) -> HybridRecommender:
    """An unfitted model with these settings (`als_factors`: the collaborative part's factors)."""
    return HybridRecommender(spec or RETAIL, HybridSettings(collaborative=CollaborativeSettings(factors=als_factors), **settings))


@pytest.fixture(scope="module")
def frame():
    return training_table()


@pytest.fixture(scope="module")
def trained(frame):
    """The pipeline's own procedure: fit on train, popularity prior from valid, test held out."""
    run = train(frame, hybrid_model(dim=32))
    assert run.model.ranking.popularity > 0, "on this data the prior helps ranking"
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
    w = model.ranking.popularity
    prior = w * np.log1p(rows["productCode"].map(model.item_counts).fillna(0).to_numpy(float))
    np.testing.assert_allclose(model.global_mean + (u * i).sum(axis=1), model.predict(rows) + prior, rtol=1e-5, atol=1e-5)
    ip = (u * model.item_embeddings(rows, ranking=RankingWeights()).astype(float)).sum(axis=1)
    np.testing.assert_allclose(model.global_mean + ip, model.predict(rows), rtol=1e-5, atol=1e-5)


def test_popularity_prior_is_chosen_on_validation_and_lifts_ranking():
    frame = training_table(3, seed=5)
    run = train(frame, hybrid_model(max_iter=150))
    assert set(run.popularity_ndcg_by_weight) >= {0.0, 0.25, 0.5, 1.0, 2.0, 4.0}
    best = max(run.popularity_ndcg_by_weight.values())
    assert run.popularity_ndcg_by_weight[run.model.ranking.popularity] == best
    assert run.metrics["ndcg@10"] > run.metrics["ndcg@10_popularity"]
    assert run.metrics["rmse"] < run.metrics["rmse_bias"]
    assert len(run.train) + len(run.valid) + len(run.test) == len(frame)


def test_unseen_customer_and_product_are_embedded_from_features(trained):
    model, _, _ = trained
    new_user = pd.DataFrame([{"city": "Nantes", "country": "France", "creditLimit": 21000.0}])
    new_item = pd.DataFrame([{"productLine": "Motorcycles", "productScale": "1:10", "quantityInStock": 10,
                              "buyPrice": 50.0, "MSRP": 95.0}])
    u, i = model.user_embeddings(new_user, features_only=True), model.item_embeddings(new_item, features_only=True)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(i))
    rich = model.user_embeddings(new_user.assign(creditLimit=200000.0), features_only=True)
    assert not np.allclose(u, rich), "features move the embedding"


def test_trainer_is_generic_over_column_names(frame):
    renamed = frame.rename(columns={"customerNumber": "user", "productCode": "movie", "productRating": "stars",
                                    "country": "nation", "productLine": "genre", "MSRP": "price"})
    spec = RecommenderSpec(user_id="user", item_id="movie", rating="stars", user_categorical=["nation"],
                           user_numeric=["creditLimit"], item_categorical=["genre"], item_numeric=["price"])
    model = hybrid_model(spec, dim=8, max_iter=50).fit(renamed)
    assert model.predict(renamed.head(5)).shape == (5,)


def test_training_is_deterministic_for_a_seed(frame):
    a = hybrid_model(max_iter=30, seed=3).fit(frame).predict(frame.head(10))
    b = hybrid_model(max_iter=30, seed=3).fit(frame).predict(frame.head(10))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f.drop(columns=["MSRP"]), r"training data lacks columns \['MSRP'\]"),
    (lambda f: f.iloc[0:0], "training data is empty"),
])
def test_bad_training_data_is_a_clear_error(frame, mutate, message):
    with pytest.raises(ValueError, match=message):
        HybridRecommender(RETAIL).fit(mutate(frame))


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
    version, loaded = HybridRecommender.load(store)
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
        HybridRecommender.load(store)


@pytest.mark.parametrize("pointer", ["LATEST", "CURRENT"])
def test_a_pointer_naming_a_missing_version_is_a_clear_error(published, pointer):
    store, *_ = published
    store.write_bytes(pointer, b"20990101T000000000000Z")
    read = HybridRecommender.load if pointer == "LATEST" else artifacts.current_version
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
        HybridRecommender.load(store)


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


# -- evaluation and encoding details (issue 11, "Also found") ------------------------------------
def test_recall_is_the_standard_one_and_the_capped_one_is_named():
    from recsys_platform.ml.evaluation import rank_users

    relevant = [set(range(12))]            # 12 relevant items, the model ranks 10 of them on top
    scores = np.arange(20, 0, -1, dtype=float)[None, :]
    r = rank_users(lambda lo, hi: scores[lo:hi].copy(), 1, [set()], relevant)
    assert r.recall == pytest.approx(10 / 12) and r.recall_capped == 1.0 and r.ndcg == pytest.approx(1.0)


def test_validation_items_are_never_test_candidates(frame):
    from recsys_platform.ml.evaluation import ranking_inputs, split

    s = RETAIL
    rest, test = split(frame, 0.2, 0)
    train, valid = split(rest, 0.125, 1)
    users, items, seen, _ = ranking_inputs(s, train, test, also_seen=valid)
    item_pos = dict(zip(items[s.item_id], range(len(items))))
    user_pos = dict(zip(users[s.user_id], range(len(users))))
    in_valid = valid[valid[s.user_id].isin(user_pos)]
    assert len(in_valid) > 0
    assert all(item_pos[i] in seen[user_pos[u]] for u, i in zip(in_valid[s.user_id], in_valid[s.item_id]))


def test_the_popularity_grid_grows_while_its_largest_weight_wins(frame):
    from recsys_platform.ml.evaluation import split
    from recsys_platform.ml.tuning import MAX_POPULARITY_WEIGHT, choose_popularity_weight

    rest, _ = split(frame, 0.2, 0)
    train, valid = split(rest, 0.125, 1)  # the pipeline's split, where the prior helps (it picks 2)
    model = HybridRecommender(RETAIL).fit(train)
    chosen, tried = choose_popularity_weight(model, train, valid, weights=(0.0, 0.5))
    assert len(tried) > 2, "0.5 won, so the grid went on"
    assert chosen.popularity < max(tried) or max(tried) >= MAX_POPULARITY_WEIGHT
    assert tried[chosen.popularity] == max(tried.values())
    assert model.ranking == RankingWeights(), "a choice changes no model"


def test_ids_of_any_type_are_one_id(trained):
    model, train, _ = trained
    rows = train.head(30)
    as_float = rows.assign(customerNumber=rows["customerNumber"].astype(float))
    as_text = rows.assign(customerNumber=rows["customerNumber"].astype(str))
    np.testing.assert_array_equal(model.user_embeddings(as_float), model.user_embeddings(rows))
    np.testing.assert_array_equal(model.user_embeddings(as_text), model.user_embeddings(rows))
    new = rows.assign(customerNumber=None)
    assert not np.allclose(model.user_embeddings(new), model.user_embeddings(rows)), "the id embedding counts"


def test_a_missing_id_column_is_an_error_unless_asked_for(trained):
    model, train, _ = trained
    users = train[["city", "country", "creditLimit"]].head(5)
    with pytest.raises(ValueError, match="no 'customerNumber' column: pass features_only=True"):
        model.user_embeddings(users)
    with pytest.raises(ValueError, match="no 'productCode' column"):
        model.item_embeddings(train[["productLine", "productScale", "quantityInStock", "buyPrice", "MSRP"]])
    cold = model.user_embeddings(users, features_only=True)
    np.testing.assert_array_equal(cold, model.user_embeddings(users.assign(customerNumber=None)))


def test_a_tower_without_numeric_features_trains_and_round_trips(frame, tmp_path):
    spec = replace(RETAIL, user_numeric=[], item_numeric=[])
    model = hybrid_model(spec, max_iter=50).fit(frame)
    users = frame[spec.user_columns()].drop_duplicates(spec.user_id)
    items = frame[spec.item_columns()].drop_duplicates(spec.item_id)
    store = ObjectStore.from_url((tmp_path / "art").as_uri())
    artifacts.publish(store, model, users, items, {}, "t")
    _, loaded = HybridRecommender.load(store)
    np.testing.assert_array_equal(loaded.user_embeddings(users), model.user_embeddings(users))


def test_training_stops_when_the_loss_stops_falling_and_says_so(frame):
    model = HybridRecommender(RETAIL).fit(frame)  # the alternating solver: each sweep solves a tower exactly
    log = np.array(model.training_log)
    settings = model.settings
    assert settings.solver == "alternating" and model.converged and 1 < model.iterations < settings.max_iter
    assert (np.diff(log) <= 1e-9 * log[:-1]).all(), "an exact block minimisation never raises the loss"
    assert (log[-2] - log[-1]) / log[-2] <= settings.towers.ftol < (log[-3] - log[-2]) / log[-3]
    cut = hybrid_model(max_iter=2).fit(frame)
    assert not cut.converged and cut.iterations == 2, "a run cut by max_iter says so"
    lbfgs = hybrid_model(solver="lbfgs").fit(frame)
    log = np.array(lbfgs.training_log)
    assert lbfgs.converged and lbfgs.iterations < lbfgs.settings.max_iter
    assert (log[-31] - log[-1]) / log[-31] < 1e-3, "the last 30 evaluations lower the loss by under 0.1%"
    # one objective, two solvers: the same minimum, the same ratings
    assert abs(model.training_log[-1] - lbfgs.training_log[-1]) < 0.01 * lbfgs.training_log[-1]
    np.testing.assert_allclose(model.predict(frame.head(200)), lbfgs.predict(frame.head(200)), atol=0.1)
    with pytest.raises(ValueError, match="solver must be one of"):
        HybridSettings(solver="sgd")


def _movies(n_users: int = 300, n_items: int = 60, seed: int = 0) -> pd.DataFrame:
    """A non-retail ratings table: a rare 0/1 flag on users, multi-valued genres on items."""
    rng = np.random.default_rng(seed)
    genres = ["drama", "comedy", "action", "horror", "docu"]
    item_genres = [sorted(set(rng.choice(genres, size=int(rng.integers(1, 3)), replace=False))) for _ in range(n_items)]
    vip = (rng.random(n_users) < 0.03).astype(int)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=12, replace=False):
            score = 3 + (1.5 if "comedy" in item_genres[i] else 0) - (1.0 if "horror" in item_genres[i] else 0) + vip[u]
            rows.append({"user": f"u{u}", "movie": f"m{i}", "stars": float(np.clip(round(score + rng.normal(0, 0.5)), 1, 5)),
                         "vip": vip[u], "country": ["FR", "US"][u % 2], "genres": "|".join(item_genres[i])})
    return pd.DataFrame(rows)


def test_binary_and_multi_valued_features_are_declared_as_such(tmp_path):
    from recsys_platform.ml.encoding import TowerEncoder

    frame = _movies()
    flags = TowerEncoder([], [], None, binary=["vip"]).fit(frame).transform(frame).toarray()
    assert set(np.unique(flags)) == {0.0, 1.0}, "a flag stays 0/1"
    as_numeric = TowerEncoder([], ["vip"], None).fit(frame).transform(frame).toarray()
    assert as_numeric.max() > 4, "standardised, the rare flag's 1 becomes an outlier"
    enc = TowerEncoder([], [], None, multi=["genres"]).fit(frame)
    assert enc.vocabulary["genres"] == ["action", "comedy", "docu", "drama", "horror"]
    same = pd.DataFrame({"genres": ["comedy|drama", ["drama", "comedy"], "comedy|western", None]})
    hot = enc.transform(same).toarray()
    assert (hot[0] == hot[1]).all() and hot[2].sum() == 1 and hot[3].sum() == 0, "lists or '|' strings; unknown ignored"
    with pytest.raises(ValueError, match=r"binary feature\(s\) \['vip'\] hold values other than 0/1"):
        TowerEncoder([], [], None, binary=["vip"]).fit(frame).transform(frame.assign(vip=2))

    spec = RecommenderSpec(user_id="user", item_id="movie", rating="stars", user_categorical=["country"],
                           user_numeric=[], user_binary=["vip"], item_categorical=[], item_numeric=[],
                           item_multi=["genres"])
    run = train(frame, hybrid_model(spec, max_iter=300), baselines=False)
    assert run.metrics["rmse"] < run.metrics["rmse_bias"]
    users = frame[spec.user_columns()].drop_duplicates("user")
    items = frame[spec.item_columns()].drop_duplicates("movie")
    store = ObjectStore.from_url((tmp_path / "art").as_uri())
    artifacts.publish(store, run.model, users, items, {}, "t")
    _, loaded = HybridRecommender.load(store)
    np.testing.assert_array_equal(loaded.item_embeddings(items), run.model.item_embeddings(items))
    new = pd.DataFrame({"genres": ["comedy", "horror"]})
    comedy, horror = run.model.item_embeddings(new, features_only=True)
    user = run.model.user_embeddings(pd.DataFrame({"country": ["FR"], "vip": [0]}), features_only=True)[0]
    assert user @ comedy > user @ horror, "a never-seen item is ranked by its genres"


# -- the hybrid: two-tower + implicit ALS factors in one vector pair ------------------------------
@pytest.fixture(scope="module")
def hybrid():
    """The asset's default model (16 of the 32 dimensions collaborative) on collaborative data,
    whose ratings come from latent tastes the features explain only in part."""
    frame = training_table(2, mode="collaborative")
    return frame, train(frame, hybrid_model(als_factors=16))


def test_the_hybrid_ranks_above_tuned_als_popularity_and_its_own_towers(hybrid):
    _, run = hybrid
    m, model = run.metrics, run.evaluated  # the metrics are the model's fitted on the training split
    assert model.ranking.collaborative > 0 and m["als_weight"] == model.ranking.collaborative
    tried = run.blend_ndcg_by_weight
    # every collaborative weight at each norm power is searched, but the norm changes nothing
    # without the collaborative part (8 + 2 x 7 rows), and fewer popularity weights than all are ranked
    rows = {k.replace(k.split()[1], "") for k in tried}
    assert len(rows) == len(BLEND_WEIGHTS) + (len(NORM_POWERS) - 1) * (len(BLEND_WEIGHTS) - 1)
    assert len(tried) < len(rows) * len(BLEND_POPULARITY)
    # the floor: the tuned ALS baseline's validation coverage (test_the_coverage_floor_follows_the_baseline_unless_set)
    floor = m["coverage_floor"]
    assert 0 < floor < 1
    eligible = {k: v["ndcg"] for k, v in tried.items() if v["coverage"] >= floor}
    assert eligible, "on this data some setting covers the floor"
    chosen = max(eligible, key=eligible.get)
    assert chosen.endswith(f"popularity={model.ranking.popularity} norm_power={model.ranking.norm_power}")
    assert [k for k, v in tried.items() if v.get("chosen")] == [chosen], "the grid marks its choice, once"
    assert m["als_norm_power"] == model.ranking.norm_power
    without = [v for k, v in eligible.items() if k.startswith("collaborative=0.0 ")]
    # the factors help on validation: the towers alone either miss the coverage floor or rank worse
    assert not without or eligible[chosen] > max(without)
    assert m["coverage"] >= m["coverage_als"], "lists at least as broad as the baseline's"
    assert m["ndcg@10"] > m["ndcg@10_als"] > m["ndcg@10_popularity"]
    assert m["rmse"] < m["rmse_bias"], "its RMSE gate passes on collaborative data too (l2=80, bias_l2=5)"
    towers = copy.copy(model)  # the same fit, ranked without the collaborative part
    towers.ranking = RankingWeights(0.0, model.ranking.popularity, model.ranking.norm_power)
    towers_alone = evaluate(towers, run.train, run.test, run.valid)["ndcg@10"]
    assert m["ndcg@10"] > towers_alone


def test_the_weight_grid_scores_what_the_published_vectors_score(hybrid):
    """The grid embeds once and varies the weights by arithmetic; each setting must score what
    the vectors published with that setting score."""
    from recsys_platform.ml.evaluation import ranking_inputs
    from recsys_platform.ml.tuning import _WeightedScores

    _, run = hybrid
    model = run.model
    users, items, _, _ = ranking_inputs(model.spec, run.train, run.valid)
    chosen = model.ranking
    for power in (0.0, 1.0):
        scores = _WeightedScores(model, users, items, power)
        for collaborative, popularity in ((0.0, 0.0), (0.7, 0.0), (0.3, 2.0)):
            weights = RankingWeights(collaborative, popularity, power)
            expected = (model.user_embeddings(users.iloc[:40], ranking=weights).astype(np.float64)
                        @ model.item_embeddings(items, ranking=weights).astype(np.float64).T)
            np.testing.assert_allclose(scores.rows(collaborative, popularity)(0, 40), expected, rtol=1e-5, atol=1e-5)
    assert model.ranking == chosen, "scoring a grid changes no model"


def test_the_factor_norm_power_divides_each_item_factor_row_by_its_norm(hybrid):
    """Norm power 1 leaves each item's collaborative factors as a direction (unit norm),
    0 as ALS gives them; the towers, the biases and the user side do not change."""
    _, run = hybrid
    model, rows = run.model, run.test.head(50)
    raw, unit = (RankingWeights(model.ranking.collaborative, model.ranking.popularity, power) for power in (0.0, 1.0))
    raw_items, raw_users = model.item_embeddings(rows, ranking=raw), model.user_embeddings(rows, ranking=raw)
    unit_items = model.item_embeddings(rows, ranking=unit)
    np.testing.assert_array_equal(model.user_embeddings(rows, ranking=unit), raw_users)
    np.testing.assert_array_equal(unit_items[:, :16], raw_items[:, :16])
    np.testing.assert_allclose(np.linalg.norm(unit_items[:, 16:], axis=1), 1.0, rtol=1e-5)
    raw = raw_items[:, 16:]
    np.testing.assert_allclose(unit_items[:, 16:], raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    assert np.ptp(np.linalg.norm(raw, axis=1)) > 0.1, "ALS's own norms differ from item to item"


def test_the_hybrid_inner_product_is_the_ranking_score_and_cold_rows_use_features(hybrid):
    _, run = hybrid
    model, rows = run.model, run.test.head(30)
    u, i = model.user_embeddings(rows).astype(float), model.item_embeddings(rows).astype(float)
    # the towers keep their 14 dimensions; the collaborative part has the factors the search chose
    assert model.tower_width == 14 and model.dim == 14 + 2 + model.settings.collaborative.factors
    assert u.shape == i.shape == (30, model.dim)
    prior = model.popularity_prior(rows)
    collaborative = (u[:, 16:] * i[:, 16:]).sum(axis=1)
    np.testing.assert_allclose(model.global_mean + (u * i).sum(axis=1), model.predict(rows) + prior + collaborative,
                               rtol=1e-4, atol=1e-4)
    assert np.abs(collaborative).max() > 0
    s = model.spec
    known = run.train[s.user_columns()].drop_duplicates(s.user_id).head(50)
    cold = model.user_embeddings(known.assign(**{s.user_id: None}))
    warm = model.user_embeddings(known)
    assert np.abs(cold[:, 16:]).max() > 0, "a new customer's collaborative part comes from the features"
    assert not np.allclose(cold[:, 16:], warm[:, 16:]), "a known customer's own factors replace the prediction"
    same_features = model.user_embeddings(known.assign(**{s.user_id: "never-seen"}))
    np.testing.assert_allclose(same_features, cold, rtol=1e-6, atol=1e-6)


def test_the_hybrid_round_trips_through_its_artifacts(hybrid, tmp_path):
    frame, run = hybrid
    model, s = run.model, run.model.spec
    store = ObjectStore.from_url((tmp_path / "ml-artifacts").as_uri())
    users = frame[s.user_columns()].drop_duplicates(s.user_id)
    items = frame[s.item_columns()].drop_duplicates(s.item_id)
    artifacts.publish(store, model, users, items, run.metrics, "data-v1")
    _, loaded = HybridRecommender.load(store)
    assert loaded.config() == model.config() and loaded.ranking == model.ranking and loaded.tower_width == 14
    np.testing.assert_array_equal(loaded.user_embeddings(users), model.user_embeddings(users))
    np.testing.assert_array_equal(loaded.item_embeddings(items), model.item_embeddings(items))
    _, _, emb = artifacts.load_embeddings(store)
    assert emb["user"][1].shape == (len(users), model.dim)


def test_too_many_collaborative_dimensions_is_a_clear_error():
    with pytest.raises(ValueError, match="dim must leave at least 4 dimensions beside the 30 collaborative"):
        HybridSettings(dim=32, collaborative=CollaborativeSettings(factors=30))


def test_the_bias_columns_can_be_regularised_apart_and_round_trip(frame, tmp_path):
    """`bias_l2` regularises only the towers' bias columns (what the user/item-bias baseline
    regularises lightly); it is saved with the model."""
    loose = hybrid_model(dim=8, max_iter=200, bias_l2=0.5).fit(frame)
    tight = hybrid_model(dim=8, max_iter=200, bias_l2=500.0).fit(frame)
    k = loose.tower_width
    assert np.linalg.norm(loose.user_weights[:, k]) > 3 * np.linalg.norm(tight.user_weights[:, k])
    s = loose.spec
    store = ObjectStore.from_url((tmp_path / "ml-artifacts").as_uri())
    artifacts.publish(store, loose, frame[s.user_columns()].drop_duplicates(s.user_id),
                      frame[s.item_columns()].drop_duplicates(s.item_id), {"rmse": 0.8}, "data-v1")
    assert HybridRecommender.load(store)[1].settings.bias_l2 == 0.5


def test_the_towers_l2_is_chosen_on_validation_rmse(frame):
    from recsys_platform.ml.evaluation import rmse, split
    from recsys_platform.ml.tuning import choose_l2

    rest, _ = split(frame, 0.2, 0)
    train, valid = split(rest, 0.125, 1)
    template = hybrid_model(max_iter=30)
    choice = choose_l2(template, train, valid, grid=(1.0, 80.0, 1e6))
    model, tried = choice.model, choice.validation_rmse
    assert template.user_weights is None, "the template is not fitted, each candidate is a new model"
    assert set(tried) == {1.0, 80.0, 1e6} and choice.l2 == model.settings.l2 == min(tried, key=tried.get)
    assert tried[choice.l2] == pytest.approx(rmse(valid["productRating"], model.predict(valid)))
    assert len(set(tried.values())) == 3, "each L2 gives its own fit"


def test_the_l2_choice_stops_where_a_smaller_l2_overfits_and_adds_the_factors_once(frame):
    from recsys_platform.ml.evaluation import split
    from recsys_platform.ml.tuning import choose_l2

    rest, _ = split(frame, 0.2, 0)
    train, valid = split(rest, 0.125, 1)
    choice = choose_l2(hybrid_model(max_iter=30, als_factors=16), train, valid, grid=(1e-3, 1.0, 80.0))
    model, tried = choice.model, choice.validation_rmse
    assert list(tried) == [80.0, 1.0] and tried[1.0] > tried[80.0], "1.0 overfits, so 1e-3 is never fitted"
    assert choice.l2 == 80.0 and model.user_weights.shape[1] == model.tower_width + 1 + 16, "the factors, on the kept fit"
    with pytest.raises(RuntimeError, match="already fitted"):
        model.fit_collaborative(train)


def test_factors_computed_beside_the_towers_are_those_of_a_plain_fit(frame):
    """`choose_l2` computes the ALS factors in a thread while it fits the towers; the model it
    keeps must equal the one fitted in sequence at the chosen L2, and factors of another table
    are refused with the sizes that differ."""
    from recsys_platform.ml.evaluation import split
    from recsys_platform.ml.tuning import choose_l2

    rest, _ = split(frame, 0.2, 0)
    train, valid = split(rest, 0.125, 1)
    chosen = choose_l2(hybrid_model(max_iter=30, als_factors=16), train, valid, grid=(80.0,)).model
    plain = hybrid_model(max_iter=30, als_factors=16).fit(train)
    np.testing.assert_allclose(chosen.user_weights, plain.user_weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(chosen.item_weights, plain.item_weights, rtol=1e-6, atol=1e-9)
    towers = hybrid_model(max_iter=30, als_factors=16).fit(train, collaborative=False)
    customers = train["customerNumber"]
    other = towers.collaborative_factors(train[customers < customers.median()])
    with pytest.raises(ValueError, match="factors for .* users and .* items given"):
        towers.fit_collaborative(train, factors=other)
    with pytest.raises(ValueError, match="not the one these towers were fitted on"):
        towers.fit_collaborative(train, encoded=towers.encode_training(train))  # new encoders, not the towers'
    with pytest.raises(ValueError, match="made for with_ids=True, the model has with_ids=False"):
        hybrid_model(with_ids=False).fit(train, encoded=towers.encode_training(train))


def test_the_collaborative_part_searches_its_alpha_again_for_the_hybrid(hybrid):
    """From the ALS search's choice, the collaborative part's alpha row is climbed on the hybrid's
    own validation ranking (coverage floor, then NDCG@10); the model kept is the best tried, its
    setting is the one recorded for the next training, and only alpha differs from the baseline's."""
    from recsys_platform.ml.evaluation import ALS_GRID, setting_name
    from recsys_platform.ml.tuning import HYBRID_ROW

    _, run = hybrid
    assert HYBRID_ROW == "alpha"
    tried, floor = run.collaborative_by_setting, run.metrics["coverage_floor"]
    baseline = dict(run.tuned.als)
    alphas = sorted(ALS_GRID["alpha"])
    at = alphas.index(baseline["alpha"])
    # one value at a time from the ALS search's alpha: at least both neighbours
    assert {setting_name({**baseline, "alpha": a}) for a in alphas[max(0, at - 1):at + 2]} <= set(tried)
    assert set(tried) <= {setting_name({**baseline, "alpha": a}) for a in alphas}
    best = max(tried, key=lambda k: (tried[k]["coverage"] >= floor, tried[k]["ndcg"]))
    assert [k for k, v in tried.items() if v.get("chosen")] == [best] == [run.metrics["collaborative"]]
    chosen = [v for v in run.blend_ndcg_by_weight.values() if v.get("chosen")][0]
    assert (chosen["ndcg"], chosen["coverage"]) == (tried[best]["ndcg"], tried[best]["coverage"]), "the blend it was judged by"
    assert run.tuned.collaborative == {**baseline, "alpha": run.evaluated.settings.collaborative.alpha}


def test_the_collaborative_search_moves_to_the_better_ranking(hybrid):
    """Started at an alpha that ranks worse on validation (and is not in the row given: it joins
    it), the search moves to the better one and keeps that model; the model it started from is
    left as it was."""
    from recsys_platform.ml.evaluation import split, validation_inputs
    from recsys_platform.ml.tuning import choose_collaborative

    frame, _ = hybrid
    rest, _ = split(frame, 0.2, 0)
    train_split, valid = split(rest, 0.125, 1)
    start = HybridRecommender(RETAIL, HybridSettings(collaborative=CollaborativeSettings(16, regularization=100.0, alpha=1.0)))
    encoded = start.encode_training(train_split)
    start.fit(train_split, encoded=encoded)
    weights = start.item_weights
    choice = choose_collaborative(start, train_split, valid, encoded, 0.0, validation_inputs(RETAIL, train_split, valid),
                                  (10.0,))
    tried = choice.by_setting
    one, ten = (f"factors=16 regularization=100 alpha={a} iterations=30" for a in (1, 10))
    assert len(tried) == 2 and tried[ten]["ndcg"] > tried[one]["ndcg"]
    assert choice.model.settings.collaborative.alpha == 10.0 and tried[ten].get("chosen")
    assert choice.model.ranking == RankingWeights() and choice.blend[0].norm_power in NORM_POWERS
    # the value kept was searched at the start's norm power, then whole: its figures are the whole search's
    assert {v["norm_power"] for v in choice.blend[2].values()} == set(NORM_POWERS)
    whole = next(v for v in choice.blend[2].values() if v.get("chosen"))
    assert (whole["ndcg"], whole["coverage"]) == (tried[ten]["ndcg"], tried[ten]["coverage"])
    assert start.item_weights is weights and start.settings.collaborative.alpha == 1.0


def test_a_collaborative_part_tried_on_fitted_towers_is_that_of_a_whole_fit(frame):
    """`with_collaborative` keeps the towers and fits only the new part: the same vectors as
    fitting the model at that setting from scratch, and the model it came from unchanged."""
    from recsys_platform.ml.evaluation import split

    train, _ = split(frame, 0.2, 0)
    model = hybrid_model(max_iter=30, als_factors=16)
    encoded = model.encode_training(train)
    model.fit(train, encoded=encoded)
    before = model.item_weights.copy()
    other = CollaborativeSettings(factors=8, regularization=30.0, alpha=5.0, iterations=10)
    tried = model.with_collaborative(other, encoded)
    whole = model.with_settings(dim=tried.dim, collaborative=other).fit(train, encoded=encoded)
    assert tried.dim == model.tower_width + 2 + 8 and tried.settings.l2 == model.settings.l2
    np.testing.assert_allclose(tried.user_weights, whole.user_weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(tried.item_weights, whole.item_weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(model.item_weights, before)


def test_a_sampled_als_search_leaves_the_collaborative_part_at_its_choice(hybrid):
    """Past `tuning_max_ratings` the ALS search runs on a sample, and the part is not searched
    again (each setting would be an ALS fit and a blend search of the whole training split)."""
    frame, _ = hybrid
    run = train(frame, hybrid_model(als_factors=16), tuning_max_ratings=len(frame) // 4, baselines=False, refit=False)
    assert run.metrics["als_tuning_ratings"] < len(run.train)
    assert not run.collaborative_by_setting and run.tuned.collaborative == run.tuned.als


def test_the_one_hot_lookup_is_what_sklearn_transforms(trained):
    """`TowerEncoder._one_hot` replaces `OneHotEncoder.transform` for speed: the same columns,
    and a value unseen in training (an id, a category, a missing one) sets none."""
    model = trained[0]
    for encoder in (model.user_encoder, model.item_encoder):
        known = pd.DataFrame({c: pd.Series(list(cats[:3]), dtype=object)
                              for c, cats in zip(encoder.one_hot_columns, encoder.ohe.categories_)})
        unknown = known.iloc[:1].copy()
        unknown.iloc[0, 0], unknown.iloc[0, -1] = "never seen", "<null>"
        for strings in (known, unknown, pd.concat([known, unknown, known])):
            mine, theirs = encoder._one_hot(strings), encoder.ohe.transform(strings)
            assert mine.shape == theirs.shape
            assert (mine != theirs).nnz == 0
        assert len(encoder.one_hot_columns) >= 2, "a categorical and the id"
        assert encoder._one_hot(unknown).sum() == len(encoder.one_hot_columns) - 2, "no column for either unknown"


@pytest.mark.parametrize("with_ids", [True, False])
def test_the_compiled_kernels_solve_what_numpy_solves(frame, monkeypatch, with_ids):
    """Large tables train with `ml/kernels.py` (numba), small ones with numpy: one solve of each
    side, then a whole fit, must give the same weights, embeddings and error on both paths (here
    forced on the same small table), with or without id columns, and with binary and
    multi-valued features."""
    from recsys_platform.ml import solvers
    from recsys_platform.ml.solvers import TowerSide

    for data, spec in ((frame, RETAIL),
                       (_movies(), RecommenderSpec(user_id="user", item_id="movie", rating="stars",
                                                   user_categorical=["country"], user_numeric=[], user_binary=["vip"],
                                                   item_categorical=[], item_numeric=[], item_multi=["genres"]))):
        model = hybrid_model(spec, with_ids=with_ids, max_iter=20)
        encoded = model.encode_training(data)
        xu, xi, u_index, i_index = encoded.xu, encoded.xi, encoded.u_index, encoded.i_index
        target = data[spec.rating].astype(float).to_numpy() - 3.0
        other = np.random.default_rng(0).normal(0, 0.3, (xi.shape[0], model.tower_width + 1))
        reg = np.r_[np.full(model.tower_width, 80.0), 5.0]
        sides = [TowerSide(xu, u_index, encoded.user_encoder, i_index, target, compiled=compiled) for compiled in (False, True)]
        assert [hasattr(side, "indptr") for side in sides] == [False, True], "the kernels' layout only where compiled"
        solved = [side.solve(other, reg) for side in sides]
        np.testing.assert_allclose(solved[1][0], solved[0][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(solved[1][1], solved[0][1], rtol=1e-9, atol=1e-12)
        assert solved[1][2] == pytest.approx(solved[0][2], rel=1e-9)
        assert solved[0][2] > 0

        fits = []
        for threshold in (len(data) + 1, 0):  # numpy, then the kernels
            monkeypatch.setattr(solvers, "COMPILED_MIN_RATINGS", threshold)
            fits.append(hybrid_model(spec, with_ids=with_ids, max_iter=20).fit(data))
        assert fits[0].iterations == fits[1].iterations > 1
        np.testing.assert_allclose(fits[1].user_weights, fits[0].user_weights, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(fits[1].item_weights, fits[0].item_weights, rtol=1e-7, atol=1e-10)


def test_the_published_model_is_refit_on_every_rating_at_the_settings_chosen(hybrid):
    """Settings are chosen on validation and quality measured on the test split by the model
    fitted on the training split; what is published is the same settings refit on every rating."""
    frame, run = hybrid
    published, evaluated = run.model, run.evaluated
    assert sum(published.item_counts.values()) == len(frame) == run.metrics["published_ratings"]
    assert run.metrics["published_model"].startswith(f"refit on every rating ({len(frame)} ratings)")
    assert sum(evaluated.item_counts.values()) == len(run.train) < len(frame)
    assert published.settings == evaluated.settings
    assert (published.ranking.popularity, published.ranking.norm_power) == (
        evaluated.ranking.popularity, evaluated.ranking.norm_power)
    # the collaborative weight keeps its size relative to the base score's spread
    from recsys_platform.ml.evaluation import ranking_inputs
    from recsys_platform.ml.tuning import _WeightedScores

    users, items, _, _ = ranking_inputs(evaluated.spec, run.train, run.valid)
    relative = []
    for model in (evaluated, published):
        base, collaborative = _WeightedScores(model, users, items, model.ranking.norm_power).spreads()
        relative.append(model.ranking.collaborative * collaborative / base)
    assert relative[0] == pytest.approx(relative[1])
    assert not np.allclose(published.item_weights[:10], evaluated.item_weights[:10]), "a new fit, not a copy"


def test_the_ranking_baselines_are_tuned_over_a_wide_grid(hybrid):
    """ALS is searched over factors, regularization to the hundreds, alpha and iterations; the
    hybrid's collaborative part starts from the setting that search chose; EASE is tuned over its L2."""
    from recsys_platform.ml.evaluation import ALS_GRID, coordinate_search, setting_name

    _, run = hybrid
    tried = run.als_ndcg_by_setting
    assert max(ALS_GRID["regularization"]) >= 100
    best = max(tried, key=tried.get)
    assert run.metrics["als_params"] == best and best in run.collaborative_by_setting
    chosen = {k: float(v) for k, v in (part.split("=") for part in best.split())}
    for name, values in ALS_GRID.items():  # a peak of the grid: every neighbour was tried and scored lower
        at = list(values).index(chosen[name])
        for v in values[max(0, at - 1):at + 2]:
            assert tried[setting_name({**chosen, name: v})] <= tried[best]
    ease = run.ease_ndcg_by_l2  # climbed to a peak: the L2 chosen beats each neighbour tried
    assert len(ease) >= 3 and ease[f"l2={run.metrics['ease_l2']:g}"] == max(ease.values())
    assert run.metrics["ndcg@10"] >= max(run.metrics["ndcg@10_als"], run.metrics["ndcg@10_ease"])
    # the search climbs one parameter at a time until a pass changes nothing
    surface = {"a": (0, 1, 2, 3), "b": (0, 1, 2)}
    best, seen = coordinate_search(surface, {"a": 0, "b": 0}, lambda p: -(p["a"] - 2) ** 2 - (p["b"] - 1) ** 2)
    # pass one: the start, a up to 3 (worse), b up to 2 (worse); pass two: a's two values below
    # (2, 1), since a step looks two values ahead, and 3; b's neighbours were scored in pass one
    assert best == {"a": 2, "b": 1} and len(seen) == 1 + 3 + 2 + 3
    # a start outside a row: that row is scored whole
    best, seen = coordinate_search(surface, {"a": 0.5, "b": 1}, lambda p: -(p["a"] - 2) ** 2 - (p["b"] - 1) ** 2)
    assert best == {"a": 2, "b": 1} and {"a=0 b=1", "a=3 b=1"} <= set(seen)


def test_low_ratings_read_as_dislikes_lower_what_als_predicts_for_them(frame):
    """With `dislikes`, ALS takes ratings at or below it as preference 0 (implicit's negative
    confidence): it predicts less for the pairs disliked than ALS reading every rating as a like,
    while a rating above the threshold stays a like."""
    from recsys_platform.ml.collaborative import als_factors
    from recsys_platform.ml.encoding import training_rows

    users, items, u, i = training_rows(RETAIL, frame)
    ratings = frame[RETAIL.rating].astype(float).to_numpy()
    predicted = {}
    for dislikes in (0.0, 2.0):
        settings = CollaborativeSettings(factors=16, regularization=1.0, alpha=10.0, iterations=15, dislikes=dislikes)
        uf, itf = als_factors(u, i, ratings, len(users), len(items), settings, seed=0)
        predicted[dislikes] = np.einsum("nk,nk->n", uf[u], itf[i])
    low, high = ratings <= 2, ratings >= 4
    assert low.sum() > 100 and high.sum() > 100
    assert predicted[2.0][low].mean() < 0.5 < predicted[0.0][low].mean()
    assert predicted[2.0][high].mean() > 0.5


@pytest.mark.parametrize("factors", [16, 64])
def test_als_on_every_core_agrees_with_one_thread_and_leaves_blas_as_it_was(frame, factors):
    """From ONE_BLAS_THREAD_FROM_FACTORS factors a fit on every core runs BLAS on one thread
    (implicit's advice; twice as fast on MovieLens): its scores then agree with a one-thread fit's
    (where BLAS keeps its threads, beside the towers) to the rounding of BLAS's own sums, and
    BLAS's threads are given back afterwards. Below it the two are the same fit, bit for bit."""
    from threadpoolctl import threadpool_info

    from recsys_platform.ml.collaborative import ONE_BLAS_THREAD_FROM_FACTORS, als_factors
    from recsys_platform.ml.encoding import training_rows

    assert 16 < ONE_BLAS_THREAD_FROM_FACTORS <= 64  # the two cases fall on either side
    users, items, u, i = training_rows(RETAIL, frame)
    ratings = frame[RETAIL.rating].astype(float).to_numpy()
    settings = CollaborativeSettings(factors=factors, regularization=100.0, alpha=10.0, iterations=15)

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    every_core = als_factors(u, i, ratings, len(users), len(items), settings, seed=0, threads=0)
    assert blas_threads() == before
    one = als_factors(u, i, ratings, len(users), len(items), settings, seed=0, threads=1)
    scores, expected = (users_f @ items_f.T for users_f, items_f in (every_core, one))
    if factors < ONE_BLAS_THREAD_FROM_FACTORS:
        assert all(np.array_equal(a, b) for a, b in zip(every_core, one))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_a_grid_with_dislikes_gives_the_collaborative_part_its_choice(frame):
    """A collaborative grid may search `dislikes` too (the benchmark's "ALS + dislikes"): a
    parameter the start lacks is scored whole, the choice reaches the hybrid's collaborative part,
    its name and its published config."""
    grid = {"factors": (8,), "regularization": (100.0,), "alpha": (10.0,), "iterations": (15,), "dislikes": (0.0, 2.0)}
    run = train(frame, hybrid_model(als_factors=8), collaborative_grid=grid, baselines=False, refit=False)
    assert len(run.als_ndcg_by_setting) == 2
    best = max(run.als_ndcg_by_setting, key=run.als_ndcg_by_setting.get)
    dislikes = float(dict(part.split("=") for part in best.split()).get("dislikes", 0.0))  # unnamed: none
    c = run.model.settings.collaborative
    assert c.dislikes == dislikes and run.tuned.als.get("dislikes", 0.0) == dislikes
    assert ("dislikes=2" in run.metrics["collaborative"]) == (dislikes == 2.0)
    assert HybridRecommender.from_config(run.model.config()).settings.collaborative == c
    older = {k: v for k, v in run.model.config().items() if k != "als_dislikes"}  # a model published before
    assert HybridRecommender.from_config(older).settings.collaborative.dislikes == 0.0


def test_a_blend_row_search_chooses_what_ranking_the_whole_row_would():
    """`choose_blend`'s rows: with one NDCG peak along the popularity weights and the coverage
    floor met over one interval of them, the climb to the peak then `_row_best` choose the setting
    the whole row's rankings would, from fewer; past a bar, only settings that could not beat it
    are missed. A dip of one setting below the bar does not hide the best."""
    from recsys_platform.ml.evaluation import climb
    from recsys_platform.ml.tuning import _row_best

    def search(key, n, bar):
        return _row_best(key, n, climb(lambda i: key(i)[1], n, n // 2), bar)

    rng, n = np.random.default_rng(0), 11
    ranked = 0
    for _ in range(400):
        peak, lo, hi = rng.integers(n), *sorted(rng.integers(-2, n + 2, 2))
        ndcg = np.full(n, 0.3)
        for i in range(peak + 1, n):
            ndcg[i] = ndcg[i - 1] - rng.uniform(0.001, 0.05)
        for i in range(peak - 1, -1, -1):
            ndcg[i] = ndcg[i + 1] - rng.uniform(0.001, 0.05)
        seen: set[int] = set()

        def key(i, ndcg=ndcg, lo=lo, hi=hi, seen=seen):
            seen.add(i)
            return lo <= i <= hi, ndcg[i], -i

        whole = max(range(n), key=key)
        seen.clear()
        assert search(key, n, -np.inf) == whole
        ranked += len(seen)
        bar = rng.uniform(0.1, 0.3)
        chosen = search(key, n, bar)
        assert chosen == whole or not key(whole)[0] or ndcg[whole] < bar
    assert ranked < 0.75 * 400 * n
    # collaborative scale 10's cold-start benchmark, norm power 0, collaborative weight 8: the peak
    # (0.3440 at 0.25) misses the floor, 0.3414 at 0 is below the bar, and 0.3456 at -0.5 is the best
    row = [0.3429, 0.3456, 0.3429, 0.3414, 0.3440, 0.3421, 0.3355, 0.3271, 0.3232, 0.3178, 0.2969]
    assert search(lambda i: (i <= 1, row[i], -i), n, 0.3424) == 1


def test_a_refit_starts_from_the_evaluated_towers_and_needs_fewer_sweeps(hybrid):
    frame, run = hybrid
    evaluated = run.evaluated
    cold = evaluated.with_settings().fit(frame, collaborative=False)
    warm = evaluated.with_settings().fit(frame, collaborative=False, start_from=evaluated)
    assert warm.iterations < cold.iterations
    assert warm.training_log[-1] == pytest.approx(cold.training_log[-1], rel=5e-3), "the same minimum, to the tolerance"
    with pytest.raises(ValueError, match="start_from has towers of width 14, this model 12"):
        evaluated.with_settings(dim=evaluated.dim - 2).fit(frame, start_from=evaluated)


def test_the_ranking_search_tries_only_the_grid_given(hybrid):
    """`blend_grid` narrows the ranking weights' search (a narrow search for large data: docs/ml.md):
    every setting ranked, the collaborative part's alpha search's included, is in it."""
    frame, _ = hybrid
    grid = BlendGrid(weights=(1.0, 4.0), popularity=(-0.5, 0.0, 1.0), norm_powers=(0.5,))
    run = train(frame, hybrid_model(als_factors=16), blend_grid=grid, baselines=False, refit=False)
    ranked = {tuple(float(part.split("=")[1]) for part in name.split()) for name in run.blend_ndcg_by_weight}
    assert ranked and ranked <= {(c, p, n) for c in grid.weights for p in grid.popularity for n in grid.norm_powers}
    assert len(run.collaborative_by_setting) > 1, "the part's alpha was searched"
    t = run.tuned
    assert (t.relative_collaborative, t.popularity, t.norm_power) in ranked
    assert t.basis != train(frame, hybrid_model(als_factors=16), baselines=False, refit=False).tuned.basis
    with pytest.raises(ValueError, match="at least one value in each row; popularity has none"):
        BlendGrid(popularity=())


def test_the_coverage_floor_follows_the_baseline_unless_set(hybrid):
    """Unset, the ranking floor is the tuned ALS's validation coverage, however broad its lists
    (not capped at 20%: on a catalog of its 30 most rated products they cover more); a floor given
    is used as it is."""
    frame, run = hybrid
    from recsys_platform.ml.evaluation import tune_als

    popular = frame[frame["productCode"].isin(frame["productCode"].value_counts().index[:30])]
    broad = train(popular, hybrid_model(als_factors=16), baselines=False, refit=False)
    for each in (run, broad):
        search = tune_als(each.evaluated.spec, each.train, each.valid)
        assert each.metrics["coverage_floor"] == pytest.approx(search.validation_coverage)
    assert run.metrics["coverage_floor"] < 0.2 < broad.metrics["coverage_floor"]
    fixed = train(frame, hybrid_model(als_factors=16), min_coverage=0.3, collaborative_grid=None, baselines=False)
    assert fixed.metrics["coverage_floor"] == 0.3
    chosen = [v for v in fixed.blend_ndcg_by_weight.values() if v.get("chosen")][0]
    assert chosen["coverage"] >= 0.3


def test_a_later_training_refits_at_the_last_search_until_the_data_moves(hybrid):
    """The search's choices travel in the metrics (as the manifest keeps them); a training on
    about as many ratings refits at them without any grid, a training on other settings or on
    much more data searches again."""
    from recsys_platform.ml.evaluation import ALS_GRID
    from recsys_platform.ml.training import Tuned, search_basis

    frame, run = hybrid
    recorded = Tuned.from_json(json.loads(json.dumps(run.metrics["tuned"])), searched_at="v1")
    assert recorded == replace(run.tuned, searched_at="v1") and run.metrics["tuning"].startswith("searched")
    older = {k: v for k, v in run.metrics["tuned"].items() if k != "collaborative"}  # before the part's own search
    for damaged in ({**run.metrics["tuned"], "searched_on": "yesterday"}, {"l2": 80.0}, None, older):
        assert Tuned.from_json(damaged) is None, "no record, or a damaged or older one: the training searches"
    settings = run.evaluated.settings  # the searched ones; the search started from hybrid_model's
    start = hybrid_model(als_factors=16)
    again = train(frame.sample(frac=0.9, random_state=1), start, previous=recorded)
    assert again.metrics["tuning"].startswith("reused the search of v1")
    assert not again.als_ndcg_by_setting and not again.blend_ndcg_by_weight, "no grid ran"
    assert again.evaluated.settings == settings and again.metrics["als_params"] == run.metrics["als_params"]
    assert (again.evaluated.ranking.popularity, again.evaluated.ranking.norm_power) == (
        run.evaluated.ranking.popularity, run.evaluated.ranking.norm_power)
    assert again.tuned == recorded, "the record passes on, naming the search it came from"
    assert again.metrics["ndcg@10"] > again.metrics["ndcg@10_popularity"]
    # the relative collaborative weight carries over: the weight is that multiple of the new fit's unit
    from recsys_platform.ml.evaluation import validation_inputs
    from recsys_platform.ml.tuning import collaborative_unit

    ranked = validation_inputs(RETAIL, again.train, again.valid)
    unit = collaborative_unit(again.evaluated, ranked.users, ranked.items, again.evaluated.ranking.norm_power)
    assert again.evaluated.ranking.collaborative == pytest.approx(recorded.relative_collaborative * unit)
    basis = search_basis(RETAIL, start.settings, None, ALS_GRID, None)  # `train` passes no L2 grid
    assert basis == recorded.basis and recorded.reusable(basis, len(again.train))
    assert not recorded.reusable(basis, 2 * len(run.train)), "twice the ratings: search again"
    assert not recorded.reusable(basis, len(run.train), share=0.0), "retune_share 0: search every time"
    searched = dt.datetime.fromisoformat(recorded.searched_on)
    assert recorded.reusable(basis, len(run.train), now=searched + dt.timedelta(days=6))
    assert not recorded.reusable(basis, len(run.train), now=searched + dt.timedelta(days=8)), "a week old: search"
    assert not recorded.reusable(search_basis(RETAIL, start.settings, None, ALS_GRID, 0.05), len(run.train))
    assert not recorded.reusable(search_basis(RETAIL, start.settings, None, ALS_GRID, None, BlendGrid(weights=(0.0, 1.0))),
                                 len(run.train)), "another ranking grid: search again"
    assert not recorded.reusable(search_basis(RETAIL, replace(start.settings, dim=40), None, ALS_GRID, None),
                                 len(run.train))


def test_a_reused_search_refits_the_part_and_the_baseline_each_at_its_own_alpha(hybrid):
    """The record keeps the collaborative part's setting apart from the ALS baseline's: a training
    that reuses it fits the part at the part's alpha and the baseline at the baseline's."""
    from recsys_platform.ml.evaluation import setting_name

    frame, run = hybrid
    other = 5.0 if run.tuned.collaborative["alpha"] != 5.0 else 20.0
    recorded = replace(run.tuned, collaborative={**run.tuned.collaborative, "alpha": other})
    again = train(frame, hybrid_model(als_factors=16), previous=recorded, refit=False)
    assert again.metrics["tuning"].startswith("reused")
    assert again.evaluated.settings.collaborative.alpha == other != run.tuned.als["alpha"]
    assert again.metrics["als_params"] == setting_name(run.tuned.als)


def test_a_new_user_is_ranked_with_weights_chosen_for_new_users(hybrid):
    """Validation users embedded from their features alone choose a new user's weights; a user
    vector carries them only when its id is unknown, and the chosen pair is the best tried."""
    from recsys_platform.ml.tuning import NEW_USER_COLLABORATIVE, NEW_USER_PRIOR

    _, run = hybrid
    model = run.evaluated
    tried, r = run.new_user_ndcg, model.ranking
    assert len(tried) == len(NEW_USER_COLLABORATIVE) * len(NEW_USER_PRIOR)
    assert tried[f"collaborative={r.new_user_collaborative:g}x prior={r.new_user_prior:g}"] == max(tried.values())
    assert run.metrics["new_user_prior"] == r.new_user_prior == run.model.ranking.new_user_prior
    rows = run.test.head(3)
    known, new = model.user_embeddings(rows), model.user_embeddings(rows.assign(customerNumber=None))
    w = model.tower_width
    assert (known[:, w + 1] == 1.0).all() and (new[:, w + 1] == np.float32(r.new_user_prior)).all()
    towers = replace(r, collaborative=1.0, new_user_collaborative=1.0)
    plain = model.user_embeddings(rows.assign(customerNumber=None), ranking=towers)[:, w + 2:]
    np.testing.assert_allclose(new[:, w + 2:], r.collaborative * r.new_user_collaborative * plain, rtol=1e-5, atol=1e-6)
