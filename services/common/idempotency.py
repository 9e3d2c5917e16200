"""Idempotent writes: a POST with an ``Idempotency-Key`` header is carried out once.

The header is the one of the IETF draft (draft-ietf-httpapi-idempotency-key-header).
A client that did not get an answer (a timeout, a dropped connection) sends the
same request again with the same key and gets the first answer: its status, body
and headers (``Location``, ``X-Provision-Records``, …), with
``Idempotency-Replayed: true`` added. Nothing is changed a second time.

A key is scoped to its **caller** (whoever the request authenticates as: the
verified token's issuer and subject, or the member of staff), to the method and
to the path; one caller's key never reaches another caller's answer, and the
same key on another route is another key. The stored request is remembered by a
fingerprint of its query string and body (JSON is compared by value, so the
order of members and white space do not matter).

What a retry gets:

- the same key and body, the first attempt finished: the first answer;
- the same key and another body: ``409 idempotency-key-reused`` (problem document);
- the first attempt still running: ``409 idempotency-key-in-use`` with ``Retry-After``;
- the first attempt answered 5xx and committed nothing: the key was released,
  the retry runs as a new request;
- the first attempt's change committed but its node stopped before the answer
  was stored (a crash in that window of one statement): ``409
  idempotency-answer-lost`` once the attempt's lease ran out. The change *was*
  made (the key's row is marked in the change's own transaction); the client
  reads the result back instead of sending the request again.

Every commit made on the service's engine while an attempt runs (the engine's
``commit`` event: a session's or a plain connection's) marks the key's row
``committed`` in the same transaction, fenced by the attempt's id: an attempt whose lease ran out and
whose key another attempt took over cannot commit at all. So a retry is run
again only when the database shows that nothing of the first attempt
committed, and the change and "it was made" are one commit.

A service plugs it in with :func:`install_idempotency` (a model with
:class:`IdempotencyKeyMixin`, a migration calling :mod:`idempotency_migration`,
and how to tell the caller). Keys are kept ``retention`` (24 h by default) and
pruned afterwards. docs/idempotency.md is the client's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import tempfile
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import FastAPI
from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text, Uuid, event, func, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from sqlalchemy.schema import UniqueConstraint
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import metrics
from services.common.problems import problem_response
from services.common.tokens import PublicKeyRing, TokenRefused

log = logging.getLogger(__name__)

HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotency-replayed"
MAX_KEY_LENGTH = 255
DEFAULT_RETENTION_SECONDS = 24 * 3600.0
#: How long an attempt owns its key without finishing; after that a retry may take the key over (if nothing
#: committed) or is told the answer was lost (if the change committed). Longer than any request runs.
DEFAULT_LEASE_SECONDS = 120.0
PRUNE_EVERY_SECONDS = 600.0
#: Headers of an answer that are not kept: the connection's, the moment's and cookies (never replayed to a caller).
NOT_STORED_HEADERS = frozenset({"content-length", "date", "server", "connection", "keep-alive", "transfer-encoding", "set-cookie"})
#: A request body up to this size is fingerprinted as JSON by value; a larger one (a bulk job) byte for byte, spooled to disk.
JSON_FINGERPRINT_BYTES = 1 << 20


# -- the pure parts ---------------------------------------------------------------------------------------------------


class InvalidKey(ValueError):
    pass


def parse_key(raw: bytes) -> str:
    """The key of an ``Idempotency-Key`` header: 1–255 printable ASCII characters (space to ``~``).

    The draft makes the value a structured-field string (``"…"``); a bare value is taken as it is.
    """
    try:
        value = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidKey("the key is not ASCII") from None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, out, escaped = value[1:-1], [], False
        for ch in inner:
            if escaped:
                if ch not in '"\\':
                    raise InvalidKey("a quoted key escapes only \" and \\")
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                raise InvalidKey("an unescaped quote inside a quoted key")
            else:
                out.append(ch)
        if escaped:
            raise InvalidKey("a quoted key ends in a backslash")
        value = "".join(out)
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise InvalidKey(f"the key has {len(value)} characters; 1 to {MAX_KEY_LENGTH} are allowed")
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in value):
        raise InvalidKey("the key has a character that is not printable ASCII")
    return value


def fingerprint(body: bytes, query: bytes = b"") -> str:
    """What makes two requests with one key the same request: the query string and the body (JSON by value)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = _digest_of_query(query)
    digest.update(canonical)
    return digest.hexdigest()


def _digest_of_query(query: bytes):
    digest = hashlib.sha256()
    digest.update(len(query).to_bytes(8, "big") + query)
    return digest


def stored_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The headers of an answer that a replay repeats."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k.decode("latin-1").lower() not in NOT_STORED_HEADERS]


def retry_after(running_seconds: float) -> int:
    """``Retry-After`` for a key in use: as long as the first attempt has run so far, from 1 to 5 seconds."""
    return max(1, min(5, math.ceil(running_seconds)))


# -- who is calling ---------------------------------------------------------------------------------------------------

#: The verified caller of a request (its headers are all it may look at), or None: no idempotency for it.
CallerOf = Callable[[Request], Awaitable[str | None]]


def token_caller(keys: PublicKeyRing, *, audience: str) -> CallerOf:
    """The caller of a bearer token signed by a known party for ``audience``: ``issuer`` or ``issuer/subject``.

    Checked as the routes check it (signature, audience, expiry); which issuers a route admits is the route's
    own check, which runs afterwards. A request without a valid token has no caller here.
    """

    async def caller(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        try:
            verified = keys.verify(header[7:].strip(), audience=audience, allowed_issuers=lambda party: True)
        except TokenRefused:
            return None
        return verified.issuer if verified.subject == verified.issuer else f"{verified.issuer}/{verified.subject}"

    return caller


def first_caller(*callers: CallerOf) -> CallerOf:
    """The first of these that names a caller."""

    async def caller(request: Request) -> str | None:
        for one in callers:
            found = await one(request)
            if found is not None:
                return found
        return None

    return caller


# -- the table --------------------------------------------------------------------------------------------------------


class IdempotencyKeyMixin:
    """One key of one caller on one route: who owns it now, and the answer once there is one."""

    __tablename__ = "idempotency_keys"

    @declared_attr.directive
    def __table_args__(cls):
        return (UniqueConstraint("caller", "method", "path", "key", name="uq_idempotency_keys_scope"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    caller: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(400))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[uuid.UUID] = mapped_column(Uuid)  # the attempt that owns the key: every write is fenced by it
    state: Mapped[str] = mapped_column(String(16))  # running | committed (its change committed) | done (answer stored)
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(Text)  # JSON [[name, value], …]
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


# -- the store --------------------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """This process running a request under a key it owns."""

    row_id: int
    attempt: uuid.UUID
    engine: object  # the sync engine of the service's database: only its commits mark the key
    active: bool = True


@dataclass
class Outcome:
    """What :meth:`IdempotencyStore.claim` found: ``owned`` (run it), or an answer to give instead."""

    kind: str  # owned | replay | reused | in-use | answer-lost
    attempt: Attempt | None = None
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    retry_after: int = 1


class KeyTakenOver(RuntimeError):
    """This attempt's lease ran out and another attempt owns the key: its change must not commit."""


class IdempotencyStore:
    def __init__(self, sessions: async_sessionmaker, model, *, retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS):
        self.sessions = sessions
        self.table = model.__table__
        self.retention_seconds = max(retention_seconds, 1.0)
        self.lease_seconds = lease_seconds
        name = self.table.name
        self._claim = text(
            f"insert into {name} (caller, method, path, key, fingerprint, attempt, state, lease_until, expires_at) "
            f"values (:caller, :method, :path, :key, :fingerprint, :attempt, 'running', now() + make_interval(secs => :lease), "
            f"now() + make_interval(secs => :retention)) on conflict (caller, method, path, key) do nothing returning id"
        )
        self._existing = text(
            f"select id, fingerprint, state, extract(epoch from lease_until - now()) as lease_left, expires_at <= now() as expired, "
            f"status, headers, body from {name} where caller = :caller and method = :method and path = :path and key = :key for update"
        )
        self._take_over = text(
            f"update {name} set attempt = :attempt, fingerprint = :fingerprint, state = 'running', status = null, headers = null, body = null, "
            f"lease_until = now() + make_interval(secs => :lease), created_at = now(), expires_at = now() + make_interval(secs => :retention) "
            f"where id = :id"
        )
        self._finish = text(
            f"update {name} set state = 'done', status = :status, headers = :headers, body = :body, lease_until = now() "
            f"where id = :id and attempt = :attempt"
        )
        self._release = text(f"delete from {name} where id = :id and attempt = :attempt and state = 'running'")
        self._give_up = text(f"update {name} set lease_until = now() where id = :id and attempt = :attempt and state = 'committed'")
        self._prune = text(f"delete from {name} where expires_at < now() and (state = 'done' or lease_until < now())")

    @contextlib.asynccontextmanager
    async def _transaction(self):
        """The store's own transaction: not a change of the request it serves."""
        with not_a_change():
            async with self.sessions() as session, session.begin():
                yield session

    async def claim(self, *, caller: str, method: str, path: str, key: str, fingerprint: str, engine) -> Outcome:
        attempt = uuid.uuid4()
        scope = {"caller": caller[:300], "method": method, "path": path[:400], "key": key}
        async with self._transaction() as session:
            row_id = (await session.execute(self._claim, {**scope, "fingerprint": fingerprint, "attempt": attempt,
                                                          "lease": self.lease_seconds, "retention": self.retention_seconds})).scalar()
            if row_id is not None:
                return Outcome("owned", Attempt(row_id, attempt, engine))
            row = (await session.execute(self._existing, scope)).one_or_none()
            if row is None:  # pruned between the two statements: the client may try again at once
                return Outcome("in-use", retry_after=1)
            lease_left = float(row.lease_left)
            if row.expired or (row.state == "running" and lease_left <= 0):
                # kept beyond its retention, or an attempt that stopped before committing anything: run it (again)
                await session.execute(self._take_over, {"id": row.id, "attempt": attempt, "fingerprint": fingerprint,
                                                        "lease": self.lease_seconds, "retention": self.retention_seconds})
                return Outcome("owned", Attempt(row.id, attempt, engine))
            if row.fingerprint != fingerprint:
                return Outcome("reused")
            if row.state == "done":
                return Outcome("replay", status=row.status, headers=[tuple(h) for h in json.loads(row.headers or "[]")], body=row.body or b"")
            if lease_left > 0:
                return Outcome("in-use", retry_after=retry_after(self.lease_seconds - lease_left))
            return Outcome("answer-lost")

    def mark_committed(self, dbapi_connection, attempt: Attempt) -> None:
        """In the transaction about to commit (on its DBAPI connection): the key's change is in it.
        Refuses the commit if the key was taken over."""
        cursor = dbapi_connection.cursor()
        try:  # the values are an integer and a UUID: written out, so the statement needs no driver's parameter style
            cursor.execute(f"update {self.table.name} set state = 'committed' where id = {int(attempt.row_id)} "
                           f"and attempt = '{uuid.UUID(str(attempt.attempt))}' and state in ('running', 'committed')")
            marked = cursor.rowcount
        finally:
            cursor.close()
        if marked != 1:
            raise KeyTakenOver("the idempotency key was taken over by a retry after this attempt's lease ran out")

    async def finish(self, attempt: Attempt, *, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Keep the answer; or, for a 5xx of an attempt that committed nothing, release the key."""
        async with self._transaction() as session:
            if status >= 500 and (await session.execute(self._release, {"id": attempt.row_id, "attempt": attempt.attempt})).rowcount == 1:
                return
            await session.execute(self._finish, {"id": attempt.row_id, "attempt": attempt.attempt, "status": status,
                                                 "headers": json.dumps(headers), "body": body})

    async def abandon(self, attempt: Attempt) -> None:
        """The attempt ended without an answer: release the key if nothing committed, otherwise its answer is lost."""
        async with self._transaction() as session:
            params = {"id": attempt.row_id, "attempt": attempt.attempt}
            if (await session.execute(self._release, params)).rowcount == 0:
                await session.execute(self._give_up, params)

    async def prune(self) -> int:
        async with self._transaction() as session:
            return (await session.execute(self._prune)).rowcount

    async def prune_forever(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("pruned %d idempotency keys past their retention", pruned)
            except Exception as exc:  # the database may be away for a while: keys wait for the next round
                log.warning("pruning idempotency keys failed: %s", exc)
            await asyncio.sleep(PRUNE_EVERY_SECONDS)


# -- commits during an attempt ----------------------------------------------------------------------------------------

#: The attempt the current request runs under (set by the middleware; copied into whatever the request awaits).
CURRENT: contextvars.ContextVar[tuple[IdempotencyStore, Attempt] | None] = contextvars.ContextVar("idempotency_attempt", default=None)
_NOT_A_CHANGE: contextvars.ContextVar[bool] = contextvars.ContextVar("idempotency_not_a_change", default=False)


@contextlib.contextmanager
def not_a_change():
    """Commits made inside are not the request's change (a refusal record, an access log, the key's own rows)."""
    token = _NOT_A_CHANGE.set(True)
    try:
        yield
    finally:
        _NOT_A_CHANGE.reset(token)


def _on_commit(connection) -> None:
    """Every commit on a service's engine (a Session's or a plain Connection's, such as a bulk job's COPY), just before
    the DBAPI commit: a commit made for a request under a key marks the key in the same transaction."""
    current = CURRENT.get()
    if current is None or _NOT_A_CHANGE.get():
        return
    store, attempt = current
    if attempt.active and connection.engine is attempt.engine:
        store.mark_committed(connection.connection.dbapi_connection, attempt)


def watch_commits(engine) -> None:
    """Mark keys in the transactions of ``engine`` (the service's sync engine; once)."""
    if not event.contains(engine, "commit", _on_commit):
        event.listen(engine, "commit", _on_commit)


# -- the middleware ---------------------------------------------------------------------------------------------------


class IdempotencyMiddleware:
    """ASGI middleware: requests with an ``Idempotency-Key`` run under the key (see the module's doc)."""

    def __init__(self, app: ASGIApp, *, store: IdempotencyStore, caller: CallerOf, engine, methods: frozenset[str] = frozenset({"POST"}),
                 not_kept: Iterable[str] = ()):
        self.not_kept = [re.compile(pattern) for pattern in not_kept]
        self.app = app
        self.store = store
        self.caller = caller
        self.engine = engine
        self.methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods or any(p.fullmatch(scope["path"]) for p in self.not_kept):
            return await self.app(scope, receive, send)
        raw = next((v for k, v in scope["headers"] if k == HEADER.encode()), None)
        if raw is None:
            return await self.app(scope, receive, send)
        request = Request(scope)
        try:
            key = parse_key(raw)
        except InvalidKey as exc:
            return await self._problem(request, receive, send, 400, "invalid-idempotency-key", "The Idempotency-Key header is not valid", str(exc))
        caller = await self.caller(request)
        if caller is None:  # nobody verified: the route refuses it (or it is public); a key cannot be scoped to anyone
            return await self.app(scope, receive, send)
        read = await _read_body(receive, scope.get("query_string", b""))
        if read is None:  # the client went away before it finished sending: nothing to run
            return
        body, size, print_ = read
        with body:
            await self._under_key(scope, receive, send, request, caller=caller, key=key, body=body, size=size, print_=print_)

    async def _under_key(self, scope: Scope, receive: Receive, send: Send, request: Request, *, caller: str, key: str,
                         body: tempfile.SpooledTemporaryFile, size: int, print_: str) -> None:
        outcome = await self.store.claim(caller=caller, method=scope["method"], path=scope["path"], key=key, fingerprint=print_, engine=self.engine)
        if outcome.kind == "replay":
            return await _send_stored(send, outcome)
        if outcome.kind == "reused":
            return await self._problem(request, receive, send, 409, "idempotency-key-reused", "The Idempotency-Key was used for another request",
                                       "this key was sent before with a different body or query; use a new key for a new request")
        if outcome.kind == "in-use":
            return await self._problem(request, receive, send, 409, "idempotency-key-in-use", "A request with this Idempotency-Key is still running",
                                       "retry after the time given in Retry-After", headers={"retry-after": str(outcome.retry_after)})
        if outcome.kind == "answer-lost":
            return await self._problem(request, receive, send, 409, "idempotency-answer-lost", "The request was carried out but its answer was lost",
                                       "the change committed and the node stopped before it kept the answer; read the result back "
                                       "instead of sending the request again")
        await self._run(scope, receive, send, body, size, outcome.attempt)

    async def _run(self, scope: Scope, receive: Receive, send: Send, body: tempfile.SpooledTemporaryFile, size: int, attempt: Attempt) -> None:
        handed = 0
        body_done = False

        async def replay_body() -> Message:
            nonlocal handed, body_done
            if not body_done:
                chunk = body.read(1 << 16)
                handed += len(chunk)
                body_done = handed >= size
                return {"type": "http.request", "body": chunk, "more_body": not body_done}
            return await receive()

        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        token = CURRENT.set((self.store, attempt))
        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            attempt.active = False
            await asyncio.shield(self.store.abandon(attempt))
            raise
        finally:
            attempt.active = False
            CURRENT.reset(token)
        if start is None:  # the app sent nothing: nothing to keep, and nothing to answer
            await asyncio.shield(self.store.abandon(attempt))
            return
        answer = b"".join(chunks)
        headers = list(start.get("headers", []))
        await asyncio.shield(self.store.finish(attempt, status=start["status"], headers=stored_headers(headers), body=answer))
        await send(start)
        await send({"type": "http.response.body", "body": answer, "more_body": False})

    async def _problem(self, request: Request, receive: Receive, send: Send, status: int, slug: str, title: str, detail: str,
                       headers: dict[str, str] | None = None) -> None:
        metrics.count_refusal(channel="http", reason=slug)
        response = problem_response(request, status, slug, title, detail)
        for name, value in (headers or {}).items():
            response.headers[name] = value
        await response(request.scope, receive, send)


async def _read_body(receive: Receive, query: bytes) -> tuple[tempfile.SpooledTemporaryFile, int, str] | None:
    """The whole body (spooled to disk past 1 MiB: a bulk job may be a gigabyte), its length and its fingerprint;
    None if the client went away before it finished sending."""
    spool = tempfile.SpooledTemporaryFile(max_size=JSON_FINGERPRINT_BYTES)
    raw, size = _digest_of_query(query), 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            spool.close()
            return None
        chunk = message.get("body", b"")
        spool.write(chunk)
        raw.update(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    spool.seek(0)
    if size <= JSON_FINGERPRINT_BYTES:
        print_ = fingerprint(spool.read(), query)
        spool.seek(0)
        return spool, size, print_
    return spool, size, raw.hexdigest()


async def _send_stored(send: Send, outcome: Outcome) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in outcome.headers if k.lower() != REPLAYED_HEADER]
    headers += [(b"content-length", str(len(outcome.body)).encode()), (REPLAYED_HEADER.encode(), b"true")]
    await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
    await send({"type": "http.response.body", "body": outcome.body, "more_body": False})


def install_idempotency(app: FastAPI, rt, model, *, caller: CallerOf, not_kept: Iterable[str] = ()) -> IdempotencyStore:
    """Idempotency keys on every POST of ``app``, kept in ``model``'s table of the service's database; pruned by a loop of ``rt``.

    ``not_kept``: paths (regular expressions) whose answer is a credential, which is not to lie in a table for a day;
    a key sent to them is ignored (issuing a credential again changes nothing)."""
    watch_commits(rt.engine.sync_engine)
    store = IdempotencyStore(rt.sessions, model, retention_seconds=rt.settings.idempotency_retention_seconds)
    app.add_middleware(IdempotencyMiddleware, store=store, caller=caller, engine=rt.engine.sync_engine, not_kept=not_kept)
    rt.run_also(store.prune_forever)
    return store
