"""Files and images on SQLite and PostgreSQL, through the served app: uploaded through the
Data API (Bubble's object form) and as multipart parts of a workflow, kept in a folder or
in an S3-compatible bucket (a real S3 server on loopback), served while a record holds
them, private ones only through signed, expiring links, and refused when hostile with
nothing kept."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import Serve
from PIL import Image

from gateway.api.auth import key_hash, new_key
from gateway.cli import main
from gateway.storage import Storage

CONFIG = """
kind: settings
files: {{ {files} }}
limits: {{max_file_bytes: 300000, max_image_pixels: 4000000}}
secrets: [FILES_SECRET]
---
kind: data_type
name: listing
display: Rental Listing
api: {{expose: true}}
fields:
  title: {{type: text}}
  photo: {{type: image}}
  gallery: {{type: image, list: true}}
  lease: {{type: file, private: true}}
  brochure: {{type: file}}
---
kind: data_type
name: deed
api: {{expose: true}}
fields:
  owner: {{type: text}}
  scan: {{type: file, private: true}}
privacy:
  - name: public deeds
    when: "{{{{ thing.owner == 'public' }}}}"
    find_in_searches: true
    view_fields: all
---
kind: api_workflow
name: echo-deed
expose: true
auth: none
params: {{o: {{type: object}}, d: {{type: deed, optional: true}}}}
steps:
  - action: return_data
    data: {{echo: "{{{{ params.o }}}}"}}
---
kind: api_workflow
name: upload
expose: true
auth: none
params: {{title: {{type: text}}, photo: {{type: image}}, brochure: {{type: file, optional: true}}}}
steps:
  - id: made
    action: create_thing
    type: listing
    fields: {{title: "{{{{ params.title }}}}", photo: "{{{{ params.photo }}}}",
             brochure: "{{{{ params.brochure }}}}"}}
  - action: return_data
    data: {{id: "{{{{ steps.made._id }}}}", photo: "{{{{ steps.made.photo }}}}"}}
---
kind: api_workflow
name: keep-nothing
expose: true
auth: none
params: {{photo: {{type: image}}, copy: {{type: file, optional: true}}}}
steps:
  - id: made
    only_when: "{{{{ params.copy is not none }}}}"
    action: create_thing
    type: listing
    fields: {{lease: "{{{{ params.copy }}}}"}}
  - action: return_data
    data: {{photo: "{{{{ params.photo }}}}",
           lease: "{{{{ steps.made.lease if steps.made else none }}}}"}}
---
kind: api_workflow
name: show
expose: true
auth: none
params: {{thing: {{type: listing}}}}
steps:
  - action: return_data
    data: {{listing: "{{{{ params.thing }}}}", lease: "{{{{ params.thing.lease }}}}"}}
"""
SECRET = {"FILES_SECRET": "s" * 40}


def png(width: int = 8, height: int = 6, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def bomb() -> bytes:
    """A PNG of a few hundred bytes whose header declares 100,000 × 100,000 pixels."""
    raw = zlib.compress(b"\x00" * 1000)
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + \
        chunk(b"IEND", b"")


def as_object(name: str, data: bytes, private: bool = False) -> dict[str, Any]:
    return {"filename": name, "contents": base64.b64encode(data).decode(), "private": private}


@dataclass
class Api:
    client: httpx.AsyncClient
    storage: Storage
    admin: dict[str, str]
    folder: Path | None

    async def create(self, body: Any) -> httpx.Response:
        return await self.client.post("/api/1.1/obj/rentallisting", json=body,
                                      headers=self.admin)

    async def record(self, id: str) -> dict[str, Any]:
        got = await self.client.get(f"/api/1.1/obj/rentallisting/{id}", headers=self.admin)
        assert got.status_code == 200, got.text
        return dict(got.json()["response"])

    async def count(self) -> int:
        return (await self.storage.records.search("listing", [], [], 1, None)).count

    def kept(self) -> list[Path]:
        assert self.folder is not None
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


def folder_files(folder: Path) -> str:
    return f"folder: {json.dumps(str(folder))}, secret: '{{{{ secrets.FILES_SECRET }}}}'"


@pytest.fixture
async def api(serve: Serve, storage_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    folder = tmp_path / "kept"
    config = CONFIG.format(files=folder_files(folder))
    async with serve(config, storage_url, environment=SECRET) as gateway:
        assert gateway.storage is not None
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        yield Api(gateway.client, gateway.storage, {"Authorization": f"Bearer {key}"},
                  folder)


async def test_an_image_through_the_data_api(api: Api) -> None:
    picture = png()
    made = await api.create({"title": "a", "photo": as_object("front.png", picture)})
    assert made.status_code == 201, made.text
    photo = (await api.record(made.json()["id"]))["photo"]
    assert photo.startswith("/files/") and photo.endswith("/front.png")
    got = await api.client.get(photo)
    assert got.status_code == 200
    assert got.content == picture
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    head = await api.client.head(photo)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(picture))


async def test_an_image_is_typed_by_its_bytes(api: Api) -> None:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "JPEG")
    made = await api.create({"title": "a", "photo": as_object("looks.png", out.getvalue())})
    photo = (await api.record(made.json()["id"]))["photo"]
    assert (await api.client.get(photo)).headers["content-type"] == "image/jpeg"


async def test_private_files_need_a_signed_link(api: Api) -> None:
    lease = b"%PDF-1.4 the lease"
    made = await api.create({"title": "a", "lease": as_object("lease.pdf", lease)})
    link = (await api.record(made.json()["id"]))["lease"]
    assert "/files/private/" in link and "signature=" in link and "expires=" in link
    got = await api.client.get(link)
    assert got.status_code == 200 and got.content == lease
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["cache-control"] == "private, no-store"
    bare = link.split("?")[0]
    assert (await api.client.get(bare)).status_code == 403
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert (await api.client.get(forged)).status_code == 403
    later = link.replace("expires=", "expires=9")  # a later expiry the signature did not sign
    assert (await api.client.get(later)).status_code == 403
    public_path = bare.replace("/files/private/", "/files/")
    assert (await api.client.get(public_path)).status_code == 404


async def test_a_workflow_returns_private_files_of_records_signed(api: Api) -> None:
    made = await api.create({"title": "a", "lease": as_object("lease.pdf", b"%PDF")})
    run = await api.client.post("/api/1.1/wf/show", json={"thing": made.json()["id"]})
    assert run.status_code == 200, run.text
    answer = run.json()["response"]
    assert "signature=" in answer["listing"]["lease"]
    assert (await api.client.get(answer["listing"]["lease"])).content == b"%PDF"
    assert "signature=" not in answer["lease"]  # a path alone is not a record's: unsigned
    assert (await api.client.get(answer["lease"])).status_code == 403


async def test_a_reply_signs_no_file_the_privacy_rules_hide(api: Api) -> None:
    made = await api.client.post("/api/1.1/obj/deed", headers=api.admin, json={
        "owner": "someone", "scan": as_object("deed.pdf", b"deed")})
    assert made.status_code == 201, made.text
    got = await api.client.get(f"/api/1.1/obj/deed/{made.json()['id']}", headers=api.admin)
    bare = got.json()["response"]["scan"].split("?")[0]
    # the real record's id and path, and an owner that passes the rule as the caller made
    # it up: the stored deed is not public
    forged = {"_id": made.json()["id"], "_type": "deed", "owner": "public", "scan": bare}
    echoed = await api.client.post("/api/1.1/wf/echo-deed", json={"o": forged})
    assert echoed.status_code == 200, echoed.text
    link = echoed.json()["response"]["echo"]["scan"]
    assert "signature=" not in link
    assert (await api.client.get(link)).status_code == 403


async def test_bubbles_private_flag_makes_a_file_private(api: Api) -> None:
    made = await api.create({"title": "a", "brochure": as_object("b.txt", b"hi", True)})
    link = (await api.record(made.json()["id"]))["brochure"]
    assert "/files/private/" in link
    assert (await api.client.get(link)).content == b"hi"


async def test_a_multipart_upload_to_a_workflow(api: Api) -> None:
    picture = png(3, 3, "blue")
    run = await api.client.post("/api/1.1/wf/upload", data={"title": "m"}, files={
        "photo": ("p.png", picture, "image/png"), "brochure": ("a b.txt", b"text", "text/plain")})
    assert run.status_code == 200, run.text
    answer = run.json()["response"]
    got = await api.client.get(answer["photo"])
    assert got.content == picture
    record = await api.record(answer["id"])
    brochure = await api.client.get(record["brochure"])
    assert brochure.content == b"text"
    assert brochure.headers["content-type"].startswith("text/plain")
    assert record["brochure"].endswith("/a%20b.txt")


async def test_a_file_no_record_holds_is_not_served(api: Api) -> None:
    run = await api.client.post("/api/1.1/wf/keep-nothing", files={
        "photo": ("p.png", png(), "image/png")})
    assert run.status_code == 200, run.text
    photo = run.json()["response"]["photo"]
    assert photo.startswith("/files/")
    assert len(api.kept()) == 2  # kept, but held by no record
    assert (await api.client.get(photo)).status_code == 404


async def test_a_private_field_makes_a_public_upload_private(api: Api) -> None:
    run = await api.client.post("/api/1.1/wf/keep-nothing", files={
        "photo": ("p.png", png(), "image/png"), "copy": ("l.txt", b"lease", "text/plain")})
    assert run.status_code == 200, run.text
    lease = run.json()["response"]["lease"]
    assert "/files/private/" in lease
    assert (await api.client.get(lease)).status_code == 403
    assert (await api.client.get(lease.replace("/files/private/", "/files/"))).status_code \
        == 404
    records = (await api.client.get("/api/1.1/obj/rentallisting", headers=api.admin)).json()
    signed = records["response"]["results"][0]["lease"]
    assert (await api.client.get(signed)).content == b"lease"


async def test_a_kept_file_can_be_held_by_another_record(api: Api) -> None:
    picture = png()
    run = await api.client.post("/api/1.1/wf/upload", data={"title": "m"},
                                files={"photo": ("p.png", picture, "image/png")})
    photo = run.json()["response"]["photo"]
    assert (await api.client.get(photo)).status_code == 200
    # the same image written into another record's field: held there too
    other = await api.create({"title": "b", "brochure": photo})
    assert other.status_code == 201, other.text
    first = run.json()["response"]["id"]
    gone = await api.client.delete(f"/api/1.1/obj/rentallisting/{first}", headers=api.admin)
    assert gone.status_code == 204
    await asyncio.sleep(1.3)  # past the deletion of what the delete dropped
    assert (await api.client.get(photo)).status_code == 200  # the other record holds it


async def test_deleting_a_record_leaves_its_files_unreachable(api: Api) -> None:
    made = await api.create({"title": "a", "photo": as_object("p.png", png()),
                             "gallery": [as_object("g1.png", png(2, 2)),
                                         as_object("g2.png", png(3, 2))]})
    record = await api.record(made.json()["id"])
    links = [record["photo"], *record["gallery"]]
    for link in links:
        assert (await api.client.get(link)).status_code == 200
    assert len(api.kept()) == 6  # three files, each with its description
    gone = await api.client.delete(f"/api/1.1/obj/rentallisting/{made.json()['id']}",
                                   headers=api.admin)
    assert gone.status_code == 204
    for link in links:
        assert (await api.client.get(link)).status_code == 404
    for _ in range(40):  # the bytes go soon after the delete commits
        if not api.kept():
            break
        await asyncio.sleep(0.1)
    assert api.kept() == []


async def test_replacing_a_file_drops_the_old_one(api: Api) -> None:
    made = await api.create({"title": "a", "photo": as_object("old.png", png())})
    id = made.json()["id"]
    old = (await api.record(id))["photo"]
    changed = await api.client.patch(f"/api/1.1/obj/rentallisting/{id}", headers=api.admin,
                                     json={"photo": as_object("new.png", png(5, 5))})
    assert changed.status_code == 204, changed.text
    new = (await api.record(id))["photo"]
    assert new != old
    assert (await api.client.get(old)).status_code == 404
    assert (await api.client.get(new)).status_code == 200


async def test_a_url_is_kept_as_bubble_keeps_it(api: Api) -> None:
    made = await api.create({"title": "a", "photo": "https://cdn.example.com/x.png",
                             "brochure": "//s3.amazonaws.com/appforest_uf/f1/b.pdf"})
    assert made.status_code == 201, made.text
    record = await api.record(made.json()["id"])
    assert record["photo"] == "https://cdn.example.com/x.png"
    assert record["brochure"] == "//s3.amazonaws.com/appforest_uf/f1/b.pdf"


@pytest.mark.parametrize(("name", "kept_as"), [
    ("../../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
    ("/abs/olute.txt", "olute.txt"), ("a\x00b\nc.txt", "abc.txt"), ("..", "file"),
    (".htaccess", "htaccess")])
async def test_path_tricks_in_names_stay_in_the_store(api: Api, name: str,
                                                      kept_as: str) -> None:
    made = await api.create({"title": "a", "brochure": as_object(name, b"x")})
    assert made.status_code == 201, made.text
    link = (await api.record(made.json()["id"]))["brochure"]
    assert link.rsplit("/", 1)[1] == kept_as
    assert api.folder is not None
    for path in api.kept():
        assert path.resolve().is_relative_to(api.folder.resolve())
    assert (await api.client.get(link)).content == b"x"


async def refused(api: Api, body: Any, status: int, code: str) -> None:
    answer = await api.create(body)
    assert answer.status_code == status, answer.text
    assert answer.json()["body"]["status"] == code
    assert await api.count() == 0
    assert api.kept() == []


@pytest.mark.parametrize("body", [
    {"photo": as_object("x.png", b"<html><script>alert(1)</script>")},  # a lying name
    {"photo": as_object("bomb.png", bomb())},  # a decompression bomb
    {"photo": as_object("cut.png", png()[:40])},  # cut short
    {"photo": as_object("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")},
    {"photo": {"filename": "x.png", "contents": "not base64!"}},
    {"photo": {"filename": "x.png"}},
    {"photo": {"filename": 3, "contents": ""}},
    {"photo": "javascript:alert(1)"},
    {"photo": "/files/00000000000000000000000000000000/nothing.png"},
    {"photo": ["https://a.example/x.png"]},
    {"gallery": "https://a.example/x.png"},
])
async def test_hostile_images_are_refused(api: Api, body: dict[str, Any]) -> None:
    await refused(api, {"title": "h", **body}, 400, "INVALID_DATA")


async def test_a_file_over_the_limit_is_refused(api: Api) -> None:
    await refused(api, {"brochure": as_object("big.bin", b"\0" * 300_001)},
                  413, "PAYLOAD_TOO_LARGE")


async def test_a_2_gb_declared_upload_is_refused_before_it_is_read(api: Api) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"title": "x", "brochure": {"filename": "a", "contents": "'
        yield b"A" * 1024

    answer = await api.client.post(
        "/api/1.1/obj/rentallisting", content=body(),
        headers={**api.admin, "Content-Length": str(2 * 1024 ** 3),
                 "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert await api.count() == 0 and api.kept() == []


async def test_a_multipart_part_with_a_lying_content_type(api: Api) -> None:
    run = await api.client.post("/api/1.1/wf/upload", data={"title": "m"},
                                files={"photo": ("p.png", b"MZ\x90\0 not a png", "image/png")})
    assert run.status_code == 400, run.text
    assert run.json()["body"]["status"] == "INVALID_DATA"
    assert await api.count() == 0 and api.kept() == []


async def test_an_image_field_refuses_a_kept_file_that_is_not_an_image(api: Api) -> None:
    made = await api.create({"title": "a", "brochure": as_object("b.txt", b"text")})
    brochure = (await api.record(made.json()["id"]))["brochure"]
    answer = await api.create({"title": "b", "photo": brochure})
    assert answer.status_code == 400, answer.text
    assert await api.count() == 1


async def test_addresses_that_are_not_files(api: Api) -> None:
    for path in ("/files/zz/x", "/files/../gateway.db/x", "/files/private/abc/x",
                 "/files/00000000000000000000000000000000/x.png"):
        assert (await api.client.get(path)).status_code == 404, path
    assert (await api.client.post("/files/00000000000000000000000000000000/x")).status_code \
        == 405


def test_sweep_deletes_what_no_record_holds(serve: Serve, storage_url: str,
                                            tmp_path: Path) -> None:
    folder = tmp_path / "kept"
    config_file = tmp_path / "config" / "gateway.yaml"
    config_file.parent.mkdir()
    config_file.write_text(CONFIG.format(files=folder_files(folder)))

    async def upload_two() -> dict[str, Any]:
        async with serve(config_file, storage_url, environment=SECRET) as gateway:
            assert gateway.storage is not None
            for title in ("kept", "orphan"):
                run = await gateway.client.post("/api/1.1/wf/upload", data={"title": title},
                                                files={"photo": ("p.png", png(), "image/png")})
                assert run.status_code == 200, run.text
            orphan: dict[str, Any] = run.json()["response"]
            # gone behind the gateway's back (no run: nothing deletes its file)
            assert await gateway.storage.records.delete("listing", orphan["id"]) is not None
            assert (await gateway.client.get(orphan["photo"])).status_code == 404
            return orphan

    orphan = asyncio.run(upload_two())
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 4

    def sweep(*args: str) -> Result:
        result = CliRunner().invoke(main, ["files", "sweep", *args, "--config",
                                           str(config_file.parent), "--database", storage_url],
                                    env=SECRET)
        assert result.exit_code == 0, result.output
        return result

    assert sweep().stdout == ""  # kept less than an hour ago: left alone
    dry = sweep("--older-than", "0s", "--dry-run")
    orphan_id = orphan["photo"].split("/")[2]
    assert dry.stdout.split() == [orphan_id]
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 4
    assert sweep("--older-than", "0s").stdout.split() == [orphan_id]
    left = sorted(p.name for p in folder.rglob("*") if p.is_file())
    assert len(left) == 2 and orphan_id not in "".join(left)
