"""Buckets as one interface over pyarrow's filesystem layer: a local folder or S3.

pyarrow.fs is already a dependency (Parquet), reads and lists S3 with a custom endpoint, and
avoids s3fs/aiobotocore, whose botocore pins fight boto3's. The two backends differ only in how a
write is made atomic: a local write goes to a temporary name and is renamed into place; an S3
upload (through boto3) is atomic per object by itself.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow.fs as pafs


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's root, with forward slashes
    size: int
    mtime_ns: int | None


class ObjectStore(ABC):
    """A bucket (or folder) rooted at `url`; keys are relative, '/'-separated paths."""

    def __init__(self, url: str, fs: pafs.FileSystem, root: str):
        self.url = url.rstrip("/")
        self.fs = fs
        self.root = root.rstrip("/")

    @staticmethod
    def from_url(url: str, endpoint_url: str = "", region: str = "") -> ObjectStore:
        parts = urlsplit(url)
        if parts.scheme == "file":
            return LocalObjectStore(url)
        if parts.scheme == "s3":
            return S3ObjectStore(url, endpoint_url=endpoint_url, region=region)
        raise ValueError(f"unsupported object store URL {url!r}: expected file:// or s3://")

    endpoint_url = ""  # an S3-compatible endpoint, for the S3 backend

    def path(self, key: str = "") -> str:
        """The filesystem path of `key` for pyarrow (no scheme)."""
        return f"{self.root}/{key.strip('/')}" if key.strip("/") else self.root

    def uri(self, key: str = "") -> str:
        return f"{self.url}/{key.strip('/')}" if key.strip("/") else self.url

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type != pafs.FileType.NotFound

    def read_bytes(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.path(key)) as f:
            return f.read()

    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        """Files under `prefix` (a folder key), sorted by key; empty when it does not exist."""
        base = self.path(prefix)
        info = self.fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type == pafs.FileType.File:
            infos = [info]
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive))
        out = [
            ObjectInfo(i.path[len(self.root) + 1 :], i.size or 0, i.mtime_ns)
            for i in infos
            if i.type == pafs.FileType.File
        ]
        return sorted(out, key=lambda o: o.key)

    def list_dirs(self, prefix: str = "") -> list[str]:
        """Immediate sub-folder names under `prefix`."""
        base = self.path(prefix)
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.delete_file(self.path(key))

    def delete_dir(self, prefix: str) -> None:
        if self.fs.get_file_info(self.path(prefix)).type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(prefix))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key` atomically."""
        import io

        self.put_stream(key, io.BytesIO(data))

    @abstractmethod
    def put_stream(self, key: str, src) -> None:
        """Write a binary stream to `key` so that no reader ever sees a partial object."""


class LocalObjectStore(ObjectStore):
    """A folder on this machine, addressed as file:///abs/path."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        root = os.path.abspath(parts.path)
        super().__init__(url, pafs.LocalFileSystem(), root)

    def put_stream(self, key: str, src) -> None:
        target = self.path(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # A dot-prefixed temporary is ignored by Spark and pyarrow dataset readers.
        tmp = os.path.join(os.path.dirname(target), f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            # rename() is what makes the write atomic for readers; no fsync per object (like
            # Spark's and Arrow's writers), which would cost ~1 ms per small partition file.
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class S3ObjectStore(ObjectStore):
    """An S3 bucket and prefix, s3://bucket/prefix; `endpoint_url` for an S3-compatible server.

    `region` empty: boto3's own chain (AWS_DEFAULT_REGION, the profile), else us-east-1; the
    credentials are boto3's chain for both layers."""

    def __init__(self, url: str, endpoint_url: str = "", region: str = ""):
        parts = urlsplit(url)
        kwargs: dict = {}
        endpoint = endpoint_url
        if endpoint:
            ep = urlsplit(endpoint)
            kwargs["endpoint_override"] = ep.netloc or endpoint
            kwargs["scheme"] = ep.scheme or "https"
        if not region:
            import boto3

            region = boto3.session.Session().region_name or "us-east-1"
        kwargs["region"] = region
        fs = pafs.S3FileSystem(**kwargs)
        root = f"{parts.netloc}{parts.path}".rstrip("/")
        super().__init__(url, fs, root)
        self.bucket = parts.netloc
        self.endpoint_url = endpoint
        self._region = kwargs["region"]
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url or None, region_name=self._region)
        return self._client

    def put_stream(self, key: str, src) -> None:
        # Writes go through boto3: its transfer manager does single PUTs for small objects and
        # multipart for large ones, and works with S3-compatible servers on which Arrow's
        # CompleteMultipartUpload fails. An S3 object is visible only once its upload completes.
        self.client.upload_fileobj(src, self.bucket, self.path(key)[len(self.bucket) + 1 :])
