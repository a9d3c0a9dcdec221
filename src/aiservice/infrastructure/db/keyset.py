"""Keyset paging newest first by (created, id): the cursor holds the last item's pair, so a page is an
index range scan however deep the caller goes, and rows added meanwhile do not shift it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.pagination import Page, decode_cursor, encode_cursor

T = TypeVar("T")


def newest_first(
    conn: Connection,
    stmt: sa.Select[Any],
    created: sa.Column[datetime],
    ident: sa.Column[str],
    limit: int,
    cursor: str | None,
    build: Callable[[sa.RowMapping], T],
) -> Page[T]:
    """``stmt``'s rows by (``created``, ``ident``) descending, ``limit`` at a time, after ``cursor``."""
    if cursor:
        moment, last = _position(cursor)
        stmt = stmt.where(sa.or_(created < moment, sa.and_(created == moment, ident < last)))
    stmt = stmt.order_by(created.desc(), ident.desc()).limit(limit + 1)
    rows = conn.execute(stmt).mappings().all()
    items: list[T] = [build(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last_row = rows[limit - 1]
        next_cursor = encode_cursor({"c": last_row[created.name].isoformat(), "i": last_row[ident.name]})
    return Page(items=items, next_cursor=next_cursor)


def _position(cursor: str) -> tuple[datetime, str]:
    position = decode_cursor(cursor)
    at, last = position.get("c"), position.get("i")
    try:
        if isinstance(at, str) and isinstance(last, str):
            return datetime.fromisoformat(at), last
    except ValueError:
        pass
    raise InvalidInput("The cursor is malformed.", errors=[FieldError("query.cursor", "bad key")])
