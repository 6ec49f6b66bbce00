"""The Spark transform and the pre-publish quality rules, on small hand-made DataFrames."""

import pytest

from recsys_platform.batch.contract import COLUMN_NAMES
from recsys_platform.batch.engines.spark import build_training_data, find_violations

PRODUCTS = [("S10_1678", "Motorcycles", "1:10", 7933, 48.81, 95.70),
            ("S18_2625", "Motorcycles", "1:18", 4357, 24.23, 60.57)]
CUSTOMERS = [(103, "Nantes", None, "44000", "France", 21000.0),
             (112, "Las Vegas", "NV", "83030", "USA", 71800.0)]
RATINGS = [(103, "S10_1678", 5), (103, "S18_2625", 3), (112, "S10_1678", 4)]


@pytest.fixture
def frames(spark):
    def make(ratings=RATINGS, customers=CUSTOMERS, products=PRODUCTS):
        return (
            spark.createDataFrame(ratings, "customerNumber int, productCode string, productRating int"),
            spark.createDataFrame(customers, "customerNumber int, city string, state string, postalCode string, country string, creditLimit double"),
            spark.createDataFrame(products, "productCode string, productLine string, productScale string, quantityInStock int, buyPrice double, MSRP double"),
        )
    return make


def test_join_gives_the_13_contract_columns_in_order(frames):
    df = build_training_data(*frames())
    assert df.columns == COLUMN_NAMES
    assert len(COLUMN_NAMES) == 13
    rows = {(r.customerNumber, r.productCode): r for r in df.collect()}
    assert set(rows) == {(103, "S10_1678"), (103, "S18_2625"), (112, "S10_1678")}
    r = rows[(112, "S10_1678")]
    assert (r.city, r.state, r.country, r.creditLimit, r.productLine, r.MSRP, r.productRating) == (
        "Las Vegas", "NV", "USA", 71800.0, "Motorcycles", 95.70, 4)


def test_decimal_and_smallint_sources_are_cast_to_the_contract_types(spark, frames):
    ratings, customers, _ = frames()
    from decimal import Decimal

    products = spark.createDataFrame(
        [("S10_1678", "Motorcycles", "1:10", 7933, Decimal("48.81"), Decimal("95.70"))],
        "productCode string, productLine string, productScale string, quantityInStock smallint, buyPrice decimal(10,2), MSRP decimal(10,2)")
    types = dict(build_training_data(ratings, customers, products).dtypes)
    assert (types["quantityInStock"], types["buyPrice"], types["MSRP"]) == ("int", "double", "double")


def test_clean_source_has_no_violations(frames):
    assert find_violations(*frames()) == []


@pytest.mark.parametrize(("ratings", "check", "column", "example"), [
    (RATINGS + [(112, "S18_2625", 9)], "rating_range", "productRating", "productRating=9"),
    (RATINGS + [(112, "S18_2625", 0)], "rating_range", "productRating", "productRating=0"),
    (RATINGS + [(103, "S10_1678", 4)], "unique_ratings", "customerNumber, productCode", "productCode='S10_1678'"),
    (RATINGS + [(None, "S18_2625", 4)], "null_keys", "customerNumber", "customerNumber=None"),
    (RATINGS + [(112, None, 4)], "null_keys", "productCode", "productCode=None"),
    (RATINGS + [(112, "S99_0000", 4)], "referential_integrity", "productCode", "S99_0000"),
    (RATINGS + [(999, "S18_2625", 4)], "referential_integrity", "customerNumber", "customerNumber=999"),
])
def test_each_violation_names_check_table_column_and_an_example(frames, ratings, check, column, example):
    violations = find_violations(*frames(ratings=ratings))
    match = [v for v in violations if v.check == check and v.column == column]
    assert match, f"expected a {check} violation on {column}, got {violations}"
    assert match[0].table == "ratings"
    assert match[0].count == 1
    assert example in match[0].example
