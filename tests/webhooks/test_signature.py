"""Webhook signatures (`verify:`), checked with the providers' published examples and their
own libraries, on both backends: a bad signature is a recorded 401 that runs no step."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
import stripe
from click.testing import CliRunner
from conftest import served

from gateway.cli import main
from gateway.compiler.loader import check
from gateway.storage import Storage
from gateway.webhooks import signature
from gateway.webhooks.guard import raw_headers

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STRIPE_SECRET = "whsec_test_5f0c2b1d9a8e4c7b"
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-key-0123456789").decode()

SETTINGS = """\
kind: settings
secrets: [HOOK_SECRET]
"""
ORDER = """\
kind: data_type
name: delivery
fields: {event: {type: text}}
"""


def receiver(verify: str, name: str = "hook", params: str = "{id: {type: text}}",
             extra: str = "") -> str:
    return f"""\
kind: api_workflow
name: {name}
expose: true
auth: none
verify: {verify}
{extra}
params: {params}
steps:
  - {{id: made, action: create_thing, type: delivery, fields: {{event: "{{{{ params.id }}}}"}}}}
  - action: return_data
    data: {{id: "{{{{ params.id }}}}", body: "{{{{ request.body | length }}}}"}}
"""


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, database: str, secret: str, *documents: str,
                  clock: Callable[[], datetime] = lambda: NOW,
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    config = "\n---\n".join(textwrap.dedent(doc).strip() for doc in (SETTINGS, ORDER, *documents))
    async with served(config, database, home=tmp_path, environment={"HOOK_SECRET": secret},
                      clock=clock, peer=("203.0.113.9", 4000)) as served_app:
        yield served_app.client, served_app.storage


async def deliveries(storage: Storage) -> int:
    page = await storage.records.search("delivery", [], [], 100)
    return page.count


def envelope(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status and body["body"]["status"] == code
    return str(body["body"]["message"])


async def recorded(storage: Storage, response: httpx.Response) -> dict[str, Any]:
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(response.headers["x-run-id"])
    assert run is not None
    return run


# --- stripe -----------------------------------------------------------------------------------

STRIPE = receiver("{scheme: stripe, secret: '{{ secrets.HOOK_SECRET }}'}")
EVENT = json.dumps({"id": "evt_1", "type": "invoice.paid"})


async def test_stripe_signed_by_stripes_library_runs(tmp_path: Path, storage_url: str) -> None:
    header = stripe.WebhookSignature.generate_signature_header(
        EVENT, STRIPE_SECRET, timestamp=int(NOW.timestamp()) - 10)
    # Stripe's own library accepts what we accept (its clock is the real one: no tolerance).
    stripe.WebhookSignature.verify_header(EVENT, header, STRIPE_SECRET, tolerance=None)
    async with gateway(tmp_path, storage_url, STRIPE_SECRET, STRIPE) as (client, storage):
        response = await client.post("/api/1.1/wf/hook", content=EVENT,
                                     headers={"Stripe-Signature": header,
                                              "Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.json()["response"] == {"id": "evt_1", "body": len(EVENT)}
        assert await deliveries(storage) == 1


async def test_stripe_any_of_several_v1_signatures(tmp_path: Path, storage_url: str) -> None:
    stamp = int(NOW.timestamp())
    good = stripe.WebhookSignature.generate_signature_header(EVENT, STRIPE_SECRET, stamp)
    header = f"t={stamp},v1={'0' * 64},{good.split(',')[1]},v0=abc"
    async with gateway(tmp_path, storage_url, STRIPE_SECRET, STRIPE) as (client, storage):
        response = await client.post("/api/1.1/wf/hook", content=EVENT,
                                     headers={"Stripe-Signature": header})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("case", ["tampered", "old", "future", "other secret", "no header",
                                  "garbage", "no v1", "empty v1", "superscript"])
async def test_stripe_refusals_are_recorded_401s_that_run_nothing(
        tmp_path: Path, storage_url: str, case: str) -> None:
    stamp = int(NOW.timestamp())
    body = EVENT
    secret = STRIPE_SECRET
    if case == "old":
        stamp -= 301
    elif case == "future":
        stamp += 301
    elif case == "other secret":
        secret = "whsec_other"
    header: str | None = stripe.WebhookSignature.generate_signature_header(body, secret, stamp)
    if case == "tampered":
        body = EVENT.replace("evt_1", "evt_2")
    elif case == "no header":
        header = None
    elif case == "garbage":
        header = "\x00\x01" + "=,=" * 1000
    elif case == "no v1":
        header = f"t={stamp}"
    elif case == "empty v1":
        header = f"t={stamp},v1="
    elif case == "superscript":  # a digit to `isdigit()`, not to int() nor to a sender
        header = "t=\u00b2,v1=" + "0" * 64
    async with gateway(tmp_path, storage_url, STRIPE_SECRET, STRIPE) as (client, storage):
        headers = {} if header is None else {"Stripe-Signature": header.encode("latin-1")}
        response = await client.post("/api/1.1/wf/hook", content=body, headers=headers)
        message = envelope(response, 401, "INVALID_SIGNATURE")
        assert "\x00" not in message
        assert await deliveries(storage) == 0
        run = await recorded(storage, response)
        assert run["status"] == "rejected"
        assert run["error"]["code"] == "INVALID_SIGNATURE"
        assert run["steps"] == []


async def test_the_signature_is_checked_before_the_body_is_parsed(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url, STRIPE_SECRET, STRIPE) as (client, _):
        response = await client.post("/api/1.1/wf/hook", content=b"{not json",
                                     headers={"Content-Type": "application/json"})
        envelope(response, 401, "INVALID_SIGNATURE")
        stamp = int(NOW.timestamp())
        header = stripe.WebhookSignature.generate_signature_header("{not json", STRIPE_SECRET,
                                                                   stamp)
        response = await client.post("/api/1.1/wf/hook", content=b"{not json",
                                     headers={"Stripe-Signature": header})
        envelope(response, 400, "INVALID_BODY")  # signed, then parsed


# --- github and slack: their documented examples ----------------------------------------------

GITHUB = receiver("{scheme: github, secret: '{{ secrets.HOOK_SECRET }}'}",
                  params="{id: {type: text, optional: true}}")


async def test_githubs_documented_example(tmp_path: Path) -> None:
    # docs.github.com, "Validating webhook deliveries": the secret, payload and signature.
    database = f"sqlite:///{tmp_path / 'g.db'}"
    async with gateway(tmp_path, database, "It's a Secret to Everybody", GITHUB) as (client, _):
        ok = await client.post("/api/1.1/wf/hook", content=b"Hello, World!", headers={
            "X-Hub-Signature-256":
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "Content-Type": "text/plain"})
        assert ok.status_code != 401, ok.text
        bad = await client.post("/api/1.1/wf/hook", content=b"Hello, World?", headers={
            "X-Hub-Signature-256":
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"})
        envelope(bad, 401, "INVALID_SIGNATURE")


SLACK = receiver("{scheme: slack, secret: '{{ secrets.HOOK_SECRET }}'}",
                 params="{command: {type: text}}").replace("params.id", "params.command")
SLACK_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    "G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-"
    "collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700"
    "885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2"
    "c447fce8b6703c")


async def test_slacks_documented_example(tmp_path: Path) -> None:
    # api.slack.com, "Verifying requests from Slack": the secret, timestamp, body, signature.
    sent = datetime.fromtimestamp(1531420618 + 60, UTC)
    database = f"sqlite:///{tmp_path / 's.db'}"
    async with gateway(tmp_path, database, "8f742231b10e8888abcd99yyyzzz85a5", SLACK,
                       clock=lambda: sent) as (client, storage):
        headers = {
            "X-Slack-Request-Timestamp": "1531420618",
            "X-Slack-Signature":
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "Content-Type": "application/x-www-form-urlencoded"}
        ok = await client.post("/api/1.1/wf/hook", content=SLACK_BODY, headers=headers)
        assert ok.status_code == 200, ok.text
        assert ok.json()["response"]["id"] == "/webhook-collect"
        late = await client.post("/api/1.1/wf/hook", content=SLACK_BODY, headers={
            **headers, "X-Slack-Request-Timestamp": "1531420000"})
        envelope(late, 401, "INVALID_SIGNATURE")


# --- standard webhooks and plain HMAC ---------------------------------------------------------

STANDARD = receiver("{scheme: standard-webhooks, secret: '{{ secrets.HOOK_SECRET }}'}")


async def test_standard_webhooks_signed_by_its_library(tmp_path: Path, storage_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # the library checks against its own clock
    signer = standardwebhooks.Webhook(WHSEC)
    signature = signer.sign("msg_1", now, EVENT)
    other = standardwebhooks.Webhook("whsec_" + base64.b64encode(b"x" * 32).decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": f"{other.sign('msg_1', now, EVENT)} {signature}"}
    signer.verify(EVENT, headers)  # the library accepts what we are about to accept
    async with gateway(tmp_path, storage_url, WHSEC, STANDARD,
                       clock=lambda: now) as (client, storage):
        ok = await client.post("/api/1.1/wf/hook", content=EVENT, headers=headers)
        assert ok.status_code == 200, ok.text
        wrong_id = await client.post("/api/1.1/wf/hook", content=EVENT,
                                     headers={**headers, "webhook-id": "msg_2"})
        envelope(wrong_id, 401, "INVALID_SIGNATURE")
        assert await deliveries(storage) == 1


async def test_a_malformed_standard_webhooks_secret_is_the_operators_to_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The sender is told only that its signature could not be checked; the server log says
    why. A secret with a stray line break, as the provider's library reads it, works."""
    now = datetime.now(UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(WHSEC).sign("msg_1", now, EVENT)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature}
    database = f"sqlite:///{tmp_path / 'g.db'}"
    async with gateway(tmp_path, database, "whsec_abc", STANDARD, clock=lambda: now) as (
            client, _):
        refused = await client.post("/api/1.1/wf/hook", content=EVENT, headers=headers)
    assert "whsec_" not in envelope(refused, 401, "INVALID_SIGNATURE")
    assert "not a whsec_ base64 key" in caplog.text
    async with gateway(tmp_path / "b", database, WHSEC + "\n", STANDARD,
                       clock=lambda: now) as (client, _):
        ok = await client.post("/api/1.1/wf/hook", content=EVENT, headers=headers)
    assert ok.status_code == 200, ok.text


HMAC = receiver("{scheme: hmac, secret: '{{ secrets.HOOK_SECRET }}', header: X-Signature, "
                "algorithm: sha512, prefix: 'sha512=', encoding: base64, "
                "timestamp_header: X-Timestamp, tolerance: 60}")


async def test_hmac_with_every_option(tmp_path: Path, storage_url: str) -> None:
    stamp = str(int(NOW.timestamp()))
    digest = hmac.new(b"plain-secret", stamp.encode() + b"." + EVENT.encode(),
                      hashlib.sha512).digest()
    signed = "sha512=" + base64.b64encode(digest).decode()
    async with gateway(tmp_path, storage_url, "plain-secret", HMAC) as (client, _):
        ok = await client.post("/api/1.1/wf/hook", content=EVENT,
                               headers={"X-Signature": signed, "X-Timestamp": stamp})
        assert ok.status_code == 200, ok.text
        late = await client.post("/api/1.1/wf/hook", content=EVENT, headers={
            "X-Signature": signed, "X-Timestamp": str(int(NOW.timestamp()) - 61)})
        envelope(late, 401, "INVALID_SIGNATURE")
        no_stamp = await client.post("/api/1.1/wf/hook", content=EVENT,
                                     headers={"X-Signature": signed})
        envelope(no_stamp, 401, "INVALID_SIGNATURE")


# --- the config -------------------------------------------------------------------------------


@pytest.mark.parametrize(("verify", "code"), [
    ("{scheme: stripe, secret: literal}", "schema.pattern"),
    ("{scheme: stripe, secret: '{{ secrets.UNDECLARED }}'}", "ref.unknown-secret"),
    ("{scheme: stripe, secret: '{{ params.id }}'}", "template.undefined-name"),
    ("{scheme: paypal, secret: '{{ secrets.HOOK_SECRET }}'}", "schema.enum"),
    ("{scheme: hmac, secret: '{{ secrets.HOOK_SECRET }}'}", "schema.required"),
])
def test_config_mistakes_are_diagnostics(tmp_path: Path, verify: str, code: str) -> None:
    (tmp_path / "w.yaml").write_text("\n---\n".join(
        textwrap.dedent(doc).strip() for doc in (SETTINGS, ORDER, receiver(verify))))
    _, problems = check([tmp_path])
    assert code in {p.code for p in problems}, problems


@pytest.mark.parametrize(("extra", "params", "pointer"), [
    ("method: GET", "{id: {type: text}}", "/method"),
    ("", "{id: {type: text, in: query}}", "/params/id/in"),
])
def test_parameters_no_signature_covers_are_refused(tmp_path: Path, extra: str, params: str,
                                                    pointer: str) -> None:
    verify = "{scheme: github, secret: '{{ secrets.HOOK_SECRET }}'}"
    (tmp_path / "w.yaml").write_text("\n---\n".join(textwrap.dedent(doc).strip() for doc in (
        SETTINGS, ORDER, receiver(verify, params=params, extra=extra))))
    _, problems = check([tmp_path])
    assert [(p.code, p.pointer) for p in problems] == [("verify.unsigned-params", pointer)]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=X", "text/plain"])
async def test_a_signed_json_body_is_read_as_json_whatever_the_content_type(
        tmp_path: Path, storage_url: str, content_type: str) -> None:
    """The Content-Type is not signed: a replay that changes it must not have the signed
    bytes read another way (a form's `&id=…`, a part, inside a JSON string)."""
    text = ("--X\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\nforged\r\n--X--\r\n"
            if content_type.startswith("multipart") else "&id=forged&")
    body = json.dumps({"id": "evt_1", "title": text})
    header = "sha256=" + hmac.new(b"gh-secret", body.encode(), hashlib.sha256).hexdigest()
    async with gateway(tmp_path, storage_url, "gh-secret", GITHUB) as (client, storage):
        for kind in ("application/json", content_type):
            response = await client.post("/api/1.1/wf/hook", content=body, headers={
                "X-Hub-Signature-256": header, "Content-Type": kind})
            assert response.status_code == 200, response.text
            assert response.json()["response"]["id"] == "evt_1"
        form = "id=evt_2&x=1"  # a signed form (Slack's commands) is still a form
        signed = "sha256=" + hmac.new(b"gh-secret", form.encode(), hashlib.sha256).hexdigest()
        response = await client.post("/api/1.1/wf/hook", content=form, headers={
            "X-Hub-Signature-256": signed,
            "Content-Type": "application/x-www-form-urlencoded"})
        assert response.json()["response"]["id"] == "evt_2"


def test_serve_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("\n---\n".join(
        textwrap.dedent(doc).strip() for doc in (SETTINGS, ORDER, STRIPE)))
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path)], env={})
    assert result.exit_code != 0
    assert "HOOK_SECRET" in result.output


# --- the HMAC and the headers it reads --------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_the_kept_keys_give_the_standard_librarys_hmac(algorithm: str) -> None:
    for size in (0, 1, 20, 32, 63, 64, 65, 127, 128, 129, 300):
        key = bytes((i * 7 + size) % 256 for i in range(size))
        for message in (b"", b"x", b"1700000000." + bytes(range(256)) * 5):
            for _ in range(2):  # made, then from the kept hashes
                assert signature._mac(key, message, algorithm) == \
                    hmac.digest(key, message, algorithm)


def test_verify_reads_only_its_schemes_headers_whatever_their_case() -> None:
    headers = [(b"Stripe-Signature", b"t=1,v1=a"), (b"x-other", b"no"),
               (b"stripe-signature", b"t=2,v1=b")]
    assert raw_headers(headers, frozenset({b"stripe-signature"})) == \
        {"stripe-signature": "t=2,v1=b"}  # a repeated header keeps its last
    assert raw_headers(headers)["x-other"] == "no"
