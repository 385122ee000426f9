"""The shipped configs: `workflows.d/`, which `gateway serve` serves with no environment
variable set, and each folder of `examples/`, a complete config declaring the secrets it needs
(none, for a themed app that calls nothing outside, such as `examples/rentals`).
They validate, and each workflow answers as its comments say."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import stripe
from click.testing import CliRunner
from conftest import Serve
from PIL import Image
from support import EXAMPLES, WORKFLOWS_D, Inbox, example_folders, smtp_server
from support import rates_api as loopback_rates_api

from gateway.api.auth import key_hash, new_key
from gateway.cli import main
from gateway.compiler.loader import check, load
from gateway.runtime.context import ADMIN
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.origin import Origin
from gateway.scheduler import with_jobs
from gateway.storage import Storage, open_storage

SHIPPED = [WORKFLOWS_D, *example_folders()]
STRIPE_WEBHOOKS = EXAMPLES / "stripe-webhooks"
GITHUB_WEBHOOKS = EXAMPLES / "github-webhooks"
EXCHANGE_RATES = EXAMPLES / "exchange-rates"
RENTALS = EXAMPLES / "rentals"
# What each shipped config exposes (each is called by a test below, crm-sync's in
# test_example_crm_sync.py), and the secrets it declares: each example folder just the ones
# its workflows use, workflows.d none.
CALLED = {
    "workflows.d": {"contact-form", "leads", "order-paid", "status", "signup", "login",
                    "logout", "my-leads", "rate-lead"},
    "stripe-webhooks": {"stripe-events"},
    "github-webhooks": {"github-push"},
    "exchange-rates": {"email-rates"},
    "rentals": {"createUnit", "nearbyUnits"},
    "crm-sync": {"contact-changed"},
}
SECRETS = {
    "workflows.d": set(),
    "stripe-webhooks": {"STRIPE_WEBHOOK_SECRET"},
    "github-webhooks": {"GITHUB_WEBHOOK_SECRET"},
    "exchange-rates": {"RATES_API_URL"},
    "rentals": set(),
    "crm-sync": {"CRM_API_URL", "CRM_API_TOKEN"},
}
by_name = pytest.mark.parametrize("folder", SHIPPED, ids=lambda folder: folder.name)


def test_every_example_folder_is_listed() -> None:
    assert {folder.name for folder in SHIPPED} == set(CALLED) == set(SECRETS)
    for folder in example_folders():
        assert (folder / "settings.yaml").is_file() and (folder / "README.md").is_file()


@by_name
def test_the_examples_validate(folder: Path) -> None:
    _, problems = check([folder])
    assert problems == []
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 0, result.output


@by_name
def test_every_exposed_example_is_called_by_a_test(folder: Path) -> None:
    exposed = {wf.name for wf in load([folder]).exposed()}
    assert exposed == CALLED[folder.name], "call each new example below and list it in CALLED"


@by_name
def test_each_config_declares_just_the_secrets_it_uses(folder: Path) -> None:
    declared = set(load([folder]).settings.secret_names)
    assert declared == SECRETS[folder.name]
    text = "\n".join(path.read_text() for path in sorted(folder.rglob("*.y*ml"))
                     if path.name != "settings.yaml")
    assert set(re.findall(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)", text)) == declared


@pytest.mark.parametrize("folder", [folder for folder in example_folders()
                                    if SECRETS.get(folder.name)],
                         ids=lambda folder: folder.name)
def test_serve_names_the_secrets_an_example_needs(folder: Path, tmp_path: Path) -> None:
    # Declared, so serve refuses before it binds. An example declaring none (rentals) would
    # serve on: test_rentals_serves_with_no_environment_variable serves it with none set.
    assert set(load([folder]).settings.secret_names) == SECRETS[folder.name] != set()
    unset = {name: None for names in SECRETS.values() for name in names}
    result = CliRunner().invoke(main, ["serve", "--config", str(folder), "--database",
                                       f"sqlite:///{tmp_path / 'gateway.db'}"], env=unset)
    assert result.exit_code == 1
    assert result.output.strip() == ("error: the settings declare secrets the environment "
                                     "does not set: " + ", ".join(sorted(SECRETS[folder.name])))


@pytest.mark.parametrize(("config", "path"), [
    (WORKFLOWS_D, "/api/1.1/wf/status"),
    (RENTALS, "/api/1.1/wf/nearbyUnits?lat=51.5&lng=-0.12")], ids=["workflows.d", "rentals"])
def test_serves_with_no_environment_variable(config: Path, path: str, tmp_path: Path) -> None:
    """`gateway serve` as a process, its environment only what runs Python: it starts on
    a shipped config that declares no secret, answers a workflow, and stops."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    bare = {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config),
             "--port", str(port), "--database", f"sqlite:///{tmp_path / 'gateway.db'}"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=bare)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for_health(url, process, log)
            answer = httpx.get(url + path, timeout=10)
            assert answer.status_code == 200, answer.text
            if config == WORKFLOWS_D:
                assert answer.text == "ok"
            else:
                assert answer.json()["response"] == {"units": [], "rents": [], "count": 0}
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert "Application startup complete" in log.read_text()
    assert "ERROR" not in log.read_text()


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited:\n{log.read_text()}"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
    raise AssertionError(f"the server did not answer /healthz within 30 s:\n{log.read_text()}")


def test_every_custom_event_example_is_used() -> None:
    registry = load([WORKFLOWS_D])
    text = "\n".join(path.read_text() for path in sorted(WORKFLOWS_D.rglob("*.y*ml")))
    called = set(re.findall(r"^\s*event:\s*([A-Za-z0-9][A-Za-z0-9_-]*)\s*$", text, re.M))
    assert registry.events
    assert set(registry.events) <= called


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage(f"sqlite:///{tmp_path / 'gateway.db'}")


@pytest.fixture
async def client(serve: Serve, storage: Storage) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(WORKFLOWS_D, storage) as gateway:
        yield gateway.client


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


# --- webhooks and integrations (examples/) ---------------------------------------------------

STRIPE_SECRET = "whsec_example_0123456789"
GITHUB_SECRET = "github-example-secret"


@pytest.fixture
def rates_api() -> Iterator[str]:
    with loopback_rates_api() as url:
        yield url


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as found:
        yield found


@pytest.fixture
async def stripe_client(serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    """examples/stripe-webhooks with its secret set."""
    async with serve(STRIPE_WEBHOOKS,
                     environment={"STRIPE_WEBHOOK_SECRET": STRIPE_SECRET}) as gateway:
        yield gateway.client


@pytest.fixture
async def github_client(serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    """examples/github-webhooks with its secret set."""
    async with serve(GITHUB_WEBHOOKS,
                     environment={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}) as gateway:
        yield gateway.client


@pytest.fixture
async def rates_client(serve: Serve, rates_api: str, inbox: tuple[Inbox, int],
                       ) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """examples/exchange-rates with the rate API and the SMTP server on loopback, and an
    admin key."""
    registry = load([EXCHANGE_RATES])
    registry = dataclasses.replace(registry, settings=dataclasses.replace(
        registry.settings, smtp_host="127.0.0.1", smtp_port=inbox[1]))
    async with serve(registry, environment={"RATES_API_URL": rates_api}) as gateway:
        key = new_key()
        await gateway.storage.keys.create_key("ops", key_hash(key), datetime.now(UTC))
        yield gateway.client, key


def _stripe_event(event_id: str, kind: str) -> str:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "livemode": False,
                       "data": {"object": {"id": "in_1", "object": "invoice",
                                           "customer": "cus_1", "amount_paid": 2500,
                                           "currency": "eur"}}})


async def test_stripe_invoice_paid_is_verified_and_recorded_once(
        stripe_client: httpx.AsyncClient) -> None:
    client = stripe_client
    event = _stripe_event("evt_1", "invoice.paid")
    signed = {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
        event, STRIPE_SECRET), "Content-Type": "application/json"}
    first = await client.post("/api/1.1/wf/stripe-events", content=event, headers=signed)
    assert first.status_code == 200, first.text
    assert first.json()["response"]["received"] is True
    again = await client.post("/api/1.1/wf/stripe-events", content=event, headers=signed)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    forged = await client.post("/api/1.1/wf/stripe-events", content=event.replace("2500", "1"),
                               headers=signed)
    assert forged.status_code == 401
    assert forged.json()["body"]["status"] == "INVALID_SIGNATURE"
    other = _stripe_event("evt_2", "customer.created")
    ignored = await client.post("/api/1.1/wf/stripe-events", content=other, headers={
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            other, STRIPE_SECRET)})
    assert ignored.status_code == 200
    assert ignored.json()["body"]["status"] == "NOT_RUN"


async def test_github_push_is_verified_and_other_events_ignored(
        github_client: httpx.AsyncClient) -> None:
    client = github_client
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"},
                       "commits": [{"id": "a"}, {"id": "b"}], "pusher": {"name": "ada"}})
    digest = hmac.new(GITHUB_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"}
    pushed = await client.post("/api/1.1/wf/github-push", content=body, headers=headers)
    assert pushed.status_code == 200, pushed.text
    again = await client.post("/api/1.1/wf/github-push", content=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    ping = await client.post("/api/1.1/wf/github-push", content=body, headers={
        **headers, "X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-2"})
    assert ping.status_code == 200 and ping.json()["body"]["status"] == "NOT_RUN"
    unsigned = await client.post("/api/1.1/wf/github-push", content=body, headers={
        **headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert unsigned.status_code == 401


async def test_email_rates_calls_the_api_and_mails_the_result(
        rates_client: tuple[httpx.AsyncClient, str], inbox: tuple[Inbox, int]) -> None:
    client, key = rates_client
    auth = {"Authorization": f"Bearer {key}"}
    sent = await client.post("/api/1.1/wf/email-rates", json={"to": "ops@example.com",
                                                                "base": "USD"}, headers=auth)
    assert sent.status_code == 200, sent.text
    assert sent.json()["response"] == {"sent_to": "ops@example.com", "rates": 2}
    message = inbox[0].messages[0]
    assert message["Subject"] == "Exchange rates for USD"
    assert message.get_body(("plain",)).get_content().split() == ["GBP:", "0.86", "USD:", "1.08"]
    assert "<td>USD</td>" in message.get_body(("html",)).get_content()
    assert (await client.post("/api/1.1/wf/email-rates", json={"to": "x@example.com"})
            ).status_code == 401


@pytest.fixture
async def rentals_client(serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                         ) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """examples/rentals with no environment variable set, and an admin key; run in the
    test's folder, where its file store (`rentals-files`, relative) is kept."""
    monkeypatch.chdir(tmp_path)
    async with serve(RENTALS, environment={}) as gateway:
        key = new_key()
        await gateway.storage.keys.create_key("landlord", key_hash(key), datetime.now(UTC))
        yield gateway.client, key


SOHO = {"address": "12 Greek St, London", "lat": 51.5136, "lng": -0.1312}  # 0.7 km from
CAMDEN = {"address": "Camden High St, London", "lat": 51.539, "lng": -0.1426}  # 3.6 km
BRIGHTON = {"address": "Brighton", "lat": 50.8225, "lng": -0.1372}  # 76 km (47 miles)
CENTRAL_LONDON = {"lat": 51.5074, "lng": -0.1278}


async def test_rentals_create_units_and_find_them_nearby(
        rentals_client: tuple[httpx.AsyncClient, str]) -> None:
    client, key = rentals_client
    admin = {"Authorization": f"Bearer {key}"}
    made = {}
    for title, rent, location, status in [("Soho flat", 2100, SOHO, None),
                                          ("Camden studio", 1500, CAMDEN, "Reserved"),
                                          ("Brighton house", 1800, BRIGHTON, "available")]:
        body = {"title": title, "rent": rent, "location": location}
        if status:
            body["status"] = status
        created = await client.post("/api/1.1/wf/createUnit", json=body, headers=admin)
        assert created.status_code == 200, created.text
        made[title] = created.json()["response"]
    assert made["Soho flat"]["status"] == "available"  # the default
    assert {k: made["Camden studio"][k] for k in ("status", "status_label", "color")} == {
        "status": "reserved", "status_label": "Reserved", "color": "orange"}
    assert (await client.post("/api/1.1/wf/createUnit", json={
        "title": "x", "rent": 1, "location": SOHO})).status_code == 401
    vacant = await client.post("/api/1.1/wf/createUnit", headers=admin, json={
        "title": "Mystery", "rent": 900, "location": SOHO, "status": "vacant"})
    assert vacant.status_code == 400
    assert vacant.json()["body"]["status"] == "INVALID_DATA"
    assert "option set unit_status" in vacant.json()["body"]["message"]

    # Camden is reserved, so only Soho is available within 5 km; 50 miles reach Brighton.
    near = await client.get("/api/1.1/wf/nearbyUnits", params={**CENTRAL_LONDON, "range": 5})
    assert near.json()["response"] == {"units": ["Soho flat"], "rents": [2100], "count": 1}
    far = await client.get("/api/1.1/wf/nearbyUnits",
                           params={**CENTRAL_LONDON, "range": 50, "unit": "miles"})
    assert far.json()["response"]["units"] == ["Brighton house", "Soho flat"]

    # The Data API: Bubble's URL name from the type's display, fields keyed by displays,
    # the option by its display, and a geographic_search constraint of Bubble's shape.
    soho = await client.get(f"/api/1.1/obj/rentalunit/{made['Soho flat']['id']}")
    assert soho.status_code == 200, soho.text
    record = soho.json()["response"]
    assert {k: record[k] for k in ("Title", "Status", "Location", "Monthly Rent")} == {
        "Title": "Soho flat", "Status": "Available", "Location": SOHO, "Monthly Rent": 2100}
    constraints = [{"key": "Location", "constraint_type": "geographic_search",
                    "value": {"range": 5, "unit": "km", "origin": CENTRAL_LONDON}}]
    found = await client.get("/api/1.1/obj/rentalunit",
                             params={"constraints": json.dumps(constraints)})
    assert sorted(r["Title"] for r in found.json()["response"]["results"]) == [
        "Camden studio", "Soho flat"]
    anonymous = await client.post("/api/1.1/obj/rentalunit", json={"Title": "x"})
    assert anonymous.status_code == 401  # no privacy rules: admin keys write


def png_base64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), "green").save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


async def test_rentals_keep_a_photo_and_a_private_lease(
        rentals_client: tuple[httpx.AsyncClient, str], tmp_path: Path) -> None:
    client, key = rentals_client
    admin = {"Authorization": f"Bearer {key}"}
    lease, picture = b"%PDF-1.4 a lease", png_base64()
    created = await client.post("/api/1.1/wf/createUnit", headers=admin, json={
        "title": "Soho flat", "rent": 2100, "location": SOHO,
        "photo": {"filename": "soho.png", "contents": "data:image/png;base64," + picture},
        "lease": {"filename": "lease.pdf", "contents": base64.b64encode(lease).decode()}})
    assert created.status_code == 200, created.text
    answer = created.json()["response"]
    assert answer["photo"].startswith("/files/") and answer["photo"].endswith("/soho.png")
    photo = await client.get(answer["photo"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert photo.content == base64.b64decode(picture)
    assert (tmp_path / "rentals-files").is_dir()  # the example's folder, in the working one

    # The Data API answers the private lease as a signed link; its bare path is refused.
    record = (await client.get(f"/api/1.1/obj/rentalunit/{answer['id']}")).json()["response"]
    assert record["Photo"] == answer["photo"]
    assert "/files/private/" in record["Lease"] and "signature=" in record["Lease"]
    signed = await client.get(record["Lease"])
    assert signed.status_code == 200 and signed.content == lease
    assert signed.headers["content-disposition"].startswith("attachment")
    assert (await client.get(record["Lease"].split("?")[0])).status_code == 403

    # Deleting the unit makes both unreachable at once.
    gone = await client.delete(f"/api/1.1/obj/rentalunit/{answer['id']}", headers=admin)
    assert gone.status_code == 204, gone.text
    assert (await client.get(answer["photo"])).status_code == 404
    assert (await client.get(record["Lease"])).status_code == 404


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
    assert job.data["identity"] == {"kind": "user", "user_id": user, "email": "bo@example.com"}


async def test_welcome_now_cancels_the_due_welcome_and_reads_what_it_cancelled(
        client: httpx.AsyncClient, storage: Storage) -> None:
    signed = await client.post("/api/1.1/wf/signup", json={
        "email": "di@example.com", "password": "correct horse"})
    user = signed.json()["response"]["user_id"]
    (welcome,) = await storage.jobs.list_jobs(workflow="send-welcome")
    registry = load([WORKFLOWS_D])
    interpreter = with_jobs(Interpreter(registry, storage))
    params = {"job": welcome.id, "user": user}
    for cancelled in (1, 0):  # the second time, there is nothing left to cancel
        result = await interpreter.run(registry.workflows["welcome-now"], params,
                                       origin=Origin("cli"), identity=ADMIN)
        assert result.reply is not None and result.reply.data == {"cancelled": cancelled}
    jobs = await storage.jobs.list_jobs(workflow="send-welcome")
    assert len(jobs) == 2 and welcome.id in {j.id for j in jobs if j.status == "cancelled"}
