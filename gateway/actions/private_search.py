"""Searches through a type's privacy rules, made so that no answer (status, results, count,
remaining, cursor, nor the work done) depends on a value or a record the caller cannot see.

When one rule of the form `thing.F == current_user._id` decides what a search finds, the
database applies it: the search gets `F equals the caller` as one more constraint, and
sees the caller's own records only.

Any other rules are judged record by record, in this order:
1. the search is refused when the type holds more than `limits.max_privacy_scan` records:
   the number of records of the type, before any constraint, so that padding a type with
   one's own rows cannot make the refusal tell whether hidden records match;
2. every record of the type is judged: those the caller finds, and on which it sees every
   field the search constrains or sorts on, pass (a match, or an order, on a field hidden
   on a record would tell its value, so that record does not match, as in Bubble);
3. then the constraints, the sort, the page and the cursor apply, in the database, to the
   records that passed, and nothing else.
The work of step 2 is the same whatever the constraints; step 3 sees only what passed.
Step 2 reads the records a chunk at a time and judges each chunk on a worker thread, at most
`limits.privacy_scan_concurrency` searches at once (`privacy.Scans`), so that the server
keeps answering while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.errors import ValidationError
from gateway.runtime.context import RunContext
from gateway.runtime.privacy import Privacy, Viewer
from gateway.storage.contract import Constraint, Page, RecordStore, SortKey

CHUNK = 250  # records read (and judged) at a time
_BY_ID = (SortKey("_id"),)


async def private_search(ctx: RunContext, store: RecordStore, privacy: Privacy, type: str,
                         constraints: Sequence[Constraint], sort: Sequence[SortKey],
                         limit: int, cursor: str | None) -> Page:
    """One page of the search, as the caller may see it. The run log says how many records
    of the type the rules kept from the search (`hidden_by_privacy`)."""
    using = frozenset(c.key for c in constraints) | frozenset(s.key for s in sort)
    viewer = ctx.viewer
    field = privacy.search_field(using)
    if field is not None:
        page, hidden = await _in_database(store, viewer, field, type, constraints, sort, limit,
                                          cursor)
    else:
        passed, judged = await _judged(store, viewer, type, using,
                                       ctx.settings.max_privacy_scan)
        within = [*constraints, Constraint("_id", "in", passed)]
        page = await store.search(type, within, sort, limit, cursor)
        hidden = judged - len(passed)
    ctx.remark(hidden_by_privacy=hidden)
    # Judged again as the records are now (one changed since it passed is left out), off
    # the event loop when the page is long.
    shown = await viewer.scans.shown(viewer, type, page.results, using)
    return Page(shown, page.count, page.remaining, page.cursor)


async def _in_database(store: RecordStore, viewer: Viewer, field: str, type: str,
                       constraints: Sequence[Constraint], sort: Sequence[SortKey], limit: int,
                       cursor: str | None) -> tuple[Page, int]:
    """The page, with the rule as one more constraint; and how many records of the type it
    keeps from the caller (both counts made without the search's constraints)."""
    every = (await store.search(type, [], [], 1, None)).count
    user_id = (viewer.user or {}).get("_id")
    if user_id is None:
        return Page([], 0, 0, None), every
    rule = Constraint(field, "equals", user_id)
    page = await store.search(type, [*constraints, rule], sort, limit, cursor)
    mine = (await store.search(type, [rule], [], 1, None)).count if constraints else page.count
    return page, every - mine


async def _judged(store: RecordStore, viewer: Viewer, type: str, using: frozenset[str],
                  most: int) -> tuple[list[str], int]:
    """The ids of the records of the type that pass the rules (found, with every field in
    `using` shown), and how many records were judged; refused past `most` records."""
    async with viewer.scans.turn():
        page = await store.search(type, [], _BY_ID, min(CHUNK, most), None)
        if page.count > most:
            raise ValidationError(
                f"the privacy rules of {type} are applied record by record, and it holds "
                f"more than {most} records (limits.max_privacy_scan)")
        passed: list[str] = []
        judged = 0
        while page.results:
            passed += await viewer.scans.passing(viewer, type, page.results, using)
            judged += len(page.results)
            if not page.remaining or judged >= most:
                break
            after = Constraint("_id", "greater_than", page.results[-1]["_id"])
            page = await store.search(type, [after], _BY_ID, min(CHUNK, most - judged), None)
    return passed, judged
