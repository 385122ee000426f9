"""Hostile input against files and images, on SQLite and PostgreSQL: names, signed links,
serving (ranges, HEAD, vanished bytes, deletes), uploads, references and the run log."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import tracemalloc
import unicodedata
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Serve
from PIL import Image

from gateway.api.auth import key_hash, new_key
from tests.files import test_files
from tests.files.test_files import Api, as_object, png

api = test_files.api  # the fixture: a config served on SQLite and PostgreSQL


async def brochure_link(api: Api, name: str, data: bytes = b"x") -> str:
    made = await api.create({"title": "a", "brochure": as_object(name, data)})
    assert made.status_code == 201, made.text
    return str((await api.record(made.json()["id"]))["brochure"])


def inside(api: Api) -> None:
    assert api.folder is not None
    for path in api.kept():
        assert path.resolve().is_relative_to(api.folder.resolve())


@pytest.mark.parametrize("name", [
    "n" * 10_000 + ".txt", "...", ". . .", "a\u202egnp.exe", "zero\u200bwidth\u200d.txt",
    "a%2Fb.txt", "a%00b.txt", "%2e%2e%2fx", "日本語の名前.txt", "\U0001f600" * 300,
    "a?b#c.txt", "a;b,c'\"d.txt"])
async def test_hostile_names_round_trip(api: Api, name: str) -> None:
    link = await brochure_link(api, name)
    got = await api.client.get(link)
    assert got.status_code == 200, (link, got.text)
    assert got.content == b"x"
    assert (await api.client.head(link)).status_code == 200
    inside(api)
    served = link.rsplit("/", 1)[1]
    assert "\u202e" not in served and "\u200b" not in served


async def test_a_kept_path_can_be_given_back_whatever_its_name(api: Api) -> None:
    link = await brochure_link(api, "\U0001f600" * 300)
    assert len(link) > 2048
    again = await api.create({"title": "b", "brochure": link})
    assert again.status_code == 201, again.text
    record = await api.record(again.json()["id"])
    assert record["brochure"] == link
    _, lease = await private_link(api)
    signed = await api.create({"title": "c", "lease": lease})  # a signed path, given back
    assert signed.status_code == 201, signed.text


async def test_names_that_differ_only_by_normalization(api: Api) -> None:
    nfd = unicodedata.normalize("NFD", "café.txt")
    nfc = unicodedata.normalize("NFC", "café.txt")
    one, two = await brochure_link(api, nfd, b"1"), await brochure_link(api, nfc, b"2")
    assert one.rsplit("/", 1)[1] == two.rsplit("/", 1)[1]
    assert (await api.client.get(one)).content == b"1"
    assert (await api.client.get(two)).content == b"2"
    other_form = one.rsplit("/", 1)[0] + "/" + "cafe%CC%81.txt"
    assert (await api.client.get(other_form)).status_code == 404


async def private_link(api: Api, data: bytes = b"%PDF lease") -> tuple[str, str]:
    made = await api.create({"title": "a", "lease": as_object("lease.pdf", data)})
    assert made.status_code == 201, made.text
    id = made.json()["id"]
    return id, str((await api.record(id))["lease"])


async def test_signed_links_resist_tampering(api: Api) -> None:
    _, one = await private_link(api, b"one")
    _, two = await private_link(api, b"two")
    path_one, query_one = one.split("?")
    path_two, query_two = two.split("?")
    assert (await api.client.get(f"{path_two}?{query_one}")).status_code == 403
    expires = query_one.split("expires=")[1].split("&")[0]
    signature = query_one.split("signature=")[1]
    for bad in (str(int(expires) + 10**6), "-1", "abc", "9" * 40, "", "1e10", "0x10",
                "²", "١٢٣٤٥٦٧٨٩٠", " " + expires, expires + ".0"):
        got = await api.client.get(path_one, params={"expires": bad, "signature": signature})
        assert got.status_code == 403, (bad, got.status_code)
    twice = f"{path_one}?expires={expires}&signature=AAAA&signature={signature}"
    assert (await api.client.get(twice)).status_code in (200, 403)
    twice = f"{path_one}?expires={expires}&signature={signature}&signature=AAAA"
    assert (await api.client.get(twice)).status_code in (200, 403)
    upper = path_one.replace("/files/private/", "/FILES/PRIVATE/")
    assert (await api.client.get(f"{upper}?{query_one}")).status_code == 404
    id_part = path_one.split("/")[3]
    assert (await api.client.get(f"{path_one.replace(id_part, id_part.upper())}?{query_one}")
            ).status_code == 404
    assert (await api.client.get(one)).content == b"one"


async def test_a_signature_that_is_not_ascii(api: Api) -> None:
    _, link = await private_link(api)
    path, query = link.split("?")
    expires = query.split("expires=")[1].split("&")[0]
    for signature in ("é", "\u00e9" * 43, "\U0001f600", "%FF"):
        got = await api.client.get(path, params={"expires": expires, "signature": signature})
        assert got.status_code == 403, (signature, got.status_code)
        head = await api.client.head(path, params={"expires": expires,
                                                  "signature": signature})
        assert head.status_code == 403


async def test_a_signed_link_dies_with_its_record(api: Api) -> None:
    id, link = await private_link(api)
    gone = await api.client.delete(f"/api/1.1/obj/rentallisting/{id}", headers=api.admin)
    assert gone.status_code == 204
    assert (await api.client.get(link)).status_code == 404
    assert (await api.client.head(link)).status_code == 404


async def test_range_and_head(api: Api) -> None:
    link = await brochure_link(api, "r.txt", b"0123456789")
    got = await api.client.get(link, headers={"Range": "bytes=2-4"})
    assert got.status_code in (200, 206)
    if got.status_code == 200:
        assert got.content == b"0123456789"
        assert "content-range" not in got.headers
    for bad in ("bytes=999-", "bytes=-", "bytes=5-2", "chars=1-2", "bytes=" + "1-2," * 500):
        got = await api.client.get(link, headers={"Range": bad})
        assert got.status_code in (200, 206, 416), bad
    head, get = await api.client.head(link), await api.client.get(link)
    for header in ("content-type", "content-length", "content-disposition", "cache-control",
                   "x-content-type-options", "content-security-policy"):
        assert head.headers[header] == get.headers[header], header
    assert head.content == b""


async def test_a_file_whose_bytes_vanished_is_a_clean_404(api: Api) -> None:
    link = await brochure_link(api, "v.txt", b"vanishing")
    id = link.split("/")[2]
    assert api.folder is not None
    (api.folder / id[:2] / id).unlink()
    got = await api.client.get(link)
    assert got.status_code == 404, got.status_code
    assert "Traceback" not in got.text


async def test_concurrent_gets_during_a_delete(api: Api) -> None:
    made = await api.create({"title": "a", "brochure": as_object("c.bin", b"z" * 200_000)})
    id = made.json()["id"]
    link = (await api.record(id))["brochure"]

    async def get() -> tuple[int, int]:
        try:
            answer = await api.client.get(link)
        except Exception:  # noqa: BLE001
            return (-1, 0)
        return (answer.status_code, len(answer.content))

    async def delete() -> int:
        await asyncio.sleep(0.01)
        return (await api.client.delete(f"/api/1.1/obj/rentallisting/{id}",
                                        headers=api.admin)).status_code

    results = await asyncio.gather(*(get() for _ in range(20)), delete(),
                                   *(get() for _ in range(20)))
    assert results[20] == 204
    for status, size in results[:20] + results[21:]:
        assert (status, size) in ((200, 200_000), (404, size)), (status, size)
    await asyncio.sleep(1.3)
    for status, _size in await asyncio.gather(*(get() for _ in range(5))):
        assert status == 404


async def test_the_bytes_deleted_between_describe_and_read(api: Api) -> None:
    link = await brochure_link(api, "d.txt", b"data")
    id = link.split("/")[2]
    assert api.folder is not None
    (api.folder / id[:2] / id).unlink()  # as a concurrent delete leaves it
    assert (await api.client.head(link)).status_code == 404  # as GET answers


def image_bytes(kind: str, width: int = 4, height: int = 4) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, kind)
    return out.getvalue()


def declaring(kind: str, width: int, height: int) -> bytes:
    """A small image of `kind` whose header says `width` × `height`."""
    data = bytearray(image_bytes(kind))
    if kind == "GIF":
        data[6:10] = struct.pack("<HH", width, height)
    elif kind == "JPEG":
        at = data.index(b"\xff\xc0") + 5
        data[at:at + 4] = struct.pack(">HH", height, width)
    elif kind == "WEBP":
        out = io.BytesIO()
        Image.new("RGB", (4, 4), "red").save(out, "WEBP", lossless=True)
        data = bytearray(out.getvalue())
        assert data[12:16] == b"VP8L"
        bits = (width - 1) | ((height - 1) << 14) | (data[21 + 3] & 0xE0) << 24
        data[21:25] = struct.pack("<I", bits)
    return bytes(data)


@pytest.mark.parametrize("kind", ["GIF", "JPEG", "WEBP"])
async def test_images_declaring_too_many_pixels(api: Api, kind: str) -> None:
    made = await api.create({"title": "a", "photo": as_object("x", declaring(kind, 16000,
                                                                             16000))})
    assert made.status_code == 400, made.text
    assert await api.count() == 0 and api.kept() == []


async def test_a_truncated_jpeg(api: Api) -> None:
    whole = image_bytes("JPEG", 64, 64)
    made = await api.create({"title": "a", "photo": as_object("cut.jpg", whole[:len(whole) // 2])})
    assert made.status_code == 400, made.text


def idat_bomb() -> bytes:
    """A 100×100 PNG whose IDAT inflates to 50 MB (never decoded, so harmless)."""
    raw = zlib.compress(b"\x00" * 50_000_000, 9)
    header = struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + \
        chunk(b"IEND", b"")


async def test_an_idat_bomb_is_kept_without_being_inflated(api: Api) -> None:
    bomb = idat_bomb()
    tracemalloc.start()
    try:
        made = await api.create({"title": "a", "photo": as_object("b.png", bomb)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made.status_code == 201, made.text
    assert peak < 20_000_000
    photo = (await api.record(made.json()["id"]))["photo"]
    assert (await api.client.get(photo)).content == bomb


@pytest.mark.parametrize("wrap", [76, 64, 1000, 100_000])
async def test_wrapped_base64_decodes(api: Api, wrap: int) -> None:
    data = bytes(range(256)) * 800  # 204,800 bytes: several decoding steps
    text = base64.b64encode(data).decode()
    wrapped = "\r\n".join(text[i:i + wrap] for i in range(0, len(text), wrap)) + "\n"
    link = await brochure_link(api, "w.bin", b"")
    made = await api.create({"title": "a", "brochure": {"filename": "w.bin",
                                                        "contents": wrapped}})
    assert made.status_code == 201, made.text
    link = (await api.record(made.json()["id"]))["brochure"]
    assert (await api.client.get(link)).content == data


async def test_base64_with_late_whitespace_decodes(api: Api) -> None:
    data = bytes(range(256)) * 800
    text = base64.b64encode(data).decode()
    late = text[:200_000] + "\n\n\n\n" + text[200_000:]  # a multiple of 4 still
    assert len(late) % 4 == 0
    made = await api.create({"title": "a", "brochure": {"filename": "w.bin",
                                                        "contents": late}})
    assert made.status_code == 201, made.text
    link = (await api.record(made.json()["id"]))["brochure"]
    assert (await api.client.get(link)).content == data


async def test_a_data_uri_with_the_wrong_media_type(api: Api) -> None:
    picture = png()
    uri = "data:text/plain;base64," + base64.b64encode(picture).decode()
    made = await api.create({"title": "a", "photo": {"filename": "p", "contents": uri}})
    assert made.status_code == 201, made.text
    photo = (await api.record(made.json()["id"]))["photo"]
    got = await api.client.get(photo)
    assert got.content == picture and got.headers["content-type"] == "image/png"


async def test_base64_over_the_file_limit_under_the_body_limit(api: Api) -> None:
    text = base64.b64encode(b"\0" * 300_001).decode()
    made = await api.create({"title": "a", "brochure": {"filename": "b", "contents": text}})
    assert made.status_code == 413, made.text
    assert await api.count() == 0 and api.kept() == []


async def test_multipart_oddities(api: Api) -> None:
    two = await api.client.post("/api/1.1/wf/upload", data={"title": "m"}, files=[
        ("photo", ("a.png", png(), "image/png")), ("photo", ("b.png", png(), "image/png"))])
    assert two.status_code == 400, two.text
    assert api.kept() == []  # refused by coercion, before anything is kept
    as_text = await api.client.post("/api/1.1/wf/upload", files=[
        ("title", ("t.txt", b"a title", "text/plain")),
        ("photo", ("a.png", png(), "image/png"))])
    assert as_text.status_code == 200, as_text.text
    record = await api.record(as_text.json()["response"]["id"])
    assert record["title"] == "a title"
    many = [("title", (None, "t"))] + [(f"p{i}", (None, "x")) for i in range(3000)]
    lots = await api.client.post("/api/1.1/wf/upload", files=many)
    assert lots.status_code in (400, 413), lots.text
    no_name = await api.client.post(
        "/api/1.1/wf/upload", content=b"--b\r\nContent-Disposition: form-data; name=\"photo\""
        b"\r\n\r\n" + png() + b"\r\n--b\r\nContent-Disposition: form-data; name=\"title\""
        b"\r\n\r\nt\r\n--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert no_name.status_code == 400, no_name.text
    assert await api.count() == 1


async def test_a_list_with_one_bad_image(api: Api) -> None:
    made = await api.create({"title": "a", "gallery": [
        as_object("g1.png", png()), as_object("g2.png", b"not an image")]})
    assert made.status_code == 400, made.text
    assert await api.count() == 0
    # by design (docs/guides/files.md): the first image's bytes stay until a sweep
    left = api.kept()
    assert len(left) in (0, 2)



async def test_the_run_log_keeps_no_contents(api: Api) -> None:
    picture = png(7, 7, "green")
    encoded = base64.b64encode(picture).decode()
    run = await api.client.post("/api/1.1/wf/upload", json={
        "title": "o", "photo": {"filename": "p.png", "contents": encoded}})
    assert run.status_code == 200, run.text
    multipart = await api.client.post("/api/1.1/wf/upload", data={"title": "m"},
                                      files={"photo": ("p.png", picture, "image/png")})
    assert multipart.status_code == 200, multipart.text
    made = await api.create({"title": "d", "photo": as_object("p.png", picture)})
    assert made.status_code == 201, made.text
    lying = await api.client.post("/api/1.1/wf/upload", json={  # refused: logged as sent
        "title": "r", "photo": {"filename": "p.png", "contents": "AAAA" + encoded}})
    assert lying.status_code == 400, lying.text
    cut = await api.client.post("/api/1.1/wf/upload", data={"title": "c"},
                                files={"photo": ("p.png", picture[:-20], "image/png")})
    assert cut.status_code == 400, cut.text
    refused = await api.create({"title": "d", "gallery": [
        as_object("p.png", picture), {"filename": "q.png", "contents": "AAAA" + encoded}]})
    assert refused.status_code == 400, refused.text
    await api.storage.runs.flush_runs()
    runs = await api.storage.runs.list_runs(limit=100)
    assert len(runs) == 6
    for listed in runs:
        logged = await api.storage.runs.get_run(listed["id"])
        text = json.dumps(logged, default=repr)
        assert encoded[:40] not in text
        assert base64.b64encode(picture[:30]).decode()[:20] not in text
        assert "IHDR" not in text and "\\u0089PNG" not in text


async def test_a_private_path_copied_into_another_record(api: Api) -> None:
    """A private file's bare path is no key to it: copied into a record of the caller's, it
    is refused, so it cannot be read through that record for ever, whatever the privacy
    rules of the record that holds it. A caller who may read the file (who has a valid
    signed link) may copy it, as they could download and upload it again."""
    id, link = await private_link(api, b"secret lease")
    bare = link.split("?")[0]
    refused = await api.create({"title": "mine", "brochure": bare})
    assert refused.status_code == 400, refused.text
    assert refused.json()["body"]["status"] == "INVALID_DATA"
    assert "signed link" in refused.json()["body"]["message"]
    forged = await api.create({"title": "mine", "brochure": bare + "?expires=9999999999"
                               "&signature=AAAA"})
    assert forged.status_code == 400, forged.text
    copied = await api.create({"title": "mine", "brochure": link})
    assert copied.status_code == 201, copied.text
    mine = await api.record(copied.json()["id"])
    assert mine["brochure"].startswith(bare + "?")  # signed for the copier
    assert (await api.client.get(mine["brochure"])).content == b"secret lease"
    # and it outlives the record it was taken from
    gone = await api.client.delete(f"/api/1.1/obj/rentallisting/{id}", headers=api.admin)
    assert gone.status_code == 204
    await asyncio.sleep(1.3)
    mine = await api.record(copied.json()["id"])
    assert (await api.client.get(mine["brochure"])).content == b"secret lease"


async def test_an_absolute_url_to_the_gateway_is_not_a_holder(api: Api) -> None:
    link = await brochure_link(api, "own.txt", b"own")
    absolute = "http://testserver" + link
    made = await api.create({"title": "b", "brochure": absolute})
    assert made.status_code == 201, made.text
    assert (await api.record(made.json()["id"]))["brochure"] == absolute  # kept as a URL
    records = (await api.client.get("/api/1.1/obj/rentallisting", headers=api.admin)).json()
    first = next(r for r in records["response"]["results"] if r["brochure"] == link)
    gone = await api.client.delete(f"/api/1.1/obj/rentallisting/{first['_id']}",
                                   headers=api.admin)
    assert gone.status_code == 204
    assert (await api.client.get(link)).status_code == 404  # the URL does not hold it


async def test_what_a_refused_list_leaves_behind(api: Api) -> None:
    made = await api.create({"title": "a", "gallery": [
        as_object("g1.png", png()), as_object("g2.png", png(3, 3)),
        as_object("g3.png", b"not an image")]})
    assert made.status_code == 400, made.text
    assert await api.count() == 0
    # by design (docs/guides/files.md): the images kept before the refusal stay, held by
    # no record, never served, until `gateway files sweep`
    assert len(api.kept()) == 4


ECHO = test_files.CONFIG + """
---
kind: api_workflow
name: echo
expose: true
auth: none
params: {{o: {{type: object}}, thing: {{type: listing, optional: true}}}}
steps:
  - action: return_data
    data: {{echo: "{{{{ params.o }}}}"}}
"""


async def test_a_workflow_echoing_a_record_shaped_object_signs_it(
        serve: Serve, storage_url: str, tmp_path: Path) -> None:
    """A workflow's reply signs the private paths of records as the store keeps them, in
    fields the caller sees: a record-shaped object a caller made up signs nothing (with
    the real record's id it signs what that record shows the caller: here everything, as
    the type has no privacy rules; `test_files` covers a type with rules)."""
    config = ECHO.format(files=test_files.folder_files(tmp_path / "kept"))
    async with serve(config, storage_url, environment=test_files.SECRET) as gateway:
        assert gateway.storage is not None
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        made = await gateway.client.post(
            "/api/1.1/obj/rentallisting", headers={"Authorization": f"Bearer {key}"},
            json={"lease": as_object("lease.pdf", b"private")})
        assert made.status_code == 201, made.text
        got = await gateway.client.get(f"/api/1.1/obj/rentallisting/{made.json()['id']}",
                                       headers={"Authorization": f"Bearer {key}"})
        bare = got.json()["response"]["lease"].split("?")[0]
        for id, signed in (("x", False), (made.json()["id"], True)):
            forged = {"_id": id, "_type": "listing", "lease": bare, "title": "t"}
            echoed = await gateway.client.post("/api/1.1/wf/echo", json={"o": forged})
            assert echoed.status_code == 200, echoed.text
            link = echoed.json()["response"]["echo"]["lease"]
            assert ("signature=" in link) == signed, id
            assert (await gateway.client.get(link)).status_code == (200 if signed else 403)
