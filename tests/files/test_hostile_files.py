"""Hostile input against files and images, on SQLite and PostgreSQL: names, signed links,
serving (ranges, HEAD, vanished bytes, deletes), uploads, references and the run log."""

from __future__ import annotations

import asyncio
import unicodedata

import pytest

from tests.files import test_files
from tests.files.test_files import Api, as_object

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
