"""The audit chain on its own: hashing, verification, redaction and diffs, without a database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from aiservice.application.audit import (
    CallContext,
    CallDescription,
    CallKind,
    begin_call,
    end_call,
    note_changes,
)
from aiservice.domain.audit import (
    GENESIS,
    REDACTED,
    AuditEntry,
    AuditRecord,
    Outcome,
    Resource,
    field_diff,
    redact,
    verify_chain,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(n: int, **overrides: object) -> AuditEntry:
    values: dict[str, object] = {
        "tenant_id": "acme",
        "at": T0 + timedelta(seconds=n),
        "action": "model.update",
        "outcome": Outcome.SUCCESS,
        "subject": "alice",
        "roles": ("editor",),
        "resource": Resource("model", f"id-{n}", f"m{n}"),
        "changes": {"description": ["", f"v{n}"]},
        **overrides,
    }
    return AuditEntry.of(**values)


def chain(length: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for n in range(1, length + 1):
        records.append(AuditRecord.chained(entry(n), n, records[-1].hash if records else GENESIS))
    return records


def head_of(records: list[AuditRecord]) -> tuple[int, str]:
    return records[-1].seq, records[-1].hash


def test_an_untouched_chain_verifies() -> None:
    records = chain(5)
    assert verify_chain(records, head_of(records)) == (5, None)


def test_each_record_links_to_the_one_before() -> None:
    records = chain(3)
    assert [r.prev_hash for r in records] == [GENESIS, records[0].hash, records[1].hash]


def test_an_edited_field_breaks_the_chain_at_that_record() -> None:
    records = chain(5)
    edited = dataclasses.replace(records[2].entry, subject="mallory")
    records[2] = dataclasses.replace(records[2], entry=edited)
    count, broken = verify_chain(records, head_of(records))
    assert (count, broken and broken.seq) == (2, 3)


def test_a_record_rehashed_after_editing_breaks_the_link_to_the_next() -> None:
    records = chain(5)
    forged = AuditRecord.chained(
        dataclasses.replace(records[2].entry, outcome=Outcome.DENIED), 3, records[1].hash
    )
    records[2] = forged
    _count, broken = verify_chain(records, head_of(records))
    assert broken is not None and broken.seq == 4


def test_a_deleted_record_is_missing() -> None:
    records = chain(5)
    head = head_of(records)
    del records[1]
    _count, broken = verify_chain(records, head)
    assert broken is not None and (broken.seq, broken.problem) == (2, "record 2 is missing")


def test_records_deleted_from_the_end_are_caught_by_the_head() -> None:
    records = chain(5)
    head = head_of(records)
    _count, broken = verify_chain(records[:3], head)
    assert broken is not None and broken.seq == 4


def test_the_hash_covers_every_field() -> None:
    base = AuditRecord.chained(entry(1), 1, GENESIS).hash
    variants = [
        {"action": "model.delete"},
        {"outcome": Outcome.FAILED},
        {"subject": None},
        {"roles": ("admin",)},
        {"resource": Resource("model", "id-1", "other")},
        {"reason": "conflict"},
        {"client_ip": "10.0.0.1"},
        {"request_id": "r-1"},
        {"changes": {"description": ["", "else"]}},
        {"at": T0},
    ]
    hashes = {AuditRecord.chained(entry(1, **v), 1, GENESIS).hash for v in variants}
    assert base not in hashes and len(hashes) == len(variants)


def test_secret_keys_are_redacted_at_any_depth() -> None:
    value = {
        "configuration": {
            "password": "hunter2",
            "db": {"apiKey": "k", "host": "h", "Credentials": ["x"]},
            "layers": [{"client_secret": "s", "units": 3}],
            "accessToken": "t",
        }
    }
    assert redact(value) == {
        "configuration": {
            "password": REDACTED,
            "db": {"apiKey": REDACTED, "host": "h", "Credentials": REDACTED},
            "layers": [{"client_secret": REDACTED, "units": 3}],
            "accessToken": REDACTED,
        }
    }


def test_entries_store_diffs_redacted() -> None:
    stored = entry(1, changes={"configuration": [{"password": "a"}, {"password": "b", "lr": 0.1}]})
    assert stored.changes == {"configuration": [{"password": REDACTED}, {"password": REDACTED, "lr": 0.1}]}


def test_a_diff_lists_changed_fields_in_camel_case() -> None:
    before = {"description": "a", "input_schema": {}, "tags": ["x"]}
    after = {"description": "b", "input_schema": {"type": "tabular"}, "tags": ["x"]}
    assert field_diff(before, after) == {
        "description": ["a", "b"],
        "inputSchema": [{}, {"type": "tabular"}],
    }


def test_long_and_nul_bearing_values_are_cut_to_what_is_stored() -> None:
    stored = entry(1, subject="a\x00b" + "x" * 500, resource=Resource("model", None, "n" * 1000))
    assert stored.subject is not None and len(stored.subject) == 200 and "\x00" not in stored.subject
    assert stored.resource.name == "n" * 400


def test_an_update_hook_outside_a_call_does_nothing() -> None:
    note_changes({"description": "a"}, {"description": "b"})  # no call in progress: no error, no effect


def test_an_update_hook_inside_a_call_keeps_its_diff() -> None:
    call = CallContext(describe=lambda: CallDescription("model.update", CallKind.CHANGE))
    token = begin_call(call)
    try:
        note_changes({"description": "a", "tags": []}, {"description": "b"})
    finally:
        end_call(token)
    assert call.changes == {"description": ["a", "b"]}
