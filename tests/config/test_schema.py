"""The JSON Schema of the config, and the diagnostics `gateway.config.schema.check` makes of
it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.config import schema
from gateway.config.source import Document, load_text
from gateway.core.errors import Diagnostic

ROOT = Path(__file__).resolve().parents[2]

# --- helpers ----------------------------------------------------------------------------------


def documents(text: str) -> list[Document]:
    docs, problems, _ = load_text(textwrap.dedent(text), "config.yaml")
    assert problems == []
    return docs


def problems(text: str) -> list[tuple[int, int, str, str, str]]:
    """(line, column, code, pointer, message) of every schema problem in `text`."""
    found: list[Diagnostic] = []
    for doc in documents(text):
        found.extend(schema.check(doc))
    return [(d.line, d.column, d.code, d.pointer, d.message) for d in found]


def subschemas(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object inside `node`, with a pointer to it."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from subschemas(item, f"{where}/{index}")
    elif isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key not in ("const", "enum", "default", "examples"):
                yield from subschemas(value, f"{where}/{key}")


def resolved(node: dict[str, Any]) -> dict[str, Any]:
    document = schema.schema_document()
    while "$ref" in node and "description" not in node:
        node = document["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


# --- the schema itself ------------------------------------------------------------------------


def test_the_schema_is_valid_draft_2020_12() -> None:
    document = schema.schema_document()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)


def test_a_source_checkout_reads_the_repository_schema() -> None:
    assert Path(str(schema.schema_source())) == ROOT / "schemas" / "gateway.schema.json"


def test_every_property_and_definition_has_a_description() -> None:
    document = schema.schema_document()
    undocumented = [
        f"{where}/properties/{name}"
        for where, node in subschemas(document)
        for name, sub in node.get("properties", {}).items()
        if isinstance(sub, dict) and "description" not in resolved(sub)
        and where.count("/if") == 0  # dispatch conditions describe nothing
    ]
    undocumented += [name for name, sub in document["$defs"].items() if "description" not in sub]
    assert undocumented == []


def test_unknown_keys_are_refused_everywhere() -> None:
    open_mappings = [
        where for where, node in subschemas(schema.schema_document())
        if "properties" in node and "/if" not in where
        and node.get("additionalProperties") is not False and where not in ("", "/$defs/step")
    ]
    # The root and `step` only dispatch: each branch they lead to is closed.
    assert open_mappings == []


def test_every_template_pattern_is_the_one_the_checker_knows() -> None:
    patterns = {n["pattern"] for _, n in subschemas(schema.schema_document()) if "pattern" in n}
    for pattern in patterns:
        re.compile(pattern)
    assert {p for p in patterns if "{" in p and "ms|" not in p} == {schema.TEMPLATE_PATTERN}
    assert schema.schema_document()["$defs"]["duration"]["pattern"] == schema.DURATION_PATTERN


@pytest.mark.parametrize(("text", "ok"), [
    ("99999d", True), ("999999h", True), ("99999999m", True), ("9999999999s", True),
    ("9999999999999ms", True), ("100000d", False), ("3000000d", False), ("99999999999d", False),
    ("1000000h", False), ("5 m", False)])
def test_a_duration_is_bounded_so_that_a_date_plus_it_is_a_date(text: str, ok: bool) -> None:
    found = problems(API + f"idempotency: {{key: '{{{{ params.x }}}}', ttl: {text!r}}}\n"
                     "steps: [{action: terminate}]\n")
    assert (found == []) is ok, found


def test_codes_list_every_keyword_that_can_fail() -> None:
    keywords = {
        key for where, node in subschemas(schema.schema_document()) if "/if" not in where
        for key in node
        if not (key == "const" and where.rsplit("/", 1)[-1] in ("kind", "action"))
    }
    asserting = keywords & set(Draft202012Validator.VALIDATORS) - {
        "properties", "items", "allOf", "$ref", "if", "then", "else", "propertyNames",
    }
    codes = {"schema." + re.sub(r"(?<!^)([A-Z])", r"-\1", k).lower() for k in asserting}
    assert codes | {"schema.kind"} == schema.CODES


def test_actions_and_kinds_dispatch_to_a_definition_each() -> None:
    document = schema.schema_document()
    kinds = document["properties"]["kind"]["enum"]
    actions = document["$defs"]["step"]["properties"]["action"]["enum"]
    assert [b["then"]["$ref"] for b in document["allOf"]] == [f"#/$defs/{k}" for k in kinds]
    assert [b["then"]["$ref"] for b in document["$defs"]["step"]["allOf"]] == [
        f"#/$defs/step_{a}" for a in actions
    ]
    assert "schedule_workflow" in actions and "database_trigger" in kinds


# --- valid documents --------------------------------------------------------------------------

VALID = """\
kind: api_workflow
name: create-lead
label: Create a lead
description: From the website form.
expose: true
auth: none
method: POST
ignore_privacy_rules: false
allow_public_privileged: false
only_when: "{{ params.email }}"
return_200_if_condition_fails: true
timezone: "{{ request.headers.get('x-timezone') }}"
error_redirect: "{{ request.query.back }}"
params:
  name: {type: text, description: Full name}
  email: {type: text}
  score: {type: number, optional: true, default: 0}
  tags: {type: text, list: true, optional: true}
  source: {type: text, in: query, optional: true}
  owner: {type: user, optional: true}
verify: {scheme: hmac, secret: "{{ secrets.STRIPE_WEBHOOK_SECRET }}", tolerance: 300,
         header: X-Signature, algorithm: sha256, prefix: "sha256=", encoding: hex,
         timestamp_header: X-Timestamp}
idempotency: {key: "{{ params.email }}", ttl: 24h}
rate_limit: {requests: 100, per: 1m, by: ip}
concurrency: {key: "{{ params.email }}", limit: 2, max_wait: 5s}
throttle: {key: "{{ params.email }}", limit: 5, per: 1s, max_wait: 2s}
debounce: {key: "{{ params.email }}", period: 10s}
steps:
  - {id: values, action: set, values: {a: 1}, description: named values}
  - id: lead
    action: create_thing
    type: lead
    fields: {name: "{{ params.name }}", score: "{{ params.score }}"}
    only_when: "{{ params.name }}"
    on_error: continue
  - {action: make_changes, thing: "{{ steps.lead._id }}", type: lead, fields: {score: 1}}
  - {action: make_changes_to_list, things: "{{ steps.found.results }}", type: lead, fields: {}}
  - {action: delete_thing, thing: "{{ steps.lead }}", type: lead}
  - {action: delete_list, things: [a, b]}
  - {id: one, action: get_thing, type: lead, thing: "{{ params.id }}"}
  - id: found
    action: search
    type: lead
    constraints:
      - {key: email, constraint: equals, value: "{{ params.email }}"}
      - {key: phone, constraint: is_empty}
    sort: [{key: score, descending: true}, {key: name, descending: "{{ params.desc }}"}]
    limit: "{{ params.limit }}"
    cursor: "{{ params.cursor }}"
  - {id: norm, action: trigger_event, event: normalize-email, params: {email: x}}
  - {action: signup_user, email: "{{ params.email }}", password: "{{ params.name }}",
     fields: {}, remember: true}
  - {action: login_user, email: "{{ params.email }}", password: x, remember: "{{ params.desc }}"}
  - {action: logout_user}
  - {action: update_credentials, email: a@example.com, password: "{{ params.name }}",
     current_password: "{{ params.desc }}", keep_other_sessions: true, user: "{{ params.name }}"}
  - {action: assign_temp_password, user: "{{ params.name }}"}
  - {action: send_password_reset_email, email: "{{ params.email }}",
     link: "https://app.example.com/reset?token={token}", expires_in: 600, subject: Reset,
     text: "Reset: {link}", html: "<a href='{link}'>Reset</a>", from: ops@example.com}
  - {action: reset_password, token: "{{ params.name }}", password: "{{ params.desc }}",
     email: "{{ params.email }}"}
  - {action: logout_other_sessions}
  - id: call
    action: http_request
    method: POST
    url: "https://api.example.com/leads/{{ params.name }}"
    headers: {Authorization: "Bearer {{ secrets.STRIPE_WEBHOOK_SECRET }}"}
    query: {a: "1"}
    json: {name: "{{ params.name }}"}
    timeout: 10s
    retry: {max_attempts: 3, backoff: 500ms}
    expect_status: [200, 201]
  - {action: http_request, url: "https://example.com", form: {a: b}, expect_status: 204}
  - {action: http_request, url: "https://example.com", body: "raw text"}
  - action: send_email
    to: [ops@example.com]
    cc: a@example.com
    bcc: "{{ params.email }}"
    reply_to: b@example.com
    from: gateway@example.com
    subject: "New lead {{ params.name }}"
    text: "Hello"
    html: "<p>Hello</p>"
  - {action: log, message: "hello {{ params.name }}", level: warning, only_when: false}
  - {action: fail, status: 409, code: DUPLICATE_LEAD, message: exists, only_when: true}
  - {action: fail, status: "{{ params.status }}", message: templated status}
  - {action: return_data, text: "a,b", content_type: text/csv, status: 201, headers: {X-A: b}}
  - {action: return_data, status: "{{ params.status }}"}
  - {action: return_data, data: {id: "{{ steps.lead._id }}"}}
  - {action: return_redirect, url: "{{ request.query.back }}", data: {id: "{{ steps.lead._id }}"}}
  - {id: later, action: schedule_workflow, workflow: welcome, delay: 5m, params: {lead: x}}
  - {action: schedule_workflow, workflow: welcome, at: "{{ now }}"}
  - {action: schedule_workflow_on_list, workflow: welcome, list: "{{ steps.found }}",
     item_param: lead, params: {}, interval: 1s, delay: 10s}
  - {id: stop, action: cancel_scheduled, job: "{{ steps.later.id }}"}
  - {action: cancel_scheduled, jobs: "{{ [steps.later.id] }}"}
  - {action: cancel_all_scheduled, workflow: create-lead}
  - {action: set_recurring_event, event: invoice, thing: "{{ steps.lead }}", frequency: monthly,
     start: "{{ now }}"}
  - action: terminate
retry: {max_attempts: 3, backoff: 10s, max_backoff: 1h}
---
kind: recurring_event
name: nightly
label: Nightly
description: Every night.
cron: "0 3 * * *"
timezone: Europe/Paris
misfire: run_once
workflow: create-lead
params: {name: x}
retry: {max_attempts: 2}
---
kind: recurring_event
name: invoice
type: lead
ignore_privacy_rules: true
steps: [{action: log, message: "{{ thing._id }}"}]
---
kind: recurring_event
name: often
every: 15m
steps: [{action: terminate}]
---
kind: database_trigger
name: score-changed
label: Score changed
description: Reacts.
type: lead
events: [create, change]
only_when: "{{ before and after and before.score != after.score }}"
timezone: Europe/Paris
singleton: {key: "{{ after._id }}"}
steps: [{action: log, message: changed}]
retry: {max_attempts: 2}
---
kind: api_workflow
name: rebuild-index
auth: admin
params: {index: {type: text}}
singleton: {key: "{{ params.index }}"}
steps: [{action: terminate}]
---
kind: custom_event
name: normalize-email
label: Normalize
description: Lowercases an email.
params: {email: {type: text, list: false, optional: false, default: x, description: e}}
returns: {email: {type: text, list: false, optional: true, description: the address}}
steps:
  - action: return_data
    data: {email: "{{ params.email | lower }}"}
---
kind: data_type
name: lead
label: Lead
description: A prospect.
fields:
  name: {type: text, description: Full name}
  email: {type: text, unique: true, indexed: true}
  score: {type: number, default: 0}
  owner: {type: user}
  tags: {type: text, list: true}
privacy:
  - name: owners see their leads
    when: "{{ thing.owner == current_user._id }}"
    find_in_searches: true
    view_fields: all
  - {name: staff see names, when: "{{ current_user.staff }}", view_fields: [name]}
everyone_else: {find_in_searches: false, view_fields: [name]}
---
kind: option_set
name: status
label: Status
description: Where a ticket stands.
attributes: {color: text, rank: number}
options:
  - {value: open, display: Open, attributes: {color: green, rank: 1}}
  - {value: closed}
---
kind: settings
database: sqlite:///gateway.db
secrets: [STRIPE_WEBHOOK_SECRET, SMTP_PASSWORD]
redirects: {allowed: ["https://app.example.com/"], max_url_length: 4096}
limits: {max_body_bytes: 1048576, run_timeout: 300s}
run_log: {retention: 14d, failed_retention: 30d}
server: {host: 0.0.0.0, port: 8080, workers: 2}
http: {block_private_addresses: true, timeout: 10s, max_response_bytes: 1048576}
smtp: {host: smtp.example.com, port: 587, starttls: true, tls: false, username: ops,
       password: "{{ secrets.SMTP_PASSWORD }}", from: ops@example.com, timeout: 30s}
rate_limits: {shared: true}
scheduler: {lease: 60s, concurrency: 10, poll: 1s, grace: 30s, max_depth: 10, max_list: 100000}
---
kind: settings
database: postgresql://postgres@127.0.0.1/gateway
limits: {run_timeout: 5m}
---
kind: workflow_test
name: create-lead-tests
workflow: create-lead
description: What the form must answer
cases:
  - name: stores a lead
    params: {name: Ada, email: ada@example.com}
    as: ada@example.com
    headers: {X-Source: test}
    records: [{type: lead, fields: {name: Bob}}]
    expect: {status: 200, response: {id: x}, headers: {X-Run-Id: x}}
  - name: an admin lists them
    workflow: leads
    as: admin
    expect: {code: NOT_FOUND}
"""


def test_a_valid_document_of_every_kind_passes() -> None:
    docs = documents(VALID)
    kinds = {doc.data["kind"] for doc in docs}
    assert kinds == set(schema.schema_document()["properties"]["kind"]["enum"])
    assert [schema.check(doc) for doc in docs] == [[]] * len(docs)


def test_the_valid_documents_use_every_action_and_every_key() -> None:
    document = schema.schema_document()
    api = documents(VALID)[0].data
    used = {step["action"] for step in api["steps"]}
    assert used == set(document["$defs"]["step"]["properties"]["action"]["enum"])
    # (every key in the first, but for those it cannot have beside others: `debounce` and
    # `singleton` exclude each other, so another API workflow has `singleton`)
    apis = [d.data for d in documents(VALID) if d.data.get("kind") == "api_workflow"]
    assert set(api) | {"singleton"} == set(document["$defs"]["api_workflow"]["properties"])
    assert set().union(*apis) == set(document["$defs"]["api_workflow"]["properties"])


# --- invalid documents ------------------------------------------------------------------------

API = "kind: api_workflow\nname: w\nauth: none\n"
STEP = API + "steps:\n  - "

CASES: dict[str, tuple[str, list[tuple[int, int, str, str, str]]]] = {
    "unknown key, located at the key, with a suggestion": (
        API + "expsoe: true\nsteps: [{action: terminate}]\n",
        [(4, 1, "schema.additional-properties", "/expsoe",
          "unknown key 'expsoe' (did you mean 'expose'?)")],
    ),
    "unknown key of a step, nothing close": (
        STEP + "{action: terminate, colour: red}\n",
        [(5, 25, "schema.additional-properties", "/steps/0/colour", "unknown key 'colour'")],
    ),
    "missing required keys, each named": (
        "kind: api_workflow\nlabel: x\n",
        [(1, 1, "schema.required", "", "missing required key 'auth'"),
         (1, 1, "schema.required", "", "missing required key 'name'"),
         (1, 1, "schema.required", "", "missing required key 'steps'")],
    ),
    "wrong enum": (
        API + "method: PUTT\nsteps: [{action: terminate}]\n",
        [(4, 9, "schema.enum", "/method", "'PUTT' is not one of ['GET', 'POST']")],
    ),
    "wrong type": (
        API + "expose: 'yes'\nsteps: [{action: terminate}]\n",
        [(4, 9, "schema.type", "/expose", "expected a boolean, got 'yes'")],
    ),
    "a step that is not a mapping is reported once": (
        STEP + "terminate\n",
        [(5, 5, "schema.type", "/steps/0", "expected a mapping, got 'terminate'")],
    ),
    "unknown action, with a suggestion": (
        STEP + "{action: create_thng, type: lead}\n",
        [(5, 14, "schema.enum", "/steps/0/action",
          "'create_thng' is not one of ['set', 'return_data', 'return_redirect', 'terminate', "
          "'fail', 'log', "
          "'trigger_event', 'create_thing', 'make_changes', 'make_changes_to_list', "
          "'delete_thing', 'delete_list', 'get_thing', 'search', 'signup_user', 'login_user', "
          "'logout_user', 'update_credentials', 'assign_temp_password', "
          "'send_password_reset_email', 'reset_password', 'logout_other_sessions', "
          "'http_request', 'send_email', 'schedule_workflow', "
          "'schedule_workflow_on_list', 'cancel_scheduled', 'cancel_all_scheduled', "
          "'set_recurring_event'] "
          "(did you mean 'create_thing'?)")],
    ),
    "a scheduling step takes a date or a delay, not both": (
        STEP + "{action: schedule_workflow, workflow: w, at: '2030-01-01', delay: 5m}\n",
        [(5, 64, "schema.not", "/steps/0/delay", "keys 'at' and 'delay' cannot be used together")],
    ),
    "missing required key of an action": (
        STEP + "{action: fail, status: 404}\n",
        [(5, 5, "schema.required", "/steps/0", "missing required key 'message'")],
    ),
    "bad workflow name": (
        "kind: custom_event\nname: Normalize Email\nsteps: [{action: terminate}]\n",
        [(2, 7, "schema.pattern", "/name",
          "'Normalize Email' does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'")],
    ),
    "bad step id": (
        STEP + "{id: 2nd, action: terminate}\n",
        [(5, 10, "schema.pattern", "/steps/0/id", "'2nd' does not match '^[a-z_][a-z0-9_]*$'")],
    ),
    "bad parameter name, located at the key": (
        API + "params:\n  e-mail: {type: text}\nsteps: [{action: terminate}]\n",
        [(5, 3, "schema.pattern", "/params/e-mail",
          "key 'e-mail' does not match '^[A-Za-z_][A-Za-z0-9_]*$'")],
    ),
    "reserved field name": (
        "kind: data_type\nname: lead\nfields:\n  _id: {type: text}\n",
        [(4, 3, "schema.pattern", "/fields/_id",
          "key '_id' is reserved: names starting with '_' are kept for built-in ones")],
    ),
    "bad data type name and field type": (
        "kind: data_type\nname: Lead\nfields:\n  x: {type: Text}\n",
        [(2, 7, "schema.pattern", "/name", "'Lead' does not match '^[a-z][a-z0-9_]*$'"),
         (4, 13, "schema.pattern", "/fields/x/type", "'Text' does not match '^[a-z][a-z0-9_]*$'")],
    ),
    "a template where a number goes, and a word that is not one": (
        STEP + "{action: fail, message: m, status: '{{ params.s }}'}\n"
        "  - {action: fail, message: m, status: often}\n"
        "  - {action: fail, message: m, status: 302}\n",
        [(6, 40, "schema.pattern", "/steps/1/status",
          "expected an integer or a template ('{{ ... }}'), got 'often'"),
         (7, 40, "schema.minimum", "/steps/2/status", "302 is less than the minimum of 400")],
    ),
    "a condition of the wrong type": (
        API + "only_when: 1\nsteps: [{action: terminate}]\n",
        [(4, 12, "schema.type", "/only_when",
          "expected a boolean or a template ('{{ ... }}'), got 1")],
    ),
    "data and text together": (
        STEP + "action: return_data\n    data: {}\n    text: hi\n",
        [(7, 5, "schema.not", "/steps/0/text", "keys 'data' and 'text' cannot be used together")],
    ),
    "content type without text": (
        STEP + "{action: return_data, data: {}, content_type: text/csv}\n",
        [(5, 37, "schema.dependent-required", "/steps/0/content_type",
          "key 'content_type' requires key 'text'")],
    ),
    "no steps": (
        API + "steps: []\n",
        [(4, 8, "schema.min-items", "/steps", "the list must not be empty")],
    ),
    "search constraints, sort and limit": (
        STEP + "action: search\n    type: lead\n"
        "    constraints: [{key: a, constraint: equals}, {key: a, constraint: like, value: 1}]\n"
        "    sort: [{key: a, descending: maybe}]\n    limit: 10001\n",
        [(7, 19, "schema.required", "/steps/0/constraints/0", "missing required key 'value'"),
         (7, 70, "schema.enum", "/steps/0/constraints/1/constraint",
          "'like' is not one of ['equals', 'not_equal', 'is_empty', 'is_not_empty', "
          "'text_contains', 'not_text_contains', 'greater_than', 'less_than', 'in', 'not_in', "
          "'contains', 'not_contains', 'geographic_search']"),
         (8, 33, "schema.pattern", "/steps/0/sort/0/descending",
          "expected a boolean or a template ('{{ ... }}'), got 'maybe'"),
         (9, 12, "schema.maximum", "/steps/0/limit",
          "10001 is greater than the maximum of 10000")],
    ),
    "settings": (
        "kind: settings\ndatabase: mysql://db\nsecrets: [A, A, lower]\n"
        "limits: {max_body_bytes: 0, run_timeout: 5 minutes}\n"
        "server: {port: 70000, hots: x}\n",
        [(2, 11, "schema.pattern", "/database",
          "'mysql://db' does not match '^(sqlite:///.+|postgresql://.*)$'"),
         (3, 10, "schema.unique-items", "/secrets", "'A' is listed more than once"),
         (3, 17, "schema.pattern", "/secrets/2", "'lower' does not match '^[A-Z_][A-Z0-9_]*$'"),
         (4, 26, "schema.minimum", "/limits/max_body_bytes", "0 is less than the minimum of 1"),
         (4, 42, "schema.pattern", "/limits/run_timeout",
          "'5 minutes' is not a duration: a whole number and ms, s, m, h or d, "
          "of at most 99999d"),
         (5, 16, "schema.maximum", "/server/port", "70000 is greater than the maximum of 65535"),
         (5, 23, "schema.additional-properties", "/server/hots",
          "unknown key 'hots' (did you mean 'host'?)")],
    ),
    "missing kind: nothing else is said": (
        "name: x\nexpsoe: 1\n",
        [(1, 1, "schema.kind", "", "missing required key 'kind'")],
    ),
    "unknown kind: nothing else is said": (
        "kind: recurring_events\nname: Nightly\ncron: x\n",
        [(1, 7, "schema.kind", "/kind",
          "'recurring_events' is not one of ['api_workflow', 'custom_event', 'settings', "
          "'data_type', 'option_set', 'recurring_event', 'database_trigger', "
          "'workflow_test'] "
          "(did you mean 'recurring_event'?)")],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=list(CASES))
def test_invalid_documents(text: str, expected: list[tuple[int, int, str, str, str]]) -> None:
    assert problems(text) == expected


def test_each_document_is_judged_on_its_own() -> None:
    text = "kind: nope\n---\n" + API + "steps: [{action: terminate, x: 1}]\n"
    assert [(line, code) for line, _, code, _, _ in problems(text)] == [
        (1, "schema.kind"), (6, "schema.additional-properties")
    ]


def test_alternatives_report_the_most_relevant_error_only() -> None:
    doc = documents("when: 700\n")[0]
    alternatives = Draft202012Validator({"properties": {"when": {"anyOf": [
        {"type": "integer", "maximum": 599}, {"type": "string"}, {"type": "boolean"},
    ]}}})
    found = schema.diagnose(doc, alternatives.iter_errors(doc.data))
    assert found == [Diagnostic("config.yaml", 1, 7, "schema.maximum",
                                "700 is greater than the maximum of 599", "/when")]


@pytest.mark.parametrize(("text", "pointer"), [
    (API + 'params:\n  "id\\n": {type: text}\nsteps: [{action: terminate}]\n', "/params/id\n"),
    (STEP + '{id: "made\\n", action: terminate}\n', "/steps/0/id"),
])
def test_a_pattern_ending_in_dollar_refuses_a_final_line_break(text: str, pointer: str) -> None:
    """JSON Schema's `$` (ECMA-262) is the end of the text, where Python's `re` would also
    match before a final line break."""
    assert [(code, at) for _, _, code, at, _ in problems(text)] == [("schema.pattern", pointer)]


def test_what_the_checks_still_see_of_a_document_with_schema_problems() -> None:
    (doc,) = documents("""
        kind: api_workflow
        name: hook
        auth: none
        method: PUTT
        verify: {scheme: bogus, secret: "{{ secrets.S }}"}
        rate_limit: {requests: 0, per: 1m}
        steps:
          - {id: first, action: log, message: hi, colour: red}
          - {action: log, message: "{{ steps.first }}"}
          - "not a step"
        """)
    kept = schema.well_formed(doc)
    assert kept is not None and schema.check(kept) != []  # what is left out stays in `data`
    # A bad value goes, then a mapping left without a key it needs, and never a list's item.
    assert set(kept.data) == {"kind", "name", "auth", "steps"}
    assert kept.broken == {"/steps/0", "/steps/2"} and len(kept.data["steps"]) == 3
    assert doc.data["method"] == "PUTT"  # the document itself is not changed


@pytest.mark.parametrize("text", [
    "kind: api_workflow\nname: w\nsteps: [{action: log, message: hi}]\n",  # no auth
    "kind: api_workflow\nname: w\nauth: none\nparams: {n: {type: 5}}\nsteps: []\n",
    "kind: settings\nsecrets: [lower]\n",
    "kind: custom_event\nname: e\nreturns: {a: {}}\nsteps: [{action: terminate}]\n",
])
def test_a_problem_in_what_the_checks_need_whole_leaves_the_document_out(text: str) -> None:
    (doc,) = documents(text)
    assert schema.check(doc) != [] and schema.well_formed(doc) is None


def test_the_fast_validator_reports_what_the_plain_one_does() -> None:
    plain = Draft202012Validator(schema.schema_document())
    texts = [VALID, *(text for text, _ in CASES.values())]

    def errors(validator: Any, data: Any) -> list[tuple[str, str, str]]:
        found = validator.iter_errors(data)
        return sorted((json.dumps(list(e.absolute_path)), e.validator, e.message) for e in found)

    for doc in (doc for text in texts for doc in documents(text)):
        assert errors(schema.validator(), doc.data) == errors(plain, doc.data)


# --- packaging --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel, once per session."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT, check=True, capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_ships_the_consoles_templates_and_assets(wheel: Path) -> None:
    package = ROOT / "gateway" / "console"
    wanted = {f"gateway/console/{p.relative_to(package)}" for folder in ("templates", "static")
              for p in (package / folder).iterdir()}
    assert len(wanted) > 10
    with zipfile.ZipFile(wheel) as archive:
        assert wanted <= set(archive.namelist())


def test_an_installed_package_reads_its_own_copy_of_the_schema(
    wheel: Path, tmp_path: Path,
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert "gateway/schemas/gateway.schema.json" in archive.namelist()
        archive.extractall(tmp_path / "site")
    probe = (
        "import gateway.config.schema as s; print(s.__file__); print(s.schema_source()); "
        "print(s.schema_document()['$id'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    module, source, identifier = run.stdout.splitlines()
    site = (tmp_path / "site").resolve()
    assert Path(module).resolve().is_relative_to(site)
    assert Path(source).resolve() == site / "gateway" / "schemas" / "gateway.schema.json"
    assert identifier == schema.schema_document()["$id"]
