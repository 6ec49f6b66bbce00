"""Model artifacts in a bucket: `<artifacts>/<version>/{model,scalers,embeddings}/`, a manifest
with checksums, and two pointers:

- `LATEST`, written last by `publish`: the newest complete version, the one the vector load takes;
- `CURRENT`, written by `set_current` once that version's vectors are active: the model and
  vectors that answer together. Serving follows the vector database's active version (one
  version per answer); `CURRENT` records it in the bucket for people and tools.

Nothing here unpickles: weights are `.npz` read with `allow_pickle=False`, encoders are JSON,
and every file's SHA-256 is checked against the manifest before it is used.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys_platform.errors import RecsysError
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.vectors.literal import parse_vector, vector_literal

CURRENT = "CURRENT"
LATEST = "LATEST"
MANIFEST = "manifest.json"
ITEM_EMBEDDINGS = "embeddings/item_embeddings.csv"
USER_EMBEDDINGS = "embeddings/user_embeddings.csv"
WEIGHTS = "model/weights.npz"
CONFIG = "model/config.json"
POPULARITY = "model/item_popularity.json"
SCALERS = {name: f"scalers/{name}.json" for name in ("user_ohe", "user_std_scaler", "item_ohe", "item_std_scaler")}


class ArtifactError(RecsysError):
    """An artifact is missing, corrupt or inconsistent with its manifest."""


def embeddings_csv(ids: Sequence, vectors: np.ndarray) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "embedding"])
    for i, v in zip(ids, vectors):
        w.writerow([i, vector_literal(v)])
    return buf.getvalue().encode()


def read_embeddings_csv(data: bytes, dim: int, name: str) -> tuple[list[str], np.ndarray]:
    """Parse and validate: header, dimension, finite values, unique ids."""
    reader = csv.reader(io.StringIO(data.decode()))
    header = next(reader, None)
    if header != ["id", "embedding"]:
        raise ArtifactError(f"{name}: header is {header}, expected ['id', 'embedding']")
    ids, vectors, seen = [], [], set()
    for line, row in enumerate(reader, start=2):
        if len(row) != 2:
            raise ArtifactError(f"{name} line {line}: expected 2 fields, got {len(row)}")
        if row[0] in seen:
            raise ArtifactError(f"{name} line {line}: duplicate id {row[0]!r}")
        seen.add(row[0])
        ids.append(row[0])
        try:
            vectors.append(parse_vector(row[1], dim, f"{name} line {line} (id {row[0]})"))
        except ValueError as e:
            raise ArtifactError(str(e)) from None
    return ids, np.vstack(vectors) if vectors else np.zeros((0, dim), np.float32)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_version(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


@dataclass
class Publication:
    """What `publish` wrote: the version and its manifest."""

    version: str
    manifest: dict


def publish(store: ObjectStore, model, users, items, metrics: dict,
            training_data_version: str, version: str | None = None) -> Publication:
    """Write every artifact of a fitted `model` (an `ml.hybrid.HybridRecommender`) under
    `<version>/`, the manifest, then `LATEST` (last).

    Nothing serves the new version yet: it serves once its vectors are loaded and activated
    (then `set_current` moves `CURRENT`)."""
    import sklearn

    version = version or new_version()
    spec = model.spec
    user_ohe, user_std = model.user_encoder.to_json()
    item_ohe, item_std = model.item_encoder.to_json()
    weights = io.BytesIO()
    np.savez(weights, user_weights=model.user_weights, item_weights=model.item_weights)
    files = {
        WEIGHTS: weights.getvalue(),
        CONFIG: json.dumps(model.config(), indent=2).encode(),
        POPULARITY: json.dumps(model.item_counts).encode(),
        SCALERS["user_ohe"]: json.dumps(user_ohe).encode(),
        SCALERS["user_std_scaler"]: json.dumps(user_std).encode(),
        SCALERS["item_ohe"]: json.dumps(item_ohe).encode(),
        SCALERS["item_std_scaler"]: json.dumps(item_std).encode(),
        ITEM_EMBEDDINGS: embeddings_csv(items[spec.item_id].tolist(), model.item_embeddings(items)),
        USER_EMBEDDINGS: embeddings_csv(users[spec.user_id].tolist(), model.user_embeddings(users)),
    }
    for name, data in files.items():
        store.write_bytes(f"{version}/{name}", data)
    manifest = {
        "version": version, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "dim": model.dim, "metric": "inner_product", "items": int(len(items)), "users": int(len(users)),
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()},
        "metrics": metrics, "training_data_version": training_data_version,
        "libraries": {"python": platform.python_version(), "numpy": np.__version__,
                      "scikit-learn": sklearn.__version__},
    }
    store.write_bytes(f"{version}/{MANIFEST}", json.dumps(manifest, indent=2, default=float).encode())
    store.write_bytes(LATEST, version.encode())
    return Publication(version, manifest)


def _pointer(store: ObjectStore, name: str, missing: str) -> str:
    if not store.exists(name):
        raise ArtifactError(f"{missing}: {store.uri(name)} does not exist")
    version = store.read_bytes(name).decode().strip()
    if not store.exists(f"{version}/{MANIFEST}"):
        raise ArtifactError(f"{name} names version {version!r}, which has no manifest in {store.uri()}")
    return version


def latest_version(store: ObjectStore) -> str:
    """The newest published version (its vectors may not be active yet)."""
    return _pointer(store, LATEST, "no model published yet")


def current_version(store: ObjectStore) -> str:
    """The version whose model and vectors serve together."""
    return _pointer(store, CURRENT, "no model version serves yet")


def serving_version(store: ObjectStore) -> str | None:
    """`current_version`, or None when no version serves (or its pointer is unreadable): what a
    reader that judges against the serving model, if there is one, asks."""
    try:
        return current_version(store)
    except ArtifactError:
        return None


def set_current(store: ObjectStore, version: str) -> None:
    """Record that `version` serves (called after its vectors are activated)."""
    if not store.exists(f"{version}/{MANIFEST}"):
        raise ArtifactError(f"cannot make {version!r} current: it has no manifest in {store.uri()}")
    store.write_bytes(CURRENT, version.encode())


def read_verified(store: ObjectStore, version: str, manifest: dict, name: str) -> bytes:
    entry = manifest["files"].get(name)
    if entry is None:
        raise ArtifactError(f"{version}: the manifest lists no {name}")
    if not store.exists(f"{version}/{name}"):
        raise ArtifactError(f"{version}: {name} is missing")
    data = store.read_bytes(f"{version}/{name}")
    if _sha256(data) != entry["sha256"]:
        raise ArtifactError(f"{version}: checksum mismatch for {name} (the file was changed after publishing)")
    return data


def read_manifest(store: ObjectStore, version: str | None = None) -> tuple[str, dict]:
    version = version or latest_version(store)
    try:
        return version, json.loads(store.read_bytes(f"{version}/{MANIFEST}"))
    except (OSError, FileNotFoundError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{version}: unreadable manifest ({e})") from None


@dataclass(frozen=True)
class ModelParts:
    """A published model as plain data: its settings, encoders' parameters and weights, read
    without any training library, each file checked against the manifest. Training rebuilds a
    `HybridRecommender` from it (`HybridRecommender.load`), serving an `InferenceModel`."""

    version: str
    config: dict                   # model/config.json
    scalers: dict[str, dict]       # user_ohe, user_std_scaler, item_ohe, item_std_scaler
    user_weights: np.ndarray
    item_weights: np.ndarray
    item_counts: dict[str, int]    # training ratings per item id (the popularity prior's counts)


def read_model(store: ObjectStore, version: str | None = None) -> ModelParts:
    """The model of `version` (default: LATEST), every file checked against the manifest."""
    version, manifest = read_manifest(store, version)
    config = json.loads(read_verified(store, version, manifest, CONFIG))
    scalers = {k: json.loads(read_verified(store, version, manifest, path)) for k, path in SCALERS.items()}
    with np.load(io.BytesIO(read_verified(store, version, manifest, WEIGHTS)), allow_pickle=False) as npz:
        user_weights, item_weights = npz["user_weights"], npz["item_weights"]
    item_counts = json.loads(read_verified(store, version, manifest, POPULARITY))
    return ModelParts(version, config, scalers, user_weights, item_weights, item_counts)


def load_embeddings(store: ObjectStore, version: str | None = None) -> tuple[str, dict, dict[str, tuple[list[str], np.ndarray]]]:
    """Both embedding tables of `version`, verified (checksum, header, dimension, NaN, duplicates)."""
    version, manifest = read_manifest(store, version)
    out = {}
    for kind, name in (("item", ITEM_EMBEDDINGS), ("user", USER_EMBEDDINGS)):
        out[kind] = read_embeddings_csv(read_verified(store, version, manifest, name), manifest["dim"], name)
    return version, manifest, out


def item_catalogs(store: ObjectStore, versions) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Each version's item ids (from its verified embeddings), and the versions that cannot be
    read with the reason: what judges recommended or interacted ids against their model."""
    catalogs, unreadable = {}, {}
    for version in versions:
        try:
            catalogs[version] = set(load_embeddings(store, version)[2]["item"][0])
        except ArtifactError as e:
            unreadable[version] = str(e)
    return catalogs, unreadable
