import pytest
import sqlalchemy as sa

from recsys_platform.batch.contract import Selection
from recsys_platform.batch.source import SourceDatabase, masked_url
from recsys_platform.errors import DataQualityError, SourceSchemaError, SourceUnavailableError


def _exec(settings, *statements):
    engine = sa.create_engine(settings.source_url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def test_seeded_source_passes_validation(settings):
    SourceDatabase(settings.source_url).validate_schema()


def test_missing_table_is_named(settings):
    _exec(settings, "DROP TABLE ratings")
    with pytest.raises(SourceSchemaError, match="table ratings is missing"):
        SourceDatabase(settings.source_url).validate_schema()


def test_missing_column_is_named_with_what_was_found(settings):
    _exec(settings, "ALTER TABLE products DROP COLUMN MSRP")
    with pytest.raises(SourceSchemaError, match=r"column products\.MSRP is missing \(found: .*buyPrice"):
        SourceDatabase(settings.source_url).validate_schema()


def test_wrong_column_type_is_named(settings):
    _exec(settings,
          "ALTER TABLE ratings RENAME TO ratings_old",
          "CREATE TABLE ratings (customerNumber INTEGER, productCode VARCHAR(15), productRating VARCHAR(10))",
          "INSERT INTO ratings SELECT * FROM ratings_old")
    with pytest.raises(SourceSchemaError, match=r"column ratings\.productRating has type VARCHAR\(10\), expected integer"):
        SourceDatabase(settings.source_url).validate_schema()


def test_a_value_of_the_wrong_type_names_table_column_and_value(settings):
    # SQLite's dynamic typing lets a string into an INTEGER column: the reader must say so.
    _exec(settings, "UPDATE ratings SET productRating = 'five' WHERE rowid = 1")
    with pytest.raises(DataQualityError, match=r"column ratings\.productRating holds a value that is not int32: 'five'"):
        SourceDatabase(settings.source_url).read_arrow("ratings")


def test_unreachable_database_error_masks_the_password():
    db = SourceDatabase("mysql+pymysql://recsys:s3cret-pw@127.0.0.1:1/classicmodels")
    with pytest.raises(SourceUnavailableError) as err:
        db.validate_schema()
    assert "s3cret-pw" not in str(err.value)
    assert "mysql+pymysql://recsys:***@127.0.0.1:1/classicmodels" in str(err.value)


def test_masked_url_hides_only_the_password():
    assert masked_url("mysql+pymysql://u:pw@h:3306/db") == "mysql+pymysql://u:***@h:3306/db"
    assert masked_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_customer_version_changes_only_for_the_changed_customer(settings):
    db = SourceDatabase(settings.source_url)
    before = db.customer_versions()
    customer = sorted(before)[3]
    _exec(settings, f"UPDATE ratings SET productRating = 6 - productRating WHERE customerNumber = {customer}")
    after = db.customer_versions()
    assert {c for c in before if before[c] != after[c]} == {customer}


def test_arrow_extraction_filters_by_customer_and_bucket(settings):
    db = SourceDatabase(settings.source_url)
    customers = db.customer_numbers()[:3]
    table = db.read_arrow("ratings", Selection.of_customers(customers))
    assert set(table["customerNumber"].to_pylist()) == set(customers)
    assert table.num_rows == db.count_ratings(Selection.of_customers(customers))
    bucket = db.read_arrow("ratings", Selection.of_buckets(4, [1, 3]))
    assert {c % 4 for c in bucket["customerNumber"].to_pylist()} == {1, 3}
    assert db.read_arrow("ratings", Selection.of_customers([])).num_rows == 0


def test_a_key_on_customer_and_product_is_the_only_rule_the_source_enforces(settings):
    db = SourceDatabase(settings.source_url)
    assert db.enforced_rules() == {"unique_ratings": "the source's primary key (customerNumber, productCode)"}
    _exec(settings, "CREATE TABLE r2 AS SELECT * FROM ratings", "DROP TABLE ratings", "ALTER TABLE r2 RENAME TO ratings")
    assert db.enforced_rules() == {}, "no key: duplicates are possible and must be checked"
    _exec(settings, "CREATE INDEX by_pair ON ratings (customerNumber, productCode)")
    assert db.enforced_rules() == {}, "an index that is not unique guarantees nothing"
    _exec(settings, "CREATE UNIQUE INDEX one_rating ON ratings (productCode, customerNumber)")
    assert db.enforced_rules() == {"unique_ratings": "the source's unique index one_rating (productCode, customerNumber)"}


def test_mariadb_reports_its_primary_key(mysql_url):
    from recsys_platform.batch.seed.schema import metadata

    metadata.create_all(sa.create_engine(mysql_url))
    assert SourceDatabase(mysql_url).enforced_rules() == {
        "unique_ratings": "the source's primary key (customerNumber, productCode)"}


@pytest.mark.parametrize("engine", ["sqlite", "mariadb"])
def test_purchases_are_order_lines_and_ratings_never_a_cancelled_order(engine, request, settings):
    from recsys_platform.batch.seed import seed

    url = settings.source_url
    if engine == "mariadb":
        url = request.getfixturevalue("mysql_url")
        seed(sa.create_engine(url))
    with sa.create_engine(url).begin() as conn:
        rated = set(conn.execute(sa.text("SELECT customerNumber, productCode FROM ratings")).fetchall())
        customer = min(c for c, _ in rated)
        shipped, cancelled = [p for (p,) in conn.execute(sa.text("SELECT productCode FROM products ORDER BY 1"))
                              if (customer, p) not in rated][:2]
        last = conn.execute(sa.text("SELECT MAX(orderNumber) FROM orders")).scalar_one()
        for number, product, status in ((last + 1, shipped, "Shipped"), (last + 2, cancelled, "Cancelled")):
            conn.execute(sa.text("INSERT INTO orders (orderNumber, orderDate, requiredDate, status, customerNumber) "
                                 "VALUES (:n, '2026-11-30', '2026-12-07', :s, :c)"),
                         {"n": number, "s": status, "c": customer})
            conn.execute(sa.text("INSERT INTO orderdetails (orderNumber, productCode, quantityOrdered, priceEach, "
                                 "orderLineNumber) VALUES (:n, :p, 1, 9.99, 1)"), {"n": number, "p": product})
        ordered = set(conn.execute(sa.text(
            "SELECT o.customerNumber, d.productCode FROM orders o JOIN orderdetails d ON d.orderNumber = o.orderNumber "
            "WHERE o.status <> 'Cancelled'")).fetchall())
    db = SourceDatabase(url)
    pairs, sources = db.purchases()
    db.dispose()
    assert sources == ["ratings", "orders"]
    assert pairs == sorted(set(pairs)), "distinct, ascending"
    assert (customer, shipped) in pairs, "an order line with no rating is a purchase"
    assert (customer, cancelled) not in pairs, "a cancelled order is not"
    assert set(pairs) == rated | ordered


def test_purchases_without_order_tables_are_the_ratings(settings):
    _exec(settings, "DROP TABLE orderdetails", "DROP TABLE orders")
    db = SourceDatabase(settings.source_url)
    pairs, sources = db.purchases()
    assert sources == ["ratings"] and len(pairs) == db.count_ratings()
