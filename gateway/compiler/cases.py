"""Workflow tests (`kind: workflow_test`): each names an API workflow and the cases that call
it. Checked like any document (the workflow, the parameters it is sent and the types of the
records made first must exist), and built into `WorkflowTest`s that `gateway test` runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.compiler.data_types import check_type, duplicate
from gateway.config.source import Document, DocumentKind
from gateway.core import pointer as ptr
from gateway.core.errors import did_you_mean
from gateway.runtime.model import TestCase, WorkflowTest

if TYPE_CHECKING:
    from gateway.compiler import Compiler


def declare_nothing(c: Compiler, kind: str, docs: list[Document]) -> None:
    """Nothing refers to a test: tests are only built, once every workflow is declared."""


def build_tests(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    built: dict[str, WorkflowTest] = {}
    firsts: dict[str, Document] = {}
    for doc in (d for d in c.documents if d.data.get("kind") == kind):
        name = doc.data.get("name", doc.data["workflow"])
        if name in firsts:
            duplicate(c, doc, firsts[name], "workflow test", name)
            continue
        firsts[name] = doc
        built[name] = _build(c, doc, name)
    return built


def _build(c: Compiler, doc: Document, name: str) -> WorkflowTest:
    cases = tuple(_case(c, doc, index, case) for index, case in enumerate(doc.data["cases"]))
    return WorkflowTest(name, doc.data["workflow"], cases, _where(doc, ""))


def _declared(c: Compiler, doc: Document, pointer: str, workflow: str) -> frozenset[str] | None:
    """The parameters of the workflow, or None when it does not exist (reported here)."""
    unit = c.units.get((DocumentKind.API_WORKFLOW, workflow))
    if unit is not None:
        return frozenset(p.name for p in unit.params)
    if not c.is_broken(DocumentKind.API_WORKFLOW, workflow):
        workflows = [n for (k, n) in c.units if k == DocumentKind.API_WORKFLOW]
        c.error(doc, pointer, "ref.unknown-workflow",
                f"unknown API workflow '{workflow}'" + did_you_mean(workflow, workflows))
    return None


def _case(c: Compiler, doc: Document, index: int, case: Mapping[str, Any]) -> TestCase:
    base = f"/cases/{index}"
    own = "workflow" in case
    workflow = case["workflow"] if own else doc.data["workflow"]
    if own or index == 0:
        declared = _declared(c, doc, base + "/workflow" if own else "/workflow", workflow)
    else:
        declared = _declared_quietly(c, workflow)
    params = case.get("params", {})
    for key in params:
        if declared is not None and key not in declared:
            c.error(doc, ptr.join(base, "params", key), "ref.unknown-param",
                    f"'{key}' is not a parameter of the workflow {workflow}"
                    + did_you_mean(key, declared))
    records = []
    for number, record in enumerate(case.get("records", [])):
        check_type(c, doc, ptr.join(base, "records", number, "type"), record["type"])
        records.append((record["type"], dict(record.get("fields", {}))))
    expect = case["expect"]
    return TestCase(
        name=case["name"], workflow=workflow, params=dict(params),
        caller=case.get("as", "anonymous"),
        headers=dict(case.get("headers", {})), records=tuple(records),
        status=expect.get("status"), code=expect.get("code"),
        has_response="response" in expect, response=expect.get("response"),
        response_headers=dict(expect.get("headers", {})), location=_where(doc, base))


def _declared_quietly(c: Compiler, workflow: str) -> frozenset[str] | None:
    unit = c.units.get((DocumentKind.API_WORKFLOW, workflow))
    return frozenset(p.name for p in unit.params) if unit is not None else None


def _where(doc: Document, pointer: str) -> str:
    return f"{doc.file}:{doc.locate(pointer)[0]}"
