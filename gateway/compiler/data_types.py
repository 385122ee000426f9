"""The settings and data types passes, and checks of values and type names against them."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.compiler.option_sets import check_names
from gateway.compiler.privacy_rules import compile_privacy
from gateway.config.source import Document, DocumentKind
from gateway.core import pointer as ptr
from gateway.core.errors import did_you_mean
from gateway.core.settings import Settings, from_document
from gateway.runtime.coercion import convert_value, typed_or_as_is
from gateway.runtime.param import FILE_TYPES, SCALAR_TYPES
from gateway.storage.contract import FieldSpec, TypeSpec
from gateway.templates import templating

if TYPE_CHECKING:
    from gateway.compiler import Compiler

BUILTIN_TYPES = {"user": TypeSpec("user", {"email": FieldSpec("email", "text", unique=True)})}


def declare_settings(c: Compiler, kind: str, docs: list[Document]) -> None:
    for doc in docs[1:]:
        c.error(doc, "/kind", "settings.duplicate",
                f"only one settings document is allowed (another is in {docs[0].file})")
    if docs:
        c.settings = from_document(docs[0].data)
        _check_secret_references(c, docs[0])
        data = docs[0].data
        ui_url = data.get("tracing", {}).get("ui_url")
        if ui_url is not None and "{trace_id}" not in ui_url:
            c.error(docs[0], "/tracing/ui_url", "settings.ui-url",
                    f"{json.dumps(ui_url)} does not say where the trace id goes: write "
                    "{trace_id} in it (http://localhost:16686/trace/{trace_id})")
        trusted = data.get("tracing", {}).get("trust_parent", ())
        for pointer, networks in (("/server/trusted_proxies",
                                   data.get("server", {}).get("trusted_proxies", ())),
                                  ("/tracing/trust_parent",
                                   () if isinstance(trusted, str) else trusted)):
            for index, network in enumerate(networks):
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    c.error(docs[0], f"{pointer}/{index}", "settings.network",
                            f"{json.dumps(network)} is not an IP address or network")


# Settings that name a secret (`{{ secrets.NAME }}`): where, and what names it once read.
_SECRET_SETTINGS: tuple[tuple[str, Callable[[Settings], str | None]], ...] = (
    ("/smtp/password", lambda s: s.smtp_password_secret),
    ("/console/secret", lambda s: s.console_secret),
    ("/files/secret", lambda s: s.files_secret),
    ("/files/s3/access_key_id", lambda s: (s.files_s3 or {}).get("access_key_id_secret")),
    ("/files/s3/secret_access_key",
     lambda s: (s.files_s3 or {}).get("secret_access_key_secret")),
)


def _check_secret_references(c: Compiler, doc: Document) -> None:
    for pointer, named in _SECRET_SETTINGS:
        given: Any = doc.data
        for token in ptr.split(pointer):
            given = given.get(token) if isinstance(given, dict) else None
        if given is not None and named(c.settings) not in c.settings.secret_names:
            setting = pointer.strip("/").replace("/", ".")
            c.error(doc, pointer, "ref.unknown-secret",
                    f"{setting} must be {{{{ secrets.NAME }}}}, naming a secret declared in "
                    "the settings' secrets")


def build_nothing(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    return {}  # the settings are the registry's own field


def declare_data_types(c: Compiler, kind: str, docs: list[Document]) -> None:
    seen: dict[str, Document] = {}
    for doc in docs:
        name = doc.data["name"]
        if name in seen:
            duplicate(c, doc, seen[name], "data type", name)
            continue
        seen[name] = doc
        fields = {key: _field(c, key, spec)
                  for key, spec in doc.data.get("fields", {}).items()}
        base = BUILTIN_TYPES.get(name)
        c.data_types[name] = TypeSpec(name, {**(base.fields if base else {}), **fields},
                                      doc.data.get("display"))
    for name, doc in seen.items():
        privacy = compile_privacy(c, doc, c.data_types[name])
        if privacy is None:
            c.privacy.pop(name, None)
        else:
            c.privacy[name] = privacy
    _declare_data_api(c, seen)
    for name, doc in seen.items():
        _check_keys(c, doc, c.data_types[name])
    check_names(c)
    for doc in seen.values():
        for key, spec in doc.data.get("fields", {}).items():
            check_type(c, doc, ptr.join("/fields", key, "type"), spec["type"])
            if "default" in spec:
                check_value(c, doc, ptr.join("/fields", key, "default"), spec["default"],
                            spec["type"], spec.get("list", False))


def api_name(type_name: str) -> str:
    """A data type's name on the Data API, as Bubble makes it of its display (or here of
    its name, for a type without one): lowercased, without spaces or underscores
    (`Rental Unit` answers at `/api/1.1/obj/rentalunit`, `lead_source` at `leadsource`)."""
    return type_name.lower().replace(" ", "").replace("_", "")


def _declare_data_api(c: Compiler, docs: Mapping[str, Document]) -> None:
    for name, doc in docs.items():
        if not doc.data.get("api", {}).get("expose", False):
            continue
        url = api_name(doc.data.get("display") or name)
        other = c.data_api.get(url)
        if other is not None:
            c.error(doc, "/api/expose", "data_api.name-clash",
                    f"data types '{other}' and '{name}' would both answer at "
                    f"/api/1.1/obj/{url} on the Data API: expose one of them only, or rename "
                    "one or change its display")
            continue
        c.data_api[url] = name


# Bubble's names of the system fields on the Data API, which a display must not take.
_SYSTEM_KEYS = frozenset({"_id", "_type", "Created Date", "Modified Date", "Created By",
                          "createddate", "modifieddate", "createdby"})


def _check_keys(c: Compiler, doc: Document, spec: TypeSpec) -> None:
    """Two fields with one display are reported; with display keys asked for, so is a
    display that is another field's key (its display, or its name) or a system field's."""
    on = c.settings.data_api_display_keys or c.settings.workflow_api_display_keys
    taken: dict[str, str] = {} if not on else {
        **dict.fromkeys(_SYSTEM_KEYS, "a system field"),
        **{f.name: f"the field '{f.name}'" for f in spec.fields.values() if not f.display}}
    for field in spec.fields.values():
        if field.display is None:
            continue
        other = taken.get(field.display)
        if other is not None:
            c.error(doc, ptr.join("/fields", field.name, "display"), "data_type.key-clash",
                    f"the display {json.dumps(field.display)} of the field '{field.name}' is "
                    f"already the key of {other} on the wire: choose another display")
        taken.setdefault(field.display, f"the field '{field.name}'")


def _field(c: Compiler, key: str, spec: Mapping[str, Any]) -> FieldSpec:
    # A default in its field's type (a date default is a datetime, as stored values are).
    is_list = spec.get("list", False)
    options = c.option_sets.get(spec["type"])
    # A single file's field is indexed: serving a file looks up the record that holds it.
    indexed = spec.get("indexed", spec["type"] in FILE_TYPES and not is_list)
    return FieldSpec(key, spec["type"], is_list, spec.get("unique", False), indexed,
                     typed_or_as_is(spec.get("default"), spec["type"], is_list, options),
                     options, spec.get("display"), spec.get("private", False))


def build_data_types(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    return c.data_types


def duplicate(c: Compiler, doc: Document, first: Document, what: str, name: str) -> None:
    line = first.locate("/name")[0]
    c.error(doc, "/name", "name.duplicate",
            f"{what} '{name}' is already defined at {first.file}:{line}")


def check_type(c: Compiler, doc: Document, pointer: str, type_name: str) -> None:
    if c.is_broken(DocumentKind.DATA_TYPE, type_name) or \
            c.is_broken(DocumentKind.OPTION_SET, type_name):
        return
    if type_name not in SCALAR_TYPES and type_name not in c.data_types and \
            type_name not in c.option_sets:
        c.error(doc, pointer, "ref.unknown-type",
                f"unknown data type or option set '{type_name}'"
                + did_you_mean(type_name, [*c.data_types, *c.option_sets]))


def check_value(c: Compiler, doc: Document, pointer: str, value: Any, type_name: str,
                is_list: bool) -> None:
    """A constant value that does not fit its declared type is reported; templates pass."""
    if isinstance(value, str) and templating.is_template(value):
        return
    options = c.option_sets.get(type_name)
    if options is not None and templating.contains_template(value):
        return  # a list of options some of which are templates: checked when it runs
    try:
        convert_value(value, type_name, is_list, options)
    except ValueError:
        shown = (options.describe(is_list) if options is not None
                 else "a valid " + (f"list of {type_name}" if is_list else type_name))
        c.error(doc, pointer, "value.type-mismatch", f"{json.dumps(value)} is not {shown}")
