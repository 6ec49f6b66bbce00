"""Bucket resources: a local folder (file://) or an S3 prefix (s3://), one interface."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from recsys_platform.storage.object_store import ObjectStore


class ObjectStoreResource(dg.ConfigurableResource):
    """A bucket: the data lake, the ML artifacts or the recommendations.

    `endpoint_url` points the S3 backend at an S3-compatible server (tests, MinIO); empty means
    AWS itself. `region` empty: boto3's chain, else us-east-1.
    """

    url: str
    endpoint_url: str = ""
    region: str = ""

    _store: ObjectStore | None = PrivateAttr(default=None)

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore.from_url(self.url, endpoint_url=self.endpoint_url, region=self.region)
        return self._store
