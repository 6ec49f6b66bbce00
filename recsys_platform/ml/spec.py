"""What a ratings table holds: its id and rating columns, and each side's features by kind.

A spec names columns and nothing else: it has no default column names, so any table fits it
(`datasets.MOVIELENS_SPEC` is a film example). `RETAIL` is the `classicmodels` preset the
platform's assets train with."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RecommenderSpec:
    """Which columns of a ratings table are the ids, the rating, and each side's features (by kind)."""

    user_id: str
    item_id: str
    rating: str
    user_categorical: list[str] = field(default_factory=list)
    user_numeric: list[str] = field(default_factory=list)
    item_categorical: list[str] = field(default_factory=list)
    item_numeric: list[str] = field(default_factory=list)
    # 0/1 flags, used as they are (standardising a rare flag would turn its 1 into ~29)
    user_binary: list[str] = field(default_factory=list)
    item_binary: list[str] = field(default_factory=list)
    # multi-valued features (multi-hot): a list per row, or one string of "|"-separated values
    user_multi: list[str] = field(default_factory=list)
    item_multi: list[str] = field(default_factory=list)

    def user_columns(self) -> list[str]:
        return [self.user_id, *self.user_categorical, *self.user_numeric, *self.user_binary, *self.user_multi]

    def item_columns(self) -> list[str]:
        return [self.item_id, *self.item_categorical, *self.item_numeric, *self.item_binary, *self.item_multi]


RETAIL = RecommenderSpec(
    user_id="customerNumber", item_id="productCode", rating="productRating",
    user_categorical=["city", "country"], user_numeric=["creditLimit"],
    item_categorical=["productLine", "productScale"], item_numeric=["quantityInStock", "buyPrice", "MSRP"])
"""The `classicmodels` training table (`ratings_ml_training`): customers and products."""
