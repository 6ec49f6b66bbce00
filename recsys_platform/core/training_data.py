"""The lab's Glue transform in PySpark: ratings joined with product and customer features.

Pure functions from DataFrames to DataFrames (plus the quality rules), so that Spark local,
AWS Glue and the tests all run exactly this code.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

# The 13 columns of `ratings_ml_training`, in order, with their types.
TRAINING_SCHEMA = T.StructType([
    T.StructField("customerNumber", T.IntegerType(), False),
    T.StructField("city", T.StringType(), True),
    T.StructField("state", T.StringType(), True),
    T.StructField("postalCode", T.StringType(), True),
    T.StructField("country", T.StringType(), True),
    T.StructField("creditLimit", T.DoubleType(), True),
    T.StructField("productCode", T.StringType(), False),
    T.StructField("productLine", T.StringType(), True),
    T.StructField("productScale", T.StringType(), True),
    T.StructField("quantityInStock", T.IntegerType(), True),
    T.StructField("buyPrice", T.DoubleType(), True),
    T.StructField("MSRP", T.DoubleType(), True),
    T.StructField("productRating", T.IntegerType(), False),
])
TRAINING_COLUMNS = [f.name for f in TRAINING_SCHEMA.fields]
COLUMN_DESCRIPTIONS = {
    "customerNumber": "customer id (the partition key: in the folder name, not in the file)",
    "city": "customer's city", "state": "customer's state (null outside federal countries)",
    "postalCode": "customer's postal code", "country": "customer's country",
    "creditLimit": "customer's credit limit", "productCode": "product id, e.g. S10_1678",
    "productLine": "product line, e.g. Classic Cars", "productScale": "model scale, e.g. 1:18",
    "quantityInStock": "units in stock", "buyPrice": "wholesale price", "MSRP": "retail price",
    "productRating": "the customer's rating of the product, 1 to 5",
}
RATING_MIN, RATING_MAX = 1, 5
BUCKET_COLUMN = "customer_bucket"


def build_training_data(ratings: DataFrame, customers: DataFrame, products: DataFrame) -> DataFrame:
    """`ratings r join products p using productCode join customers c using customerNumber`,
    projected and cast to TRAINING_SCHEMA."""
    joined = ratings.join(products, on="productCode", how="inner").join(
        customers, on="customerNumber", how="inner")
    return joined.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in TRAINING_SCHEMA.fields])


def with_bucket(df: DataFrame, buckets: int) -> DataFrame:
    """Adds `customer_bucket = customerNumber mod buckets`, the same rule the source filter uses."""
    return df.withColumn(BUCKET_COLUMN, F.pmod(F.col("customerNumber"), F.lit(buckets)).cast("int"))


@dataclass(frozen=True)
class Violation:
    """One broken rule: which check, where, how many rows, and one example."""

    check: str
    table: str
    column: str
    count: int
    example: str

    def __str__(self) -> str:
        return f"{self.check}: {self.count} row(s) of {self.table}.{self.column}, e.g. {self.example}"

    def as_dict(self) -> dict:
        return {"check": self.check, "table": self.table, "column": self.column,
                "count": self.count, "example": self.example}


def _example(df: DataFrame) -> str:
    row = df.limit(1).collect()[0].asDict()
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def find_violations(ratings: DataFrame, customers: DataFrame, products: DataFrame) -> list[Violation]:
    """The source rules the training data depends on; an empty list means it is safe to publish.

    Counts come from three passes (one aggregate, one group-by, one pair of anti joins); an
    example row is fetched only for a rule that is broken.
    """
    out: list[Violation] = []
    out_of_range = (F.col("productRating") < RATING_MIN) | (F.col("productRating") > RATING_MAX)
    rules = {
        ("null_keys", "customerNumber"): F.col("customerNumber").isNull(),
        ("null_keys", "productCode"): F.col("productCode").isNull(),
        ("null_keys", "productRating"): F.col("productRating").isNull(),
        ("rating_range", "productRating"): out_of_range,
    }
    counts = ratings.agg(*[F.sum(F.when(cond, 1).otherwise(0)).alias(f"{c}|{col}")
                           for (c, col), cond in rules.items()]).collect()[0].asDict()
    for (check, column), cond in rules.items():
        n = counts[f"{check}|{column}"] or 0
        if n:
            out.append(Violation(check, "ratings", column, n, _example(ratings.where(cond))))

    dupes = ratings.groupBy("customerNumber", "productCode").count().where(F.col("count") > 1).cache()
    n = dupes.count()
    if n:
        out.append(Violation("unique_ratings", "ratings", "customerNumber, productCode", n, _example(dupes)))
    dupes.unpersist()

    orphans = {
        "productCode": ratings.join(products.select("productCode"), "productCode", "left_anti")
        .where(F.col("productCode").isNotNull()),
        "customerNumber": ratings.join(customers.select("customerNumber"), "customerNumber", "left_anti")
        .where(F.col("customerNumber").isNotNull()),
    }
    tagged = [df.select(F.lit(col).alias("_rule")) for col, df in orphans.items()]
    orphan_counts = {r["_rule"]: r["count"] for r in tagged[0].unionByName(tagged[1]).groupBy("_rule").count().collect()}
    for column, df in orphans.items():
        if orphan_counts.get(column):
            out.append(Violation("referential_integrity", "ratings", column, orphan_counts[column], _example(df)))
    return out
