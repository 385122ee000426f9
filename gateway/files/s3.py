"""A file store in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2…), through boto3:
`<prefix><id>` holds the bytes (uploaded in parts when large, so never held whole in
memory) and `<prefix><id>.json` the description. boto3 blocks, so every call runs in a
thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.files.store import CHUNK, ID, StoredFile

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3FileStore:
    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                          connect_timeout=10, read_timeout=60))

    def _key(self, id: str) -> str:
        if ID.fullmatch(id) is None:
            raise ValueError(f"not a file id: {id!r}")
        return self.prefix + id

    async def put(self, file: StoredFile, source: IO[bytes]) -> None:
        def put() -> None:
            source.seek(0)
            self.client.upload_fileobj(source, self.bucket, self._key(file.id),
                                       ExtraArgs={"ContentType": file.content_type})
            self._describe(file)

        await asyncio.to_thread(put)

    def _describe(self, file: StoredFile) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(file.id) + ".json",
                               Body=file.to_json(), ContentType="application/json")

    async def describe(self, id: str) -> StoredFile | None:
        if ID.fullmatch(id) is None:
            return None

        def get() -> bytes | None:
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(id) + ".json")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
            return bytes(answer["Body"].read())

        data = await asyncio.to_thread(get)
        return None if data is None else StoredFile.from_json(data)

    async def redescribe(self, file: StoredFile) -> None:
        await asyncio.to_thread(self._describe, file)

    async def read(self, id: str) -> AsyncGenerator[bytes, None]:
        try:
            answer = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket,
                                             Key=self._key(id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(id) from exc
            raise
        body = answer["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, id: str) -> None:
        key = self._key(id)
        await asyncio.to_thread(self.client.delete_objects, Bucket=self.bucket, Delete={
            "Objects": [{"Key": key + ".json"}, {"Key": key}], "Quiet": True})

    async def ids(self) -> AsyncIterator[str]:
        def page(token: str | None) -> tuple[list[str], str | None]:
            args = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token:
                args["ContinuationToken"] = token
            answer = self.client.list_objects_v2(**args)
            names = [item["Key"][len(self.prefix):] for item in answer.get("Contents", ())]
            return ([n for n in names if ID.fullmatch(n) is not None],
                    answer.get("NextContinuationToken"))

        token: str | None = None
        while True:
            found, token = await asyncio.to_thread(page, token)
            for id in found:
                yield id
            if token is None:
                return

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

