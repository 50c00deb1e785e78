"""An S3-compatible bucket as the destination, through boto3.

Large files go up as multipart uploads (s3transfer, the engine behind
``upload_file``); an object appears only when its upload completes, so a
sidecar killed mid-upload leaves no partial object, only an unfinished
multipart upload, which the next attempt at the same key aborts. The data
object carries its SHA-256 in user metadata (``x-amz-meta-sha256``): S3's own
ETag is not a content hash for multipart objects, and this lets a later
``HEAD`` confirm which snapshot an object holds without downloading it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from mkv.errors import shown
from mkv.sidecar.destination import Destination, TransferOptions
from mkv.sidecar.errors import DestinationError, SidecarStopped

__all__ = ["S3Destination"]

# Failures that no amount of waiting fixes: give up at once.
_PERMANENT = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
    }
)
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# How often a transfer in progress looks at the stop flag.
_POLL = 0.05


class S3Destination(Destination):
    def __init__(self, bucket: str, prefix: str, options: TransferOptions) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.options = options
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        if options.endpoint_url:
            # Part of the destination's identity: the same bucket name at
            # another endpoint is other storage.
            self.url += f" at {options.endpoint_url}"
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=options.endpoint_url,
            # Our own backoff decides about retries across attempts; botocore's
            # standard mode still smooths over a single dropped connection.
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=options.chunk_size,
            multipart_chunksize=options.chunk_size,
            max_bandwidth=options.max_bandwidth,
            # The classic engine: the CRT one, when installed, ignores some of these options.
            preferred_transfer_client="classic",
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        return shown(f"s3://{self.bucket}/{self._key(key)}", 80)

    def get_small(self, key: str, limit: int) -> bytes | None:
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            if reply["ContentLength"] > limit:
                reply["Body"].close()
                raise DestinationError(
                    f"{self._where(key)} is larger than {limit} bytes.", retryable=False
                )
            data: bytes = reply["Body"].read()
            return data
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise _failed("read", self._where(key), exc) from None
        except BotoCoreError as exc:
            raise _failed("read", self._where(key), exc) from None

    def data_matches(self, key: str, size: int, sha256: str) -> bool:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise _failed("read", self._where(key), exc) from None
        except BotoCoreError as exc:
            raise _failed("read", self._where(key), exc) from None
        return bool(
            head["ContentLength"] == size and head.get("Metadata", {}).get("sha256") == sha256
        )

    def put_file(self, key: str, source: Path, *, sha256: str, stop: threading.Event) -> None:
        full_key = self._key(key)
        try:
            self._abort_unfinished(full_key)
            self._run_transfer(
                stop,
                lambda manager: manager.upload(
                    str(source),
                    self.bucket,
                    full_key,
                    extra_args={"Metadata": {"sha256": sha256}},
                ),
            )
        except (ClientError, BotoCoreError) as exc:
            raise _failed("upload", self._where(key), exc) from None
        except OSError as exc:
            raise DestinationError(
                f"Cannot read {shown(str(source), 80)} ({exc.strerror or exc})."
            ) from None

    def _abort_unfinished(self, full_key: str) -> None:
        """Abort multipart uploads of this key left by an interrupted run.

        They are invisible to readers but keep their parts (and their cost)
        until aborted.
        """
        paginator = self._client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_key):
            for upload in page.get("Uploads", []):
                if upload["Key"] == full_key:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=full_key, UploadId=upload["UploadId"]
                    )

    def _run_transfer(self, stop: threading.Event, start: Any) -> None:
        manager = create_transfer_manager(self._client, self._transfer)
        try:
            future = start(manager)
            # TransferFuture.result() cannot time out; poll so a stop request
            # is noticed within _POLL seconds even during a long upload.
            while not future.done():
                if stop.wait(_POLL):
                    future.cancel()  # s3transfer aborts the multipart upload
                    manager.shutdown()
                    raise SidecarStopped
            future.result()
        finally:
            manager.shutdown()

    def put_small(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType="application/json",
            )
        except (ClientError, BotoCoreError) as exc:
            raise _failed("upload", self._where(key), exc) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise _failed("delete", self._where(key), exc) from None

    def get_file(self, key: str, target: Path, *, stop: threading.Event) -> None:
        try:
            self._run_transfer(
                stop,
                lambda manager: manager.download(self.bucket, self._key(key), str(target)),
            )
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise DestinationError(
                    f"There is no {self._where(key)}.", retryable=False
                ) from None
            raise _failed("download", self._where(key), exc) from None
        except BotoCoreError as exc:
            raise _failed("download", self._where(key), exc) from None
        except OSError as exc:
            raise DestinationError(
                f"Cannot write {shown(str(target), 80)} ({exc.strerror or exc})."
            ) from None

    def close(self) -> None:
        self._client.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _failed(verb: str, where: str, exc: ClientError | BotoCoreError) -> DestinationError:
    if isinstance(exc, NoCredentialsError):
        return DestinationError(
            f"Cannot {verb} {where}: no AWS credentials found (set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or a profile).",
            retryable=False,
        )
    permanent = isinstance(exc, ClientError) and _code(exc) in _PERMANENT
    return DestinationError(f"Cannot {verb} {where} ({exc}).", retryable=not permanent)
