"""Files and images in runs: uploads sent as parameters are kept before the steps run (so
templates see their paths), and the file fields of a record being written keep their
uploads (held by the field) and hold the gateway's own files they are given (checked to
exist and, in an image field, to be images). Any other URL is kept as it is, as Bubble
keeps one.

Serving a file asks whether a record of a field that holds it still keeps its path
(`is_held`): a file no record holds is never served, and once a write drops one (the
record deleted, or given another file), `forget_dropped` deletes its bytes soon after the
write commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from gateway.core.errors import RunError, ValidationError, shown
from gateway.files.service import Files
from gateway.files.store import StoredFile
from gateway.files.uploads import Upload
from gateway.runtime.context import RunContext
from gateway.runtime.param import FILE_TYPES, Param
from gateway.runtime.privacy import Viewer
from gateway.storage.contract import Change, Constraint, FieldSpec, TypeSpec

if TYPE_CHECKING:
    from gateway.storage import Storage

async def kept_params(files: Files | None, declared: Sequence[Param], params: dict[str, Any],
                      now: datetime) -> dict[str, Any]:
    """`params` with every upload among the `declared` file parameters kept (its path in
    its place), and every private file given by its path checked (`admitted`)."""
    for param in declared:
        value = params.get(param.name)
        if isinstance(value, list):
            params[param.name] = [await _kept_param(files, param, item, now)
                                 for item in value]
        elif value is not None:
            params[param.name] = await _kept_param(files, param, value, now)
    return params


async def _kept_param(files: Files | None, param: Param, value: Any, now: datetime) -> Any:
    if not isinstance(value, Upload):
        return await admitted(files, value)
    if files is None:
        raise RunError("files cannot be kept in this process (no file store is running)")
    return await files.keep(value, image=param.type == "image", private=param.private,
                            now=now)


log = logging.getLogger("gateway.files")


async def kept_fields(ctx: RunContext, spec: TypeSpec,
                      fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` (already checked) with every upload kept and every own file held."""
    result = dict(fields)
    for key, value in fields.items():
        field = spec.fields.get(key)
        if field is None or field.type not in FILE_TYPES or value is None:
            continue
        if field.list:
            result[key] = [await _kept(ctx, spec, field, item) for item in value]
        else:
            result[key] = await _kept(ctx, spec, field, value)
    return result


async def _kept(ctx: RunContext, spec: TypeSpec, field: FieldSpec, value: Any) -> Any:
    files = ctx.services.files
    image = field.type == "image"
    if isinstance(value, Upload):
        if files is None:
            raise RunError("files cannot be kept in this process (no file store is running)")
        return await files.keep(value, image=image, private=field.private, now=ctx.now,
                                holder=(spec.name, field.name))
    if files is not None and files.file_id(value) is not None:
        return await files.hold(value, spec.name, field.name, image=image,
                                private=field.private)
    return value


async def is_held(storage: Storage, types: Mapping[str, TypeSpec], files: Files,
                  file: StoredFile) -> bool:
    """Whether a record of a field that holds `file` keeps its path."""
    path = file.path(files.prefix)
    for type, name in file.holders:
        field = types[type].fields.get(name) if type in types else None
        if field is None or field.type not in FILE_TYPES:
            continue
        test = Constraint(name, "contains" if field.list else "equals", path)
        if (await storage.records.search(type, [test], limit=1)).results:
            return True
    return False


def dropped(types: Mapping[str, TypeSpec], files: Files, changes: Iterable[Change]) -> set[str]:
    """The ids of the gateway's files that `changes` took out of a record."""
    ids: set[str] = set()
    for change in changes:
        spec = types.get(change.type)
        if spec is None or change.before is None:
            continue
        for name, field in spec.fields.items():
            if field.type not in FILE_TYPES:
                continue
            gone = _paths(change.before.get(name)) - _paths(
                (change.after or {}).get(name))
            ids.update(id for path in gone if (id := files.file_id(path)) is not None)
    return ids


def _paths(value: Any) -> set[str]:
    items = value if isinstance(value, list) else [value]
    return {item for item in items if isinstance(item, str)}


async def forget_dropped(ctx: RunContext) -> None:
    """After the run commits: delete the bytes of the files its changes dropped that no
    record holds any more. (A run that rolls back leaves them held; a file whose bytes
    outlive this, e.g. when the process stops first, is never served and is deleted by
    `gateway files sweep`.)"""
    files, storage = ctx.services.files, ctx.storage
    if files is None or storage is None or not ctx.changes:
        return
    ids = dropped(ctx.data_types, files, ctx.changes)
    if ids:
        types = ctx.data_types
        ctx.after_commit.append(lambda: _forget(storage, types, files, ids))


async def _forget(storage: Storage, types: Mapping[str, TypeSpec], files: Files,
                  ids: set[str]) -> None:
    """Delete what no record holds (once committed, so a rolled-back delete keeps them; a
    failure is logged and left to `gateway files sweep`)."""
    for id in ids:
        file = await files.store.describe(id)
        if file is not None and not await is_held(storage, types, files, file):
            await files.store.delete(id)


async def sweep(storage: Storage, types: Mapping[str, TypeSpec], files: Files,
                kept_before: datetime, *, dry_run: bool = False) -> tuple[int, list[str]]:
    """Delete the kept files no record holds that were kept before `kept_before` (a newer
    one may belong to a write that has not committed yet): how many files were looked at,
    and the ids of those deleted (or, with `dry_run`, that would be)."""
    seen, dropped_ids = 0, []
    async for id in files.store.ids():
        seen += 1
        file = await files.store.describe(id)
        if file is not None and (not file.created or
                                 datetime.fromisoformat(file.created) >= kept_before):
            continue
        if file is None or not await is_held(storage, types, files, file):
            dropped_ids.append(id)
            if not dry_run:
                await files.store.delete(id)
    return seen, dropped_ids


MAX_DEPTH = 64  # as deep as a reply is searched for records


def file_fields(types: Mapping[str, TypeSpec],
                displayed: Mapping[str, TypeSpec]) -> dict[str, dict[str, str]]:
    """The file and image fields of each type that has any, by the key a reply gives them
    (their display, for a type in `displayed`), each to its field's name."""
    found = {name: {(f.key if name in displayed else n): n for n, f in spec.fields.items()
                     if f.type in FILE_TYPES}
             for name, spec in types.items()}
    return {name: keys for name, keys in found.items() if keys}


def signed_record(files: Files, names: Sequence[str],
                  record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with a signed, expiring link in place of the path of each private file
    that its fields `names` keep."""
    signed = dict(record)
    for name in names:
        value = record.get(name)
        if isinstance(value, list):
            signed[name] = [_link(files, item) for item in value]
        elif value:
            signed[name] = _link(files, value)
    return signed


def _link(files: Files, value: Any) -> Any:
    if isinstance(value, str) and "/files/private/" in value and files.file_id(value):
        return files.sign(value)
    return value


async def signed_links(value: Any, fields: Mapping[str, Mapping[str, str]], files: Files,
                       storage: Storage, viewer: Viewer) -> Any:
    """`value` (what a run returns) with the private files of the records in it (mappings
    with an `_id` and the `_type` of a type with file fields) as signed links: only paths
    that record keeps in the store, in a field the caller may see of a record the caller
    may find, so that a record-shaped object a caller made up signs nothing."""
    found: list[tuple[str, str, str, str]] = []  # (type, id, field name, path)
    _private_paths(value, fields, found, 0)
    if not found:
        return value
    kept: set[tuple[str, str, str, str]] = set()
    for type, id in {(t, i) for t, i, _, _ in found}:
        record = viewer.sift(type, await storage.records.get(type, id))
        if record is not None:
            kept.update((t, i, n, p) for t, i, n, p in found
                        if t == type and i == id and p in _paths(record.get(n)))
    return _signed(value, fields, files, kept, 0)


def _private_paths(value: Any, fields: Mapping[str, Mapping[str, str]],
                   found: list[tuple[str, str, str, str]], depth: int) -> None:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, list):
        for item in value:
            _private_paths(item, fields, found, depth + 1)
        return
    if not isinstance(value, dict):
        return
    keys = fields.get(value["_type"]) if isinstance(value.get("_type"), str) else None
    if keys is not None and isinstance(value.get("_id"), str):
        for key, name in keys.items():
            found.extend((value["_type"], value["_id"], name, path)
                         for path in _paths(value.get(key)) if _private(path))
        return
    for item in value.values():
        _private_paths(item, fields, found, depth + 1)


def _private(path: str) -> bool:
    return "/files/private/" in path and "?" not in path


def _signed(value: Any, fields: Mapping[str, Mapping[str, str]], files: Files,
            kept: set[tuple[str, str, str, str]], depth: int) -> Any:
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [_signed(item, fields, files, kept, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    keys = fields.get(value["_type"]) if isinstance(value.get("_type"), str) else None
    if keys is None or not isinstance(value.get("_id"), str):
        return {key: _signed(item, fields, files, kept, depth + 1)
                for key, item in value.items()}
    type, id = value["_type"], value["_id"]

    def sign(name: str, item: Any) -> Any:
        if isinstance(item, str) and (type, id, name, item) in kept:
            return files.sign(item)
        return item

    signed = dict(value)
    for key, name in keys.items():
        item = value.get(key)
        signed[key] = [sign(name, x) for x in item] if isinstance(item, list) \
            else sign(name, item)
    return signed


async def admitted(files: Files | None, value: Any) -> Any:
    """A file value a caller sent: one of the gateway's private files that a record holds
    already is taken only by a valid signed link (the bare path of a private file is no key
    to it: one seen once could otherwise be copied into a record of the caller's, and read
    through it for ever, whatever the privacy rules of the record that holds it)."""
    if files is None or not isinstance(value, str) or files.file_id(value) is None:
        return value
    file = await files.store.describe(files.file_id(value) or "")
    if file is None or not file.private or not file.holders:
        return value  # unknown (refused where a record takes it), public, or just kept
    query = parse_qs(urlsplit(value).query)
    expires, signature = (query.get("expires") or [""])[0], (query.get("signature") or [""])[0]
    if not files.signed_ok(file.path(files.prefix), expires, signature):
        raise ValidationError(f"the private file {shown(file.name)!r} is given by its signed "
                              "link (a fresh one, from a read of a record that holds it), "
                              "not by its path")
    return value


async def admitted_fields(ctx: RunContext, spec: TypeSpec,
                          fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` a caller sent (the Data API's), each private file checked by `admitted`."""
    files = ctx.services.files
    result = dict(fields)
    for key, value in fields.items():
        field = spec.fields.get(key)
        if field is not None and field.type in FILE_TYPES and value is not None:
            result[key] = [await admitted(files, v) for v in value] if isinstance(value, list) \
                else await admitted(files, value)
    return result
