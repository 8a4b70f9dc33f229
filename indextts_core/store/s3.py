"""The S3 backend of the artifact store (AWS or any S3-compatible server, through boto3).

Same guarantees as the local folder (see :mod:`indextts_core.store.objects`): objects appear only
when complete (single PUT or multipart), directories once their manifest is written, and every
object we write carries its sha256 in its metadata.

What is checked: :meth:`S3Store.info` / ``sha256`` return that *recorded* hash (one HEAD, no read of
the bytes); consumers check the bytes they download against the hash recorded when the object was
written (directory manifests, checkpoint and shard records): see ``materialize_dir`` and
``get_file_verified``.  :meth:`S3Store.content_sha256` streams the object and hashes what is stored
now (what ``verify_store`` uses).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from indextts_core.errors import StorageError
from indextts_core.store.objects import (
    _MB,
    ArtifactStore,
    BucketNotFoundError,
    ObjectInfo,
    ObjectNotFoundError,
    StorageCredentialsError,
    _check_key,
)
from indextts_core.utils.fileio import STALE_TEMP_AGE_S, make_temp, sha256_bytes, sha256_file

#: S3 error codes that mean 'try again later'.
_TRANSIENT_S3_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                       "InternalError", "ServiceUnavailable"}
#: S3 error codes that mean the credentials themselves are wrong (a retry cannot help).
_CREDENTIAL_S3_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                        "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}
_HOW_TO_CONFIGURE = ("set storage.access_key_id and storage.secret_access_key in the run config, or "
                     "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")


class S3Store(ArtifactStore):
    """A prefix in an S3 bucket (AWS or any S3-compatible server)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold: int = 64 * _MB,
        multipart_chunksize: int = 16 * _MB,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        self._client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": "path"} if self.endpoint_url else {},
            ),
        )
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_chunksize)

    def __repr__(self) -> str:  # never show credentials
        return f"S3Store({self.uri!r}, endpoint={self.endpoint_url!r})"

    @property
    def client(self) -> Any:
        return self._client

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}" if key else self.uri

    def _error(self, e: Exception, key: str, action: str) -> Exception:
        """Our error for a boto failure: not found, credentials (not transient), or a storage error."""
        from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, PartialCredentialsError

        where = self.uri_for(key)
        if isinstance(e, NoCredentialsError):
            return StorageCredentialsError(f"{where}: {action} failed: no S3 credentials found; {_HOW_TO_CONFIGURE}")
        if isinstance(e, PartialCredentialsError):
            return StorageCredentialsError(f"{where}: {action} failed: incomplete S3 credentials ({e}); "
                                           f"{_HOW_TO_CONFIGURE}")
        if isinstance(e, NoRegionError):
            return StorageCredentialsError(f"{where}: {action} failed: no S3 region; set storage.region in the "
                                           "run config or AWS_DEFAULT_REGION")
        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                return ObjectNotFoundError(f"{where}: no such object")
            if code == "NoSuchBucket":
                return BucketNotFoundError(f"s3://{self.bucket}: bucket does not exist")
            if code in _CREDENTIAL_S3_CODES:
                return StorageCredentialsError(f"{where}: {action} failed: the S3 server refused the credentials "
                                               f"({code}); {_HOW_TO_CONFIGURE}")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            transient = status >= 500 or code in _TRANSIENT_S3_CODES
            return StorageError(f"{self.uri_for(key)}: {action} failed: {code or e}", transient=transient)
        return StorageError(f"{self.uri_for(key)}: {action} failed: {e}", transient=True)

    def put_file(self, local: str | os.PathLike[str], key: str, *, link: bool = False) -> ObjectInfo:
        """Upload ``local`` with its sha256 in the object's metadata (``link`` means nothing here: S3 copies)."""
        size = os.path.getsize(local)
        digest = sha256_file(local)
        full = self._key(key)
        try:
            self._client.upload_file(
                str(local), self.bucket, full,
                ExtraArgs={"Metadata": {"sha256": digest}}, Config=self._transfer,
            )
        except Exception as e:  # boto3 wraps failures in several exception types
            raise self._error(getattr(e, "last_exception", None) or e, key, "upload") from e
        return ObjectInfo(_check_key(key), size, digest)

    def copy_object(self, src_key: str, key: str) -> None:
        """A copy of ``src_key`` under ``key``, made by the server (nothing goes through this machine), with
        its recorded sha256."""
        digest = self.info(src_key).sha256
        try:
            self._client.copy({"Bucket": self.bucket, "Key": self._key(src_key)}, self.bucket, self._key(key),
                              ExtraArgs={"Metadata": {"sha256": digest}, "MetadataDirective": "REPLACE"},
                              Config=self._transfer)
        except Exception as e:
            raise self._error(getattr(e, "last_exception", None) or e, key, "copy") from e

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        full = self._key(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(dest)
        os.close(fd)
        try:
            self._client.download_file(self.bucket, full, tmp, Config=self._transfer)
            os.replace(tmp, dest)
        except Exception as e:
            Path(tmp).unlink(missing_ok=True)
            raise self._error(e, key, "download") from e
        return dest

    def put_bytes(self, data: bytes, key: str) -> ObjectInfo:
        digest = sha256_bytes(data)
        full = self._key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data, Metadata={"sha256": digest})
        except Exception as e:
            raise self._error(e, key, "upload") from e
        return ObjectInfo(_check_key(key), len(data), digest)

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except Exception as e:
            raise self._error(e, key, "read") from e

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=full)
            return True
        except Exception as e:
            err = self._error(e, key, "head")
            if isinstance(err, ObjectNotFoundError):
                return False
            raise err from e

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    if not full or k == full or k.startswith(full.rstrip("/") + "/"):
                        keys.append(k[strip:])
        except Exception as e:
            raise self._error(e, prefix, "list") from e
        return sorted(keys)

    def info(self, key: str) -> ObjectInfo:
        full = self._key(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=full)
        except Exception as e:
            raise self._error(e, key, "head") from e
        digest = head.get("Metadata", {}).get("sha256")
        if digest is None:  # written by someone else: hash the content once
            digest = sha256_bytes(self.get_bytes(key))
        return ObjectInfo(_check_key(key), int(head["ContentLength"]), digest)

    def content_sha256(self, key: str) -> str:
        """sha256 of the object's bytes, streamed (the object is read in full, never held in memory)."""
        import hashlib

        full = self._key(key)
        h = hashlib.sha256()
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=full)["Body"]
            for chunk in body.iter_chunks(chunk_size=8 * _MB):
                h.update(chunk)
        except Exception as e:
            raise self._error(e, key, "read") from e
        return h.hexdigest()

    def is_empty(self) -> bool:
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            page = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except Exception as e:
            raise self._error(e, "", "list") from e
        return not page.get("KeyCount", len(page.get("Contents", [])))

    def sweep(self, max_age_s: float = STALE_TEMP_AGE_S) -> list[str]:
        """Abort multipart uploads under this prefix started more than ``max_age_s`` ago.

        A killed upload leaves its parts billed and invisible; an upload that old is abandoned (S3
        cannot tell us whether its writer still lives, so age is the only safe test).
        """
        import datetime as dt

        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=max_age_s)
        aborted = []
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "")
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Initiated"] <= cutoff:
                        self._client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"],
                                                            UploadId=up["UploadId"])
                        aborted.append(f"s3://{self.bucket}/{up['Key']} (multipart upload {up['UploadId']})")
        except Exception as e:
            raise self._error(e, "", "sweep") from e
        return aborted

    def delete(self, key: str) -> None:
        for k in self.list(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(k))
