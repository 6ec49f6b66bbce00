"""Bucket resources: a local folder (file://) or an S3 prefix (s3://), one interface."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from recsys_platform.storage.object_store import ObjectStore


class ObjectStoreResource(dg.ConfigurableResource):
    """A bucket: the data lake, the ML artifacts or the recommendations.

    `endpoint_url` points the S3 backend at an S3-compatible server (tests, MinIO); empty means
    AWS itself (or AWS_ENDPOINT_URL from the environment).
    """

    url: str
    endpoint_url: str = ""

    _store: ObjectStore | None = PrivateAttr(default=None)

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore.from_url(self.url, endpoint_url=self.endpoint_url)
        return self._store
