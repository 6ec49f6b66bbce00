import numpy as np
import pytest
import sqlalchemy as sa

from recsys_platform.batch.seed import synthetic as seed_mod
from recsys_platform.batch.source import SourceDatabase


def test_same_seed_and_scale_give_identical_data():
    assert seed_mod.generate(1, seed=7) == seed_mod.generate(1, seed=7)
    assert seed_mod.generate(1, seed=7)["ratings"] != seed_mod.generate(1, seed=8)["ratings"]


def test_scale_one_is_the_labs_size():
    data = seed_mod.generate(1)
    assert len(data["customers"]) == 122
    assert len(data["products"]) == 110
    assert 1_500 <= len(data["ratings"]) <= 5_000
    assert {r["productLine"] for r in data["productlines"]} == {p[0] for p in seed_mod.PRODUCT_LINES}


def test_ratings_come_from_purchases_and_respect_the_contract():
    data = seed_mod.generate(2, seed=3)
    order_customer = {o["orderNumber"]: o["customerNumber"] for o in data["orders"]}
    bought = {(order_customer[d["orderNumber"]], d["productCode"]) for d in data["orderdetails"]}
    pairs = [(r["customerNumber"], r["productCode"]) for r in data["ratings"]]
    assert len(pairs) == len(set(pairs)), "one rating per customer and product"
    assert set(pairs) == bought, "every rating is for something the customer bought"
    assert {r["productRating"] for r in data["ratings"]} <= {1, 2, 3, 4, 5}


def test_ratings_carry_learnable_structure():
    """Expensive models are rated higher by customers with high credit limits, and lower by
    the others: a content model can learn it, uniform noise would show no correlation."""
    data = seed_mod.generate(5, seed=11)
    credit = {c["customerNumber"]: c["creditLimit"] for c in data["customers"]}
    msrp = {p["productCode"]: p["MSRP"] for p in data["products"]}
    c = np.array([credit[r["customerNumber"]] for r in data["ratings"]])
    m = np.array([msrp[r["productCode"]] for r in data["ratings"]])
    y = np.array([r["productRating"] for r in data["ratings"]], dtype=float)
    interaction = (c - c.mean()) / c.std() * (m - m.mean()) / m.std()
    assert np.corrcoef(interaction, y)[0, 1] > 0.15
    assert y.std() > 0.8, "ratings use the scale, not one value"


def test_seed_refuses_to_overwrite_unless_replace(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    seed_mod.seed(engine)
    with pytest.raises(FileExistsError, match="--replace"):
        seed_mod.seed(engine)
    summary = seed_mod.seed(engine, seed=5, replace=True)
    assert summary.counts["ratings"] == len(seed_mod.generate(1, seed=5)["ratings"])


def test_scale_must_be_positive():
    with pytest.raises(ValueError, match="scale must be positive"):
        seed_mod.generate(0)


@pytest.mark.mariadb
def test_mariadb_and_sqlite_hold_the_same_data(mysql_url, tmp_path):
    """Same seed, two engines: every customer's rating version is identical."""
    seed_mod.seed(sa.create_engine(mysql_url))
    seed_mod.seed(sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    maria = SourceDatabase(mysql_url).customer_versions()
    lite = SourceDatabase(f"sqlite:///{tmp_path / 'db.sqlite'}").customer_versions()
    assert maria == lite
    assert len(maria) == 122


def _feature_r2(frame) -> float:
    """How much of the ratings a linear model of the features alone explains (in-sample R²)."""
    import pandas as pd
    from sklearn.linear_model import Ridge

    x = pd.get_dummies(frame[["city", "country", "productLine", "productScale"]].astype(str)).astype(float)
    for c in ("creditLimit", "buyPrice", "MSRP", "quantityInStock"):
        x[c] = (frame[c] - frame[c].mean()) / (frame[c].std() + 1e-9)
    x["price_x_credit"] = x["MSRP"] * x["creditLimit"]
    return Ridge(alpha=1.0).fit(x, frame["productRating"]).score(x, frame["productRating"])


def test_the_collaborative_mode_hides_its_structure_from_the_features():
    """`seed --mode collaborative`: latent tastes the features explain only in part, a long tail."""
    features = seed_mod.training_table(2)
    collaborative = seed_mod.training_table(2, mode="collaborative")
    assert collaborative.equals(seed_mod.training_table(2, mode="collaborative")), "deterministic"
    same = seed_mod.generate(2)
    other = seed_mod.generate(2, mode="collaborative")
    assert other["customers"] == same["customers"] and other["products"] == same["products"]
    assert _feature_r2(collaborative) < 0.5 * _feature_r2(features)
    counts = collaborative["productCode"].value_counts()
    assert counts.iloc[0] >= 5 * counts.median(), "a long tail: the top item far above the median one"
    assert counts.head(len(counts) // 10).sum() >= 0.25 * counts.sum()
    with pytest.raises(ValueError, match="mode must be one of features, collaborative"):
        seed_mod.generate(1, mode="random")
