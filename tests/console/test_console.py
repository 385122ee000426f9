"""The console in-process, on both backends: nothing without a session (every route walked
from the router), sign-in with the key store's own checks, CSRF on every POST, each page,
the job actions, filters, paging, and hostile data rendered escaped."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import served
from console_support import (
    admin_key,
    config,
    console_served,
    failed_job,
    form_value,
    job,
    serving,
    sign_in,
)
from starlette.routing import Mount, Route
from support import Clock

from gateway.api.auth import KEY_CACHE_SECONDS, key_hash
from gateway.console.runs_page import SEARCH_SCAN
from gateway.console.session import COOKIE, FREE_FAILURES, Signer, throttle
from gateway.core.clock import utc_now
from gateway.storage import Storage

SECURITY = {
    "content-security-policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
                               "style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY", "referrer-policy": "no-referrer", "cache-control": "no-store"}
SIGN_IN_MARK = '<form method="post" action="/console/sign-in">'


def console_routes(app: object, base: str = "/console") -> list[tuple[str, str]]:
    """(method, path) of every console route, read from the app's router, with a made-up
    value for each path parameter."""
    found = []

    def walk(routes: list[object], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(list(route.routes), prefix + route.path)
            elif isinstance(route, Route) and (prefix + route.path).startswith(base):
                path = re.sub(r"\{[a-z_]+\}", "x1", prefix + route.path)
                found.extend((method, path) for method in sorted(route.methods or ())
                             if method != "HEAD")

    walk(list(app.router.routes), "")  # type: ignore[attr-defined]
    return found


def assert_secure(answer: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert answer.headers.get(name) == value, (name, answer.request.url)


async def test_every_console_route_without_a_session_gives_the_sign_in_form_only(
        tmp_path: Path, storage_url: str) -> None:
    async with console_served(config(tmp_path), storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        await client.post("/api/1.1/wf/create-lead", json={"email": "planted-secret@x"})
        failed = await failed_job(storage, "ERROR: planted-job-error")
        await storage.runs.flush_runs()
        routes = console_routes(gateway.app)
        assert len(routes) >= 14 and ("POST", "/console/jobs/x1/retry") in routes
        for method, path in routes:
            for cookie in (None, "forged.cookie", "x" * 5000):
                client.cookies.clear()
                if cookie:
                    client.cookies.set(COOKIE, cookie)
                answer = await client.request(method, path, data={"csrf": "x"})
                assert_secure(answer)
                body = answer.text
                assert "planted" not in body and failed.id not in body
                assert "create-lead" not in body and "nightly-cleanup" not in body
                if path.startswith("/console/static/"):
                    assert answer.status_code in (200, 404)
                    assert "<" not in body or "<form" not in body
                elif path == "/console/sign-in":
                    assert answer.status_code in (200, 403), (method, path)
                    assert SIGN_IN_MARK in body
                else:
                    assert answer.status_code == 401, (method, path)
                    assert SIGN_IN_MARK in body and "Sign out" not in body
        stored = await storage.jobs.get_job(failed.id)
        assert stored is not None and stored.status == "failed"  # no POST did anything


async def test_the_console_is_off_unless_enabled(tmp_path: Path, storage_url: str) -> None:
    async with console_served(config(tmp_path, console="{enabled: false}"),
                              storage_url) as gateway:
        for path in ("/console", "/console/sign-in", "/console/runs", "/console/static/x"):
            assert (await gateway.client.get(path)).status_code == 404
        assert console_routes(gateway.app) == []


async def test_sign_in_with_an_admin_key_opens_every_page(tmp_path: Path,
                                                          storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        key = await admin_key(storage)
        answer = await sign_in(client, key, next="/runs?status=failed")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/runs?status=failed"
        cookie = answer.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "Path=/console" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Max-Age=28800" in cookie and key not in cookie and key_hash(key) not in cookie
        for path in ("/console", "/console/workflows", "/console/runs", "/console/jobs",
                     "/console/runs/rows"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert_secure(page)
        assert (await client.get("/console/sign-in")).status_code == 303  # signed in already


async def test_wrong_and_revoked_keys_and_user_tokens_do_not_sign_in(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        revoked = await admin_key(storage, "old")
        await storage.keys.revoke_key("old", utc_now())
        for key in ("not-a-key", revoked, "", "x" * 5000):
            answer = await sign_in(client, key)
            assert answer.status_code == 401, key
            assert "not an admin API key" in answer.text or not key
            assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")
        # Without the form's token (another site's form): refused before the key is read.
        good = await admin_key(storage)
        client.cookies.clear()
        answer = await client.post("/console/sign-in", data={"key": good, "token": "x"})
        assert answer.status_code == 403
        assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")


async def test_forged_tampered_and_expired_cookies_open_nothing(tmp_path: Path,
                                                                storage_url: str) -> None:
    async with console_served(config(tmp_path), storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        key = await admin_key(storage)
        await sign_in(client, key)
        good = client.cookies[COOKIE]
        body, mac = good.split(".")
        signer = gateway.app.state.console.signer
        stranger = Signer(b"another key" * 3)
        _, forged = stranger.issue(key_hash(key), 3600)
        _, expired = Signer(signer.key, clock=lambda: time.time() - 7200).issue(
            key_hash(key), 3600)
        _, unknown = signer.issue(key_hash("no such key"), 3600)
        tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
        for cookie in (forged, expired, unknown, tampered, body, good + "x"):
            client.cookies.clear()
            client.cookies.set(COOKIE, cookie)
            answer = await client.get("/console/runs")
            assert answer.status_code == 401 and SIGN_IN_MARK in answer.text
        client.cookies.clear()
        client.cookies.set(COOKIE, good)
        assert (await client.get("/console/runs")).status_code == 200


async def test_revoking_the_key_ends_its_sessions(tmp_path: Path, storage_url: str) -> None:
    clock = Clock()
    async with console_served(config(tmp_path), storage_url, clock=clock,
                              monotonic=clock.monotonic) as gateway:
        client, storage = gateway.client, gateway.storage
        await sign_in(client, await admin_key(storage))
        assert (await client.get("/console")).status_code == 200
        await storage.keys.revoke_key("ops", clock())
        clock.now += timedelta(seconds=KEY_CACHE_SECONDS + 0.05)  # past the key cache
        answer = await client.get("/console")
        assert answer.status_code == 401, "the revoked key still opens the console"


async def test_sign_out_ends_the_session(tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        page = await client.get("/console")
        cookie = client.cookies[COOKIE]
        answer = await client.post("/console/sign-out", data={"csrf": form_value(page.text,
                                                                                 "csrf")})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"
        assert f'{COOKIE}=""' in answer.headers["set-cookie"] or "Max-Age=0" in \
            answer.headers["set-cookie"]
        client.cookies.clear()
        client.cookies.set(COOKIE, cookie)  # a copy of the cookie kept from before
        assert (await client.get("/console")).status_code == 401


async def test_a_post_without_the_csrf_token_is_refused(tmp_path: Path,
                                                        storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        failed = await failed_job(storage)
        page = await client.get(f"/console/jobs/{failed.id}")
        token = form_value(page.text, "csrf")
        for data in ({}, {"csrf": ""}, {"csrf": token[:-1] + "x"}, {"csrf": token * 2}):
            answer = await client.post(f"/console/jobs/{failed.id}/retry", data=data)
            assert answer.status_code == 403 and "CSRF" in answer.text
            assert_secure(answer)
        for path in ("/console/pause", "/console/sign-out"):
            assert (await client.post(path, data={"workflow": "x"})).status_code == 403
        many = "&".join(f"f{n}=1" for n in range(50)) + f"&csrf={token}"
        answer = await client.post("/console/pause", content=many, headers={
            "content-type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 403
        big = await client.post("/console/pause", content=b"x" * 20_000)
        assert big.status_code == 413 and "larger than 16384 bytes" in big.text
        stored = await storage.jobs.get_job(failed.id)
        assert stored is not None and stored.status == "failed"
        assert await storage.jobs.paused() == []


async def test_job_actions_change_the_store(tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        failed = await failed_job(storage, "ERROR: the mail server said no")
        pending = job(due=utc_now().replace(year=2099))
        await storage.jobs.enqueue([pending])
        listing = await client.get("/console/jobs?status=failed")
        assert failed.id in listing.text and "the mail server said no" in listing.text
        assert pending.id not in listing.text
        token = form_value(listing.text, "csrf")
        answer = await client.post(f"/console/jobs/{failed.id}/retry", data={"csrf": token})
        assert answer.status_code == 303
        stored = await storage.jobs.get_job(failed.id)
        assert stored is not None and stored.status == "pending"
        assert "pending again" in (await client.get(answer.headers["location"])).text
        await client.post(f"/console/jobs/{pending.id}/cancel", data={"csrf": token})
        stored = await storage.jobs.get_job(pending.id)
        assert stored is not None and stored.status == "cancelled"
        again = await client.post(f"/console/jobs/{pending.id}/cancel", data={"csrf": token})
        assert "not-cancelled" in again.headers["location"]
        await client.post("/console/pause", data={"csrf": token, "workflow": "send-welcome"})
        assert await storage.jobs.paused() == ["send-welcome"]
        assert "send-welcome</strong> is paused" in (await client.get("/console/jobs")).text
        await client.post("/console/resume", data={"csrf": token, "workflow": "send-welcome"})
        assert await storage.jobs.paused() == []
        await client.post("/console/pause", data={"csrf": token, "workflow": "*"})
        assert await storage.jobs.paused() == ["*"]
        await client.post("/console/resume", data={"csrf": token, "workflow": "*"})
        assert await storage.jobs.paused() == []
        detail = await client.get(f"/console/jobs/{failed.id}")
        assert "ada@example.com" in detail.text and "Attempts" in detail.text
        assert "Runs of this job, one an attempt" in detail.text


async def test_a_failed_run_shows_its_failing_step_and_reason(tmp_path: Path,
                                                              storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        answer = await client.post("/api/1.1/wf/charge-card", json={"amount": 12})
        run_id = answer.headers["x-run-id"]
        await client.post("/api/1.1/wf/create-lead", json={"email": "ada@example.com"})
        await storage.runs.flush_runs()
        listing = await client.get("/console/runs?status=failed")
        assert run_id in listing.text and "CARD_DECLINED" in listing.text
        page = await client.get(f"/console/runs/{run_id}")
        assert page.status_code == 200
        assert "the card was declined for 12" in page.text
        assert re.search(r'class="depth-0 failed-step">\s*<td>2</td><td><code>refuse</code>',
                         page.text)
        assert "step-bar" in page.text and "&#34;amount&#34;: 12" in page.text
        overview = await client.get("/console")
        assert run_id in overview.text and "charge-card" in overview.text
        workflows = await client.get("/console/workflows")
        for text in ("POST /api/1.1/wf/create-lead", "nightly-cleanup", "0 3 * * *",
                     "Create a lead from the website form", "normalise", "100.0 %"):
            assert text in workflows.text, text
        assert (await client.get("/console/runs/no-such-run")).status_code == 404


async def test_runs_are_filtered_and_paged(tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        for n in range(120):
            storage.runs.record_run({"id": f"run-{n:03}", "workflow": "create-lead",
                                     "status": "success", "source": "http",
                                     "started_at": utc_now(), "duration_ms": 1.0,
                                     "params": {"n": f"value-{n:03}"}})
        storage.runs.record_run({"id": "old-one", "workflow": "create-lead",
                                 "status": "success", "source": "http", "duration_ms": 1.0,
                                 "started_at": utc_now() - timedelta(days=3),
                                 "params": {"n": "ancient-value"}})
        storage.runs.record_run({"id": "odd-one", "workflow": "charge-card",
                                 "status": "failed", "source": "schedule",
                                 "started_at": utc_now(), "duration_ms": 2.0,
                                 "identity": {"kind": "user", "user_id": "u-1",
                                              "email": "ada@example.com"}})
        await storage.runs.flush_runs()
        seen: list[str] = []
        url = "/console/runs?workflow=create-lead"
        while url:
            page = await client.get(url)
            ids = re.findall(r'/console/runs/(run-\d+)"', page.text)
            assert len(ids) <= 50
            seen.extend(ids)
            older = re.search(r'href="(/console/runs\?[^"]+)" rel="next"', page.text)
            url = older.group(1).replace("&amp;", "&") if older else ""
        assert seen == [f"run-{n:03}" for n in reversed(range(120))]
        for query, expected in (("status=failed", ["odd-one"]), ("source=schedule", ["odd-one"]),
                                ("text=VALUE-007", ["run-007"]), ("since=1h&workflow=charge-card",
                                                                  ["odd-one"]),
                                ("until=2000-01-01", []), ("text=ancient", ["old-one"]),
                                ("text=ancient&since=1d", []),
                                ("user=ADA@example.com", ["odd-one"]), ("user=u-1", ["odd-one"]),
                                ("user=u-1&text=charge", ["odd-one"]), ("user=u-2", []),
                                ("user=u-1&workflow=create-lead", [])):
            page = await client.get(f"/console/runs?{query}")
            assert re.findall(r'/console/runs/([a-z0-9-]+)"', page.text) == expected, query
        # The whole log was read (it is shorter than one stretch): no "Search older runs".
        searched = (await client.get("/console/runs?text=x")).text
        assert "The search read" not in searched and "Search older runs" not in searched
        rows = await client.get("/console/runs/rows?status=failed")
        assert rows.text.strip().startswith("<tr>") and "odd-one" in rows.text


async def test_a_text_search_reads_the_log_a_stretch_a_page(tmp_path: Path,
                                                            storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        start = utc_now() - timedelta(hours=3)
        runs = SEARCH_SCAN + 30  # the needle is in the oldest run, past the first stretch
        for n in range(runs):
            storage.runs.record_run({"id": f"run-{n:05}", "workflow": "create-lead",
                                     "status": "success", "source": "http",
                                     "started_at": start + timedelta(milliseconds=n),
                                     "params": {"n": "needle" if n == 0 else "hay"}})
            if n % 1000 == 999:  # within the run log's queue bound
                await storage.runs.flush_runs()
        await storage.runs.flush_runs()
        assert len(await storage.runs.page_runs(limit=runs + 1)) == runs
        first = await client.get("/console/runs?text=NEEDLE")
        assert re.findall(r'/console/runs/(run-\d+)"', first.text) == []
        assert "The search read the runs back to" in first.text
        onward = re.search(r'href="(/console/runs\?[^"]+)" rel="next">Search older runs',
                           first.text)
        assert onward is not None and "text=NEEDLE" in onward.group(1)
        second = await client.get(onward.group(1).replace("&amp;", "&"))
        assert re.findall(r'/console/runs/(run-\d+)"', second.text) == ["run-00000"]
        assert "Search older runs" not in second.text  # the rest of the log was read


async def test_hostile_data_and_filters_render_escaped(tmp_path: Path,
                                                       storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
        storage.runs.record_run({"id": "evil-run", "workflow": evil, "status": "failed",
                                 "source": evil, "started_at": utc_now(), "duration_ms": "x",
                                 "params": {evil: evil}, "result": [evil],
                                 "error": {"code": evil, "message": evil, "location": evil},
                                 "steps": [{"id": evil, "action": evil, "status": evil,
                                            "reason": evil, "duration_ms": None,
                                            "steps": "not a list"}, "not a step"]})
        await storage.runs.flush_runs()
        pages = ["/console", "/console/runs", "/console/runs/evil-run", "/console/workflows",
                 f"/console/runs?text={evil}", f"/console/runs?workflow={evil}",
                 "/console/runs?since=%00", "/console/runs?since=" + "9" * 400,
                 "/console/runs?before=nonsense", "/console/runs?before=2026-01-01|x",
                 "/console/runs?status=%3Cb%3E", f"/console/jobs?workflow={evil}",
                 "/console/jobs?status=weird", "/console/jobs?before=%7C%7C",
                 "/console/runs?until=99999999999d", "/console/runs/" + "x" * 300]
        for path in pages:
            page = await client.get(path)
            assert page.status_code in (200, 404), path
            assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        page = await client.get("/console/runs/evil-run")
        assert "&lt;script&gt;alert(" in page.text
        bad = await client.get("/console/runs?since=soon&text=" + "y" * 300)
        assert "since: a duration" in bad.text and "text: at most 200" in bad.text


async def test_the_console_is_served_under_the_prefix(tmp_path: Path,
                                                      storage_url: str) -> None:
    folder = config(tmp_path, server="server: {prefix: /version-test}")
    async with console_served(folder, storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        assert (await client.get("/console")).status_code == 404
        assert {path for _, path in console_routes(
            gateway.app, "/version-test/console")} >= {"/version-test/console"}
        answer = await client.get("/version-test/console/runs")
        assert answer.status_code == 401
        assert 'action="/version-test/console/sign-in"' in answer.text
        assert 'href="/version-test/console/static/console.css"' in answer.text
        signed = await sign_in(client, await admin_key(storage), base="/version-test/console")
        assert signed.headers["location"] == "/version-test/console"
        assert "Path=/version-test/console" in signed.headers["set-cookie"]
        page = await client.get("/version-test/console/workflows")
        assert page.status_code == 200 and "POST /version-test/api/1.1/wf/create-lead" in \
            page.text
        assert (await client.get("/version-test/console/static/console.css")).status_code == 200


async def test_the_key_reaches_no_log_and_no_run(tmp_path: Path, storage_url: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(config(tmp_path), storage_url) as (client, storage):
        key = await admin_key(storage)
        await sign_in(client, key)
        client.cookies.clear()
        await sign_in(client, key + "wrong")
        await storage.runs.flush_runs()
        assert await storage.runs.list_runs() == []
    assert key not in caplog.text


async def test_with_a_secret_a_session_works_on_every_instance(tmp_path: Path,
                                                                 storage_url: str) -> None:
    folder = config(tmp_path, console='{enabled: true, session_lifetime: 2h, '
                                      'secret: "{{ secrets.CONSOLE_SECRET }}"}')
    text = (folder / "main.yaml").read_text()
    (folder / "main.yaml").write_text(text.replace("kind: settings\n",
                                                   "kind: settings\nsecrets: [CONSOLE_SECRET]\n",
                                                   1))
    secret = {"CONSOLE_SECRET": "s" * 40}
    async with served(folder, storage_url, scheduler=False, environment=secret) as first, \
            served(folder, storage_url, scheduler=False, environment=secret) as second:
        one, two = first.client, second.client
        signed = await sign_in(one, await admin_key(first.storage))
        assert "Max-Age=7200" in signed.headers["set-cookie"]
        two.cookies.set(COOKIE, one.cookies[COOKIE])
        assert (await two.get("/console/jobs")).status_code == 200


async def test_without_a_secret_each_process_signs_its_own_sessions(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (one, storage), \
            serving(config(tmp_path), storage_url) as (two, _):
        await sign_in(one, await admin_key(storage))
        two.cookies.set(COOKIE, one.cookies[COOKIE])
        assert (await one.get("/console/jobs")).status_code == 200
        assert (await two.get("/console/jobs")).status_code == 401


def test_sign_in_is_slowed_after_repeated_failures() -> None:
    now = [0.0]
    slowdown = throttle(monotonic=lambda: now[0])
    for _ in range(FREE_FAILURES):
        assert slowdown.delay_for("10.0.0.1") == 0.0
        slowdown.failed("10.0.0.1")
    assert slowdown.delay_for("10.0.0.1") == 0.25
    slowdown.failed("10.0.0.1")
    assert slowdown.delay_for("10.0.0.1") == 0.5 and slowdown.delay_for("10.0.0.2") == 0.0
    now[0] += 3600
    assert slowdown.delay_for("10.0.0.1") == 0.0


async def test_storage_none_is_not_needed_to_refuse(tmp_path: Path, storage: Storage) -> None:
    assert storage is not None  # every test above runs on both backends (storage_url)


async def test_the_jobs_list_shows_label_scheduler_and_params_escaped_and_cut(
        tmp_path: Path, storage_url: str) -> None:
    folder = config(tmp_path)
    with (folder / "main.yaml").open("a") as file:
        file.write("---\nkind: api_workflow\nname: shady\nlabel: \"<script>alert(1)</script>"
                   "<b>bold</b>\"\nauth: admin\nparams: {blob: {type: text}}\n"
                   "steps:\n  - action: terminate\n")
    async with serving(folder, storage_url) as (client, storage):
        hostile = job("shady")
        hostile = type(hostile)(id=hostile.id, workflow="shady", source="schedule",
                                due_at=hostile.due_at, data={
                                    "params": {"blob": "<img src=x onerror=alert(2)>"
                                               + "y" * 100_000},
                                    "identity": {"kind": "user", "user_id": "u<1>"}})
        await storage.jobs.enqueue([hostile])
        await sign_in(client, await admin_key(storage))
        page = await client.get("/console/jobs")
        assert page.status_code == 200
        body = page.text
        assert "<script>alert(1)" not in body and "<b>bold" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in body
        assert "<img" not in body and "&lt;img src=x onerror=alert(2)&gt;" in body
        assert "y" * 200 not in body and len(body) < 50_000  # the parameters cut short
        assert "user u&lt;1&gt;" in body
