"""Buckets as one interface: a local folder, or an S3 bucket and prefix.

The two backends differ in how a write is made atomic: a local write goes to a temporary name and
is renamed into place; an S3 upload is atomic per object by itself. Objects are read, listed and
written with the standard library (local) and boto3 (S3), so the Lambdas and the delivery runtime
need no pyarrow; `fs` gives the pyarrow filesystem of the same place, built on first use, for
the lake's Parquet datasets (`storage.lake`). pyarrow's S3 layer is used for reading datasets only:
it avoids s3fs/aiobotocore, whose botocore pins fight boto3's.
"""

from __future__ import annotations

import io
import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import urlsplit

from recsys_platform.errors import disk_full, disk_full_in

TEMPORARY_PREFIX = ".tmp-"  # a writer's temporary: dot-prefixed, so Spark and pyarrow readers ignore it


def is_hidden(key: str) -> bool:
    """Whether `key` names a hidden object that readers skip: a writer's temporary (one a killed
    writer left behind stays, since its name is unique) or any other dot-prefixed name."""
    return key.rsplit("/", 1)[-1].startswith(".")


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's root, with forward slashes
    size: int
    mtime_ns: int | None


class ObjectStore(ABC):
    """A bucket (or folder) rooted at `url`; keys are relative, '/'-separated paths."""

    def __init__(self, url: str, root: str):
        self.url = url.rstrip("/")
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
        """The filesystem path of `key` for pyarrow (`fs`): no scheme."""
        return f"{self.root}/{key.strip('/')}" if key.strip("/") else self.root

    def uri(self, key: str = "") -> str:
        return f"{self.url}/{key.strip('/')}" if key.strip("/") else self.url

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key` atomically."""
        self.put_stream(key, io.BytesIO(data))

    @property
    @abstractmethod
    def fs(self):
        """The same place as a pyarrow filesystem (for Parquet datasets), built on first use."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether `key` is an object, or a folder holding objects."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        """Objects under `prefix` (a folder key), sorted by key; empty when it does not exist."""

    @abstractmethod
    def list_dirs(self, prefix: str = "") -> list[str]:
        """Immediate sub-folder names under `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object `key` if it exists."""

    @abstractmethod
    def delete_dir(self, prefix: str) -> None:
        """Remove the folder `prefix` and what it holds."""

    @abstractmethod
    def put_stream(self, key: str, src) -> None:
        """Write a binary stream to `key` so that no reader ever sees a partial object."""


class LocalObjectStore(ObjectStore):
    """A folder on this machine, addressed as file:///abs/path."""

    def __init__(self, url: str):
        super().__init__(url, os.path.abspath(urlsplit(url).path))
        self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            import pyarrow.fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        with open(self.path(key), "rb") as f:
            return f.read()

    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        base = self.path(prefix)
        if os.path.isfile(base):
            found = [base]
        elif recursive:
            found = [os.path.join(d, name) for d, _, names in os.walk(base) for name in names]
        else:
            found = [e.path for e in os.scandir(base) if e.is_file()] if os.path.isdir(base) else []
        out = []
        for path in found:
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while listing (a writer's temporary renamed)
                continue
            out.append(ObjectInfo(os.path.relpath(path, self.root).replace(os.sep, "/"), stat.st_size, stat.st_mtime_ns))
        return sorted(out, key=lambda o: o.key)

    def list_dirs(self, prefix: str = "") -> list[str]:
        base = self.path(prefix)
        return sorted(e.name for e in os.scandir(base) if e.is_dir()) if os.path.isdir(base) else []

    def delete(self, key: str) -> None:
        if os.path.isfile(self.path(key)):
            os.remove(self.path(key))

    def delete_dir(self, prefix: str) -> None:
        import shutil

        if os.path.isdir(self.path(prefix)):
            shutil.rmtree(self.path(prefix))

    def put_stream(self, key: str, src) -> None:
        target = self.path(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            # rename() is what makes the write atomic for readers; no fsync per object (like
            # Spark's and Arrow's writers), which would cost ~1 ms per small partition file.
            os.replace(tmp, target)
        except OSError as e:
            if disk_full_in(e):
                raise disk_full(target, e) from e
            raise
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class S3ObjectStore(ObjectStore):
    """An S3 bucket and prefix, s3://bucket/prefix; `endpoint_url` for an S3-compatible server.

    `region` empty: boto3's own chain (AWS_DEFAULT_REGION, the profile), else us-east-1; the
    credentials are boto3's chain for both layers."""

    def __init__(self, url: str, endpoint_url: str = "", region: str = ""):
        parts = urlsplit(url)
        super().__init__(url, f"{parts.netloc}{parts.path}".rstrip("/"))
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url
        self._region = region
        self._client = None
        self._fs = None

    @property
    def region(self) -> str:
        if not self._region:
            import boto3

            self._region = boto3.session.Session().region_name or "us-east-1"
        return self._region

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url or None, region_name=self.region)
        return self._client

    @property
    def fs(self):
        if self._fs is None:
            import pyarrow.fs as pafs

            kwargs: dict = {"region": self.region}
            if self.endpoint_url:
                ep = urlsplit(self.endpoint_url)
                kwargs["endpoint_override"] = ep.netloc or self.endpoint_url
                kwargs["scheme"] = ep.scheme or "https"
            self._fs = pafs.S3FileSystem(**kwargs)
        return self._fs

    def _key(self, key: str) -> str:
        """The object's S3 key (the store's prefix, then `key`)."""
        return "/".join(p for p in (self.prefix, key.strip("/")) if p)

    def _pages(self, prefix: str, **kwargs):
        yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, **kwargs)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        folder = self._key(key) + "/"
        return any(page.get("KeyCount", 0) for page in self._pages(folder, MaxKeys=1))

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{self.uri(key)} does not exist") from None
            raise

    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        folder = self._key(prefix)
        start = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self._pages(folder + "/" if folder else "", **({} if recursive else {"Delimiter": "/"})):
            for obj in page.get("Contents", []):
                out.append(ObjectInfo(obj["Key"][start:], obj["Size"], int(obj["LastModified"].timestamp() * 1e9)))
        if not out and folder:  # `prefix` may name one object
            from botocore.exceptions import ClientError

            try:
                head = self.client.head_object(Bucket=self.bucket, Key=folder)
                out.append(ObjectInfo(folder[start:], head["ContentLength"],
                                      int(head["LastModified"].timestamp() * 1e9)))
            except ClientError:  # no such object: nothing to list
                pass
        return sorted(out, key=lambda o: o.key)

    def list_dirs(self, prefix: str = "") -> list[str]:
        folder = self._key(prefix)
        folder = folder + "/" if folder else ""
        names = {p["Prefix"][len(folder):].rstrip("/") for page in self._pages(folder, Delimiter="/")
                 for p in page.get("CommonPrefixes", [])}
        return sorted(names)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))  # S3: deleting nothing succeeds

    def delete_dir(self, prefix: str) -> None:
        keys = [{"Key": self._key(o.key)} for o in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True})

    def put_stream(self, key: str, src) -> None:
        # Writes go through boto3: its transfer manager does single PUTs for small objects and
        # multipart for large ones, and works with S3-compatible servers on which Arrow's
        # CompleteMultipartUpload fails. An S3 object is visible only once its upload completes.
        self.client.upload_fileobj(src, self.bucket, self._key(key))
