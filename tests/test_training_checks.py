"""Every contract check of ratings_ml_training can fail, and says why."""

import pyarrow as pa
import pytest

from recsys_platform.batch import checks as tc

GOOD = pa.table({
    "city": ["Nantes", "NYC"], "state": [None, "NY"], "postalCode": ["44000", "10022"],
    "country": ["France", "USA"], "creditLimit": [21000.0, 0.0], "productCode": ["S10_1678", "S18_2625"],
    "productLine": ["Motorcycles", "Motorcycles"], "productScale": ["1:10", "1:18"],
    "quantityInStock": pa.array([7933, 4357], pa.int32()), "buyPrice": [48.81, 24.23], "MSRP": [95.7, 60.57],
    "productRating": pa.array([5, 3], pa.int32()), "customerNumber": pa.array([103, 112], pa.int32()),
})
PRODUCTS = {"S10_1678", "S18_2625"}


def _outcomes(table, products=PRODUCTS, source_rows=2):
    return {o.name: o for o in tc.evaluate(table, products, source_rows)}


def test_good_data_passes_every_check():
    outcomes = _outcomes(GOOD)
    assert set(outcomes) == set(tc.ALL_CHECKS)
    assert all(o.passed for o in outcomes.values()), outcomes


def _replace(table, name, values):
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type))


@pytest.mark.parametrize(("mutate", "check", "message"), [
    (lambda t: _replace(t, "productRating", [5, 6]), tc.RATING_RANGE, "1 rating(s) outside 1..5, e.g. productCode='S18_2625', productLine='Motorcycles', productRating=6, customerNumber=112"),
    (lambda t: _replace(t, "productCode", ["S10_1678", None]), tc.NULL_KEYS, "null keys: productCode=1"),
    (lambda t: _replace(t, "productCode", ["S10_1678", "S99_0001"]), tc.PRODUCTS_EXIST, "1 row(s) name a product missing from products, e.g. productCode='S99_0001'"),
    (lambda t: _replace(t, "productCode", ["S10_1678", "S10_1678"]).set_column(
        12, "customerNumber", pa.array([103, 103], pa.int32())), tc.UNIQUE, "1 duplicated (customerNumber, productCode) pair(s)"),
    (lambda t: t.drop_columns(["MSRP"]), tc.SCHEMA, "missing columns ['MSRP']"),
    (lambda t: t.append_column("extra", pa.array([1, 2])), tc.SCHEMA, "unexpected columns ['extra']"),
    (lambda t: t.set_column(5, "creditLimit", pa.array(["a", "b"])), tc.SCHEMA, "creditLimit is string, expected double"),
])
def test_each_check_fails_on_its_violation(mutate, check, message):
    outcome = _outcomes(mutate(GOOD))[check]
    assert not outcome.passed
    assert message in outcome.message


def test_row_count_must_equal_the_source():
    outcome = _outcomes(GOOD, source_rows=3)[tc.ROW_COUNT]
    assert not outcome.passed
    assert outcome.message == "lake has 2 rows, source has 3"


def test_missing_key_column_fails_the_dependent_checks_instead_of_crashing():
    outcomes = _outcomes(GOOD.drop_columns(["productRating"]))
    assert not outcomes[tc.SCHEMA].passed
    assert not outcomes[tc.RATING_RANGE].passed
    assert "cannot evaluate" in outcomes[tc.RATING_RANGE].message
