"""Diagnostics rendered for people (gcc style) or machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.core.encoding import escape
from gateway.core.errors import Diagnostic


def as_text(diagnostic: Diagnostic) -> str:
    """`file:line:col: error[code]: message (at /pointer)`, one line: a line break or other
    control character in a file's name, a message or a key (a pointer) is escaped."""
    where = f" (at {diagnostic.pointer})" if diagnostic.pointer else ""
    return escape(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.column}: "
                  f"{diagnostic.severity}[{diagnostic.code}]: {diagnostic.message}{where}")


def render_text(diagnostics: Sequence[Diagnostic]) -> str:
    lines = [as_text(d) for d in sorted(diagnostics)]
    files = len({d.file for d in diagnostics})
    lines.append(f"{len(diagnostics)} problem(s) in {files} file(s)" if diagnostics else "ok")
    return "\n".join(lines)


def render_json(diagnostics: Sequence[Diagnostic], files_checked: int | None = None) -> str:
    payload: dict[str, object] = {
        "ok": not any(d.severity == "error" for d in diagnostics),
        "diagnostics": [d.as_dict() for d in sorted(diagnostics)],
    }
    if files_checked is not None:
        payload["files"] = files_checked
    return json.dumps(payload, indent=2)


# Every diagnostic code the loader can report, with what it means: `gateway validate` names
# the code on each line, and the documentation's reference is made from this table (a test
# keeps it equal to the codes the code base emits).
CATALOG: dict[str, str] = {
    # Files and YAML, before any schema
    "file.not-found": "A path given to the loader is neither a file nor a folder.",
    "file.unreadable": "A file cannot be read, or is not UTF-8 text.",
    "yaml.syntax": "The file is not valid YAML; the position is where the parser stopped.",
    "yaml.duplicate-key": "A key appears twice in one mapping (YAML would keep only the last).",
    "yaml.non-string-key": "A key is not a string: YAML 1.1 reads unquoted `on`, `yes` or `1` "
                           "as a boolean or a number; quote it.",
    "yaml.not-a-mapping": "A document is not a mapping with a `kind` key.",
    "yaml.unknown-tag": "A YAML tag (`!env`, `!!python/...`) the safe loader does not accept.",
    "yaml.bad-merge": "A merge key `<<` is given something other than a mapping.",
    "yaml.alias-limit": "Aliases expand to more nodes than the loader builds (anchors nested "
                        "in anchors).",
    # The JSON Schema (schemas/gateway.schema.json)
    "schema.kind": "A document has no `kind`, or one the gateway does not know.",
    "schema.required": "A required key is missing.",
    "schema.additional-properties": "An unknown key (the message suggests the closest one).",
    "schema.dependent-required": "A key that needs another one beside it (`content_type` "
                                 "needs `text`).",
    "schema.not": "Two keys that cannot be used together (`data` and `text`).",
    "schema.type": "A value of the wrong type (a string where a number is expected...).",
    "schema.enum": "A value that is not one of the allowed ones.",
    "schema.pattern": "A string that does not have the required form (a name, a duration, a "
                      "template where a number or a boolean may be a template).",
    "schema.minimum": "A number below the allowed minimum.",
    "schema.maximum": "A number above the allowed maximum.",
    "schema.min-items": "A list that must not be empty is empty.",
    "schema.unique-items": "A list names the same item twice.",
    "schema.min-length": "A string that must not be empty is empty.",
    "schema.max-length": "A string longer than allowed.",
    "schema.min-properties": "A mapping that must not be empty is empty.",
    "schema.const": "A value other than the one allowed; it cannot occur, since every `const` "
                    "in the schema sits in the branch that value chose.",
    # Names and references between documents
    "name.duplicate": "Two documents of one kind have the same name.",
    "route.conflict": "Two workflows would answer on the same route.",
    "settings.duplicate": "More than one `settings` document.",
    "settings.network": "An entry of `server.trusted_proxies` or `tracing.trust_parent` is "
                        "not an IP address or network.",
    "settings.ui-url": "`tracing.ui_url` has no `{trace_id}` to put a run's trace id in.",
    "ref.unknown-param": "A template reads `params.X` and no parameter X is declared.",
    "ref.unknown-step": "A template reads `steps.X` and no earlier step has the id X.",
    "ref.unknown-secret": "A template reads `secrets.X` and the settings do not declare X.",
    "ref.unknown-type": "A type that no `data_type` or `option_set` document declares (or "
                        "`option_sets.X` naming no option set).",
    "ref.unknown-attribute": "A template reads `params.P.X` where P is an option and its set "
                             "has no attribute X.",
    "ref.unknown-field": "A field that the data type does not have.",
    "ref.unknown-workflow": "A step or event names an API workflow that does not exist.",
    "ref.unknown-workflow-param": "A step gives a workflow a parameter it does not declare.",
    "ref.missing-workflow-param": "A step calls a workflow without a parameter it requires.",
    "ref.unknown-event": "A `trigger_event` step names a custom event that does not exist.",
    "ref.unknown-event-param": "A step gives a custom event a parameter it does not declare.",
    "ref.missing-event-param": "A step calls a custom event without a parameter it requires.",
    "ref.unknown-recurring-event": "`set_recurring_event` names a recurring event that does not "
                                   "exist or is not one per record (it has no `type`).",
    # Templates
    "template.syntax": "A template that Jinja cannot parse.",
    "template.undefined-name": "A template uses a name that does not exist where it runs.",
    # Steps, events and values
    "step.duplicate-id": "Two steps of one document have the same `id`.",
    "step.no-sender": "A `send_email` step with no `from`, and no `smtp.from` in the settings.",
    "step.idempotency-header": "An `http_request` step whose `headers` give the header its "
                               "`idempotency_key` sends.",
    "step.renamed-key": "A step uses a key the action no longer takes; the message says what "
                        "to write instead.",
    "event.cycle": "Custom events that call each other in a loop.",
    "event.bad-return": "A custom event's `return_data` returns a key it does not declare in "
                        "`returns`.",
    "event.conditional-return": "Warning: every `return_data` step of a custom event has a "
                                "condition, so it may return nothing.",
    "constraint.mismatch": "A search constraint that does not apply to its field (a list "
                           "constraint on a field that is not a list...).",
    "value.type-mismatch": "A constant value that does not fit the type it is given to.",
    "value.bad-frequency": "A frequency that is not daily, weekly, monthly, quarterly, yearly "
                           "or none.",
    "value.gateway-header": "A `return_data` header the gateway writes itself "
                            "(`Content-Length`, `Content-Type`...).",
    "increment.mismatch": "An `increment` of a field that is not a number or an integer, or of "
                          "one that `fields` sets too.",
    "param.template-default": "A parameter's `default` is a template; defaults are plain values.",
    "privacy.heavy-rule": "A privacy rule that loops, calls or filters: rules run for every "
                          "record a search reads, so they may only compare and test fields.",
    "access.public-privileged": "`auth: none` with `ignore_privacy_rules: true`, without "
                                "`allow_public_privileged: true` to say it is meant.",
    "access.unchecked-current-user": "Warning: a public workflow reads a field of "
                                     "`current_user`, which is null for anonymous callers.",
    "recurring.incomplete": "A recurring event without when (`cron`, `every` or `type`) or what "
                            "(`workflow` or `steps`).",
    "recurring.bad-cron": "A `cron` that is not a five-field cron expression.",
    "recurring.bad-every": "An `every` shorter than one second.",
    "recurring.bad-timezone": "A `timezone` that is not an IANA time zone.",
    "timezone.unknown": "A workflow's or trigger's `timezone` that is not an IANA time zone.",
    "redirect.not-allowed": "A redirect target (`return_redirect`'s `url`, `error_redirect`) "
                            "that `redirects.allowed` in the settings does not allow.",
    "verify.bad-secret": "A `verify` secret that cannot be the scheme's key (standard-webhooks "
                         "secrets are `whsec_` and base64).",
    "verify.unsigned-params": "A signed workflow that reads parameters from the query string, "
                              "which no signature covers.",
    "option_set.duplicate-value": "Two options of one option set have the same `value`.",
    "option_set.duplicate-display": "Two options of one option set have the same `display`.",
    "option_set.unknown-attribute": "An option gives an attribute its option set does not "
                                    "declare under `attributes`.",
    "option_set.name-clash": "An option set named like a built-in type or a data type.",
    "data_api.name-clash": "Two data types exposed to the Data API with one URL name (made "
                           "of a type's `display`, or else of its name).",
    "data_type.key-clash": "Two fields of a data type would have one key on the wire: the "
                           "same `display`, or, when the settings ask for display keys, a "
                           "display that is another field's key or a system field's name.",
}
