"""The examples in `workflows.d/`: they validate, and each workflow answers as its comments say."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from gateway.app import create_app
from gateway.cli import main
from gateway.loader import check, load
from gateway.storage import Storage, open_storage

EXAMPLES = Path(__file__).resolve().parents[1] / "workflows.d"
CALLED = {"contact-form", "leads", "order-paid", "status", "signup", "login", "logout", "my-leads",
          "rate-lead"}


def test_the_examples_validate() -> None:
    _, problems = check([EXAMPLES])
    assert problems == []
    result = CliRunner().invoke(main, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output


def test_every_exposed_example_is_called_by_a_test() -> None:
    exposed = {wf.name for wf in load([EXAMPLES]).exposed()}
    assert exposed == CALLED, "call each new example below and list it in CALLED"


def test_every_custom_event_example_is_used() -> None:
    registry = load([EXAMPLES])
    text = "\n".join(path.read_text() for path in sorted(EXAMPLES.rglob("*.y*ml")))
    called = set(re.findall(r"^\s*event:\s*([a-z0-9][a-z0-9_-]*)\s*$", text, re.M))
    assert registry.events
    assert set(registry.events) <= called


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage(f"sqlite:///{tmp_path / 'gateway.db'}")


@pytest.fixture
async def client(storage: Storage) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(load([EXAMPLES]), storage)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


async def test_contact_form_stores_a_lead(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/1.1/wf/contact-form", data={
        "name": "  Ada Lovelace ", "email": " Ada@Example.COM ", "company": "Analytical",
        "tags": ["math", "engines"]})
    assert response.status_code == 200, response.text
    got = response.json()["response"]
    assert got["email"] == "ada@example.com"
    assert re.fullmatch(r"\d{13}x\d{18}", got["id"])
    duplicate = await client.post("/api/1.1/wf/contact-form",
                                  json={"name": "Ada again", "email": "ADA@example.com"})
    assert duplicate.status_code == 409
    assert duplicate.json()["body"]["status"] == "DUPLICATE"
    missing = await client.post("/api/1.1/wf/contact-form", json={"name": "No email"})
    assert missing.json() == {"statusCode": 400, "body": {
        "status": "MISSING_DATA",
        "message": "Missing parameter for workflow contact-form: parameter email"}}


async def test_leads_pages_newest_first(client: httpx.AsyncClient) -> None:
    for i in range(5):
        company = "acme" if i % 2 == 0 else "globex"
        response = await client.post("/api/1.1/wf/contact-form", json={
            "name": f"lead {i}", "email": f"l{i}@example.com", "company": company})
        assert response.status_code == 200, response.text

    first = (await client.get("/api/1.1/wf/leads?page_size=2")).json()["response"]
    assert [lead["name"] for lead in first["leads"]] == ["lead 4", "lead 3"]
    assert (first["count"], first["remaining"]) == (5, 3)
    second = (await client.get("/api/1.1/wf/leads", params={
        "page_size": 2, "cursor": first["cursor"]})).json()["response"]
    assert [lead["name"] for lead in second["leads"]] == ["lead 2", "lead 1"]
    assert second["remaining"] == 1

    acme = (await client.get("/api/1.1/wf/leads?company=acme")).json()["response"]
    assert [lead["name"] for lead in acme["leads"]] == ["lead 4", "lead 2", "lead 0"]
    assert acme["count"] == 3 and acme["cursor"] is None
    nobody = (await client.get("/api/1.1/wf/leads?company=initech")).json()["response"]
    assert nobody == {"leads": [], "count": 0, "remaining": 0, "cursor": None}


async def test_order_paid_conditions(client: httpx.AsyncClient) -> None:
    paid = await client.post("/api/1.1/wf/order-paid",
                             json={"order_id": "o-1", "status": "paid", "amount": 1500})
    assert paid.status_code == 202
    assert paid.headers["x-order"] == "o-1"
    assert paid.json() == {"status": "success", "response": {"order": "o-1", "big": True}}
    small = await client.post("/api/1.1/wf/order-paid",
                              json={"order_id": "o-2", "status": "paid", "amount": "12.5"})
    assert small.json()["response"] == {"order": "o-2", "big": False}
    pending = await client.post("/api/1.1/wf/order-paid",
                                json={"order_id": "o-3", "status": "pending", "amount": 5})
    assert pending.status_code == 200
    assert pending.json()["body"] == {
        "status": "NOT_RUN",
        "message": "The condition for the workflow order-paid is not met. Workflow won't run"}
    negative = await client.post("/api/1.1/wf/order-paid",
                                 json={"order_id": "o-4", "status": "paid", "amount": -5})
    assert negative.status_code == 422
    assert negative.json()["body"]["status"] == "NEGATIVE_AMOUNT"


async def test_status_answers_plain_text(client: httpx.AsyncClient) -> None:
    plain = await client.get("/api/1.1/wf/status")
    assert plain.status_code == 200
    assert plain.text == "ok"
    assert plain.headers["content-type"].startswith("text/plain")
    verbose = await client.get("/api/1.1/wf/status?verbose=yes")
    assert re.fullmatch(r"ok at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", verbose.text)
    assert (await client.post("/api/1.1/wf/status")).status_code == 405


async def test_users_sign_up_log_in_and_list_their_own_leads(client: httpx.AsyncClient) -> None:
    signed = await client.post("/api/1.1/wf/signup", json={
        "email": "Ada@Example.com", "password": "correct horse", "name": " Ada "})
    assert signed.status_code == 200, signed.text
    assert set(signed.json()["response"]) == {"user_id", "token", "expires"}
    login = await client.post("/api/1.1/wf/login", data={
        "email": "ada@example.com", "password": "correct horse", "remember": "yes"})
    session = login.json()["response"]
    assert session["expires"] == 365 * 86400
    auth = {"Authorization": f"Bearer {session['token']}"}
    await client.post("/api/1.1/wf/contact-form", headers=auth,
                      json={"name": "Mine", "email": "mine@example.com"})
    await client.post("/api/1.1/wf/contact-form", json={"name": "Other", "email": "o@x.com"})
    mine = await client.get("/api/1.1/wf/my-leads", headers=auth)
    assert mine.json()["response"] == {"user": "Ada", "leads": ["mine@example.com"], "count": 1}
    assert (await client.get("/api/1.1/wf/my-leads")).status_code == 401
    assert (await client.post("/api/1.1/wf/logout", headers=auth)).status_code == 200


async def test_sign_up_schedules_a_welcome_and_a_new_score_fires_the_trigger(
        client: httpx.AsyncClient, storage: Storage) -> None:
    signed = await client.post("/api/1.1/wf/signup", json={
        "email": "bo@example.com", "password": "correct horse"})
    user = signed.json()["response"]["user_id"]
    (welcome,) = await storage.jobs.list_jobs(workflow="send-welcome")
    assert welcome.status == "pending" and welcome.data["params"] == {"user": user}
    assert welcome.data["identity"] == {"kind": "anonymous", "user_id": None}
    auth = {"Authorization": f"Bearer {signed.json()['response']['token']}"}
    lead = (await client.post("/api/1.1/wf/contact-form", json={
        "name": "Cy", "email": "cy@example.com"})).json()["response"]["id"]
    rated = await client.post("/api/1.1/wf/rate-lead", headers=auth,
                              json={"lead": lead, "score": 7})
    assert rated.json()["response"] == {"lead": lead, "score": 7}
    async with asyncio.timeout(20):
        while [j.status for j in await storage.jobs.list_jobs(
                workflow="lead-score-changed")] != ["done"]:
            await asyncio.sleep(0.02)  # the scheduler of the app's lifespan runs it
    (job,) = await storage.jobs.list_jobs(workflow="lead-score-changed")
    assert job.data["identity"] == {"kind": "user", "user_id": user}
