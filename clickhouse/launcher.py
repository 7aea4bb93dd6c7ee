#!/usr/bin/env python3
"""ClickHouse's HTTP interface in front of the in-process ClickHouse engine (chdb).

Production runs a real ClickHouse server. Development machines and CI have no
ClickHouse server, but the PyPI wheel ``chdb-core`` embeds the ClickHouse engine
itself (same SQL, same formats, same MergeTree). chdb cannot listen on a port, so
this small front speaks the part of ClickHouse's HTTP protocol that the Rust
``clickhouse`` crate (=0.15.3) uses, and runs every query in chdb. The same Rust
code then talks to either.

What it implements (see README.md beside this file for the differences from a
real server):

* ``GET|POST /ping`` and ``GET /`` -> ``Ok.``
* ``POST /`` (and read-only ``GET /?query=``): the SQL is the ``query`` URL
  parameter, the body, or both (parameter, newline, body), or a
  multipart/form-data body with a ``query`` part and ``param_<name>`` parts.
* URL parameters ``database``, ``default_format``, ``param_<name>``,
  ``decompress=1`` (body in ClickHouse's compressed native blocks),
  ``compress=1`` (reply in them), ``wait_end_of_query``, ``query_id``, and any
  ClickHouse setting (applied with ``SET`` for the request only).
* SELECTs stream (chunked) in row formats; INSERT ... FORMAT data is spooled to
  a file and inserted with INSERT ... FROM INFILE; everything else is run
  buffered.
* ClickHouse-style errors: ``X-ClickHouse-Exception-Code``, the HTTP status
  ClickHouse uses for that code, ``Code: N. DB::Exception: ...`` bodies, and the
  ``X-ClickHouse-Exception-Tag`` framing for errors after streaming has begun.

chdb's low-level module ``chdb._chdb`` is used on purpose: the high-level
streaming API drops the header-only chunk of an empty result, which the crate
needs (it validates the RowBinaryWithNamesAndTypes header even for zero rows).
The wheel is pinned in requirements.txt, so this private API cannot move under us.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import hmac
import json
import logging
import os
import re
import secrets
import signal
import socket
import string
import struct
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

from chdb import _chdb

log = logging.getLogger("chdb-http")

# Idle keep-alive connections are closed after this long, like ClickHouse's
# keep_alive_timeout; the crate drops idle pooled connections after 2 s, so it
# never reuses one we are about to close.
KEEP_ALIVE_TIMEOUT = 10
# A request body may pause this long: the crate's Inserter keeps one INSERT open
# between its writes and only sends when its buffer fills or it commits.
RECEIVE_TIMEOUT = 300
# How long a request waits for a free chdb connection before giving up.
CONNECTION_WAIT = 60
# How long SIGTERM waits for running requests before closing the engine anyway.
SHUTDOWN_GRACE = 30
READ_SIZE = 1 << 20

# URL parameters the HTTP handler consumes itself; every other parameter is a
# ClickHouse setting, as on a real server.
NOT_SETTINGS = {
    "query", "database", "default_format", "user", "password", "quota_key",
    "query_id", "session_id", "session_timeout", "session_check", "compress",
    "decompress", "role", "buffer_size", "wait_end_of_query", "stacktrace",
    "client_protocol_version",
}

# SELECT output formats whose chunks can simply be concatenated (the
# RowBinaryWithNames* header, repeated by chdb in every chunk, is stripped).
# Other formats (JSON, Pretty, CSVWithNames, Parquet, ...) have a prefix or a
# suffix per chunk, so they take the buffered path.
STREAMABLE_FORMATS = {
    f.lower() for f in (
        "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "Native",
        "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV",
        "JSONEachRow", "JSONCompactEachRow", "JSONStringsEachRow", "JSONLines", "NDJSON",
    )
}

# ClickHouse's mapping of exception codes to HTTP statuses
# (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp), by error name; anything else is 500.
STATUS_BY_ERROR_NAME = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys((
        "UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
        "ACCESS_DENIED"), 403),
    **dict.fromkeys((
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME",
        "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4",
        "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID",
        "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE",
        "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE",
        "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"), 400),
    **dict.fromkeys((
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
        "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
        "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"), 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

# Filled from the engine at start-up (errorCodeToName), so no code number is copied here.
ERROR_NAMES: dict[int, str] = {}
ERROR_CODES: dict[str, int] = {}
ENGINE_VERSION = "0"


# --------------------------------------------------------------------------- errors

class ClickHouseError(Exception):
    """An error reported to the client the way ClickHouse reports it."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message  # without the "Code: N. DB::Exception: " prefix

    @classmethod
    def named(cls, name: str, message: str) -> "ClickHouseError":
        return cls(ERROR_CODES.get(name, 1001), f"{message}. ({name})")

    @property
    def status(self) -> int:
        return STATUS_BY_ERROR_NAME.get(ERROR_NAMES.get(self.code, ""), 500)

    def text(self) -> str:
        return f"Code: {self.code}. DB::Exception: {self.message} (version {ENGINE_VERSION} (chdb))"


_CODE_PREFIX = re.compile(r"Code: (\d+)\. DB::Exception: ")
_VERSION_SUFFIX = re.compile(r" \(version \d[^()]*(?:\([^()]*\))?\)")
_NAME_SUFFIX = re.compile(r"\.? \(([A-Z][A-Z0-9_]*)\)\s*$")


def engine_error(exc: BaseException) -> ClickHouseError:
    """Turn a chdb exception into a ClickHouseError.

    chdb's messages are ClickHouse's ("Code: 60. DB::Exception: ... (UNKNOWN_TABLE)"),
    sometimes behind a prefix added by the Python binding, with or
    without the version suffix, and occasionally nested several times over.
    """
    if isinstance(exc, ClickHouseError):
        return exc
    text = str(exc)
    match = _CODE_PREFIX.search(text)
    if not match:
        return ClickHouseError.named("STD_EXCEPTION", text.strip().rstrip(".") or type(exc).__name__)
    code = int(match.group(1))
    body = _VERSION_SUFFIX.sub("", text[match.end():]).strip()
    while nested := _CODE_PREFIX.match(body):
        # each nesting level added its own ". (NAME)" at the end
        body = _NAME_SUFFIX.sub("", body[nested.end():], count=1)
    if not _NAME_SUFFIX.search(body):
        body = f"{body.rstrip('.')}. ({ERROR_NAMES.get(code, 'UNKNOWN_EXCEPTION')})"
    return ClickHouseError(code, body)


# --------------------------------------------------------------------------- SQL helpers

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_FORMAT_AT_END = re.compile(r"^(.*\S)\s+FORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.S | re.I)
_FORMAT_IN_HEAD = re.compile(rb"^(.*?\S)\s+FORMAT\s+([A-Za-z][A-Za-z0-9_]*)[ \t]*(?:\r?\n)?", re.S | re.I)
_NOT_SPOOLABLE = re.compile(r"\b(SELECT|VALUES|INFILE)\b", re.I)
_ANY_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+[A-Za-z]", re.I)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def statement_head(sql: str) -> str:
    """The statement without leading blanks and comments."""
    return sql[_LEADING_NOISE.match(sql).end():]


def first_keyword(sql: str) -> str:
    match = re.match(r"[A-Za-z]+|\(", statement_head(sql))
    return match.group(0).upper() if match else ""


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def infile_insert(statement: str, path: str, fmt: str) -> str:
    """``INSERT INTO t (cols) [SETTINGS ...]`` -> ``INSERT INTO t (cols) FROM INFILE 'path' [SETTINGS ...] FORMAT fmt``."""
    settings = re.search(r"\s+SETTINGS\s+", statement, re.I)
    head, tail = (statement[:settings.start()], statement[settings.start():]) if settings else (statement, "")
    return f"{head} FROM INFILE {quote_string(path)}{tail} FORMAT {fmt}"


def changes_session(sql: str) -> bool:
    """SET, USE and temporary tables outlive the query on a chdb connection, but
    not on a real server without a session: such a connection is not reused."""
    kw = first_keyword(sql)
    return kw in ("SET", "USE") or (
        kw == "CREATE" and re.match(r"CREATE\s+TEMPORARY\b", statement_head(sql), re.I) is not None)


def rowbinary_header_size(chunk: bytes, with_types: bool) -> int:
    """Size of the RowBinaryWithNames[AndTypes] header at the start of a chunk."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = chunk[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    columns, pos = varint(0)
    for _ in range(columns * (2 if with_types else 1)):
        length, pos = varint(pos)
        pos += length
    if pos > len(chunk):
        raise ValueError("truncated RowBinary header")
    return pos


def content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if f.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if f.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack", "capnproto")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


# --------------------------------------------------------------------------- compressed native blocks

_BLOCK_HEADER = struct.Struct("<BII")  # method, compressed size (incl. these 9 bytes), raw size
METHOD_NONE, METHOD_LZ4 = 0x02, 0x82
MAX_BLOCK = 1 << 30


def _checksum(data: bytes) -> bytes:
    # CityHash128 v1.0.2 of the 9-byte header and the payload. On the wire it is
    # two little-endian u64 halves; clickhouse-cityhash returns the integer with
    # them the other way round (checked against the crate's own blocks).
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & 0xFFFF_FFFF_FFFF_FFFF)


def decompress_blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decode a stream of ClickHouse compressed native blocks (``decompress=1``)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        pos = 0
        while len(buf) - pos >= 25:
            method, size, raw_size = _BLOCK_HEADER.unpack_from(buf, pos + 16)
            if size < 9 or size > MAX_BLOCK or raw_size > MAX_BLOCK:
                raise ClickHouseError.named("TOO_LARGE_SIZE_COMPRESSED", f"Too large size of compressed block: {size}")
            if len(buf) - pos < 16 + size:
                break
            framed = bytes(buf[pos + 16:pos + 16 + size])
            if _checksum(framed) != buf[pos:pos + 16]:
                raise ClickHouseError.named("CHECKSUM_DOESNT_MATCH", "Checksum doesn't match: corrupted data")
            payload = framed[9:]
            if method == METHOD_LZ4:
                try:
                    block = lz4.block.decompress(payload, uncompressed_size=raw_size)
                except lz4.block.LZ4BlockError as exc:
                    raise ClickHouseError.named("CANNOT_DECOMPRESS", f"Cannot decompress LZ4 block: {exc}") from None
            elif method == METHOD_NONE:
                block = payload
            else:
                raise ClickHouseError.named(
                    "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method 0x{method:02x} (this front supports LZ4 and none)")
            pos += 16 + size
            yield block
        del buf[:pos]
    if buf:
        raise ClickHouseError.named("CANNOT_READ_ALL_DATA", "Truncated compressed block at the end of the request body")


def compress_block(data: bytes) -> bytes:
    payload = lz4.block.compress(data, store_size=False)
    framed = _BLOCK_HEADER.pack(METHOD_LZ4, 9 + len(payload), len(data)) + payload
    return _checksum(framed) + framed


# --------------------------------------------------------------------------- engine and connection pool

class Connection:
    """One chdb connection, tracking what it carries over between requests."""

    def __init__(self, raw):
        self.raw = raw
        self.database = "default"
        self.discard = False  # set when session state leaked into it, or it misbehaved

    def run(self, sql: str, fmt: str = "TabSeparated", params: dict | None = None):
        try:
            return self.raw.query(sql, fmt, params=params or {})
        except Exception as exc:  # chdb raises RuntimeError; anything else is reported alike
            raise engine_error(exc) from None

    def use(self, database: str) -> None:
        # A pooled connection keeps its current database, so every request sets its own.
        if database != self.database:
            self.database = ""  # unknown until USE succeeds
            self.run(f"USE {quote_identifier(database)}")
            self.database = database

    def apply_settings(self, settings: dict[str, str]) -> None:
        if settings:
            self.run("SET " + ", ".join(f"{k} = {quote_string(v)}" for k, v in settings.items()))

    def reset_settings(self, settings: dict[str, str]) -> None:
        if settings:
            try:
                self.run("SET " + ", ".join(f"{k} = DEFAULT" for k in settings))
            except ClickHouseError:
                self.discard = True  # e.g. after readonly=1: cannot reset, so do not reuse


class Engine:
    """The chdb engine (one data path per process) and a pool of its connections.

    A chdb connection runs one query at a time (and a streaming query holds it),
    so each request takes a connection of its own.
    """

    def __init__(self, path: str, max_connections: int):
        self._uri = f"file:{path}"
        # Keeps the engine alive: chdb shuts down when its last connection closes.
        self._anchor = _chdb.connect(self._uri)
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self.active = 0
        self.closed = False

    def describe(self) -> tuple[str, str, dict[int, str]]:
        version, tz = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
        rows = self._anchor.query(
            "SELECT number, errorCodeToName(number) FROM numbers(5000) WHERE errorCodeToName(number) != ''",
            "TabSeparated").bytes().decode().splitlines()
        return version, tz, {int(c): n for c, n in (r.split("\t") for r in rows)}

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=CONNECTION_WAIT):
            raise ClickHouseError.named("TOO_MANY_SIMULTANEOUS_QUERIES", "Too many simultaneous queries")
        conn = None
        try:
            with self._lock:
                if self.closed:
                    raise ClickHouseError.named("ABORTED", "Server is shutting down")
                conn = self._idle.pop() if self._idle else None
                if conn is None:
                    conn = Connection(_chdb.connect(self._uri))
                self.active += 1
            yield conn
        finally:
            with self._lock:
                if conn is not None:
                    self.active -= 1
                    if conn.discard or self.closed:
                        _close_quietly(conn.raw)
                    else:
                        self._idle.append(conn)
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn.raw)
        _close_quietly(self._anchor)


def _close_quietly(raw) -> None:
    try:
        raw.close()
    except Exception:  # closing must never take the server down
        log.exception("closing a chdb connection failed")


# --------------------------------------------------------------------------- request parsing

class RequestBody:
    """The request body, read lazily (Content-Length or chunked), at most once."""

    def __init__(self, handler: BaseHTTPRequestHandler):
        self._rfile = handler.rfile
        self._chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        try:
            self._remaining = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            raise ClickHouseError.named("BAD_ARGUMENTS", "Invalid Content-Length") from None
        self.finished = not self._chunked and self._remaining == 0
        self._chunks: Iterator[bytes] | None = None

    def chunks(self) -> Iterator[bytes]:
        """The body's chunks; every call continues the same single pass."""
        if self._chunks is None:
            self._chunks = self._generate()
        return self._chunks

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def drain(self) -> None:
        for _ in self.chunks():
            pass

    def _generate(self) -> Iterator[bytes]:
        try:
            yield from (self._read_chunked() if self._chunked else self._read_sized())
        except (OSError, ValueError) as exc:  # timeout, reset, malformed chunk framing
            raise ClickHouseError.named("CANNOT_READ_ALL_DATA", f"Cannot read the request body: {exc}") from None
        self.finished = True

    def _read_sized(self) -> Iterator[bytes]:
        while self._remaining > 0:
            data = self._rfile.read(min(self._remaining, READ_SIZE))
            if not data:
                raise ValueError("connection closed before the end of the body")
            self._remaining -= len(data)
            yield data

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise ValueError("bad chunk header")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self._rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = self._rfile.read(size)
            if len(data) != size or self._rfile.read(2) not in (b"\r\n",):
                raise ValueError("truncated chunk")
            yield data


class Query:
    """Everything a request asks for, parsed from its URL, headers and (multipart) body."""

    def __init__(self):
        self.sql = ""  # the query parameter / multipart query part
        self.database = "default"
        self.default_format = "TabSeparated"
        self.settings: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.query_id = ""
        self.decompress = False
        self.compress = False
        self.wait_end = False


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false")


# --------------------------------------------------------------------------- HTTP handler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-chdb-front"
    timeout = KEEP_ALIVE_TIMEOUT
    server: "Server"

    def setup(self):
        super().setup()
        # Without it, Nagle + delayed ACK cost ~40 ms per small request/response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code="-", size="-"):
        pass  # one line per failed query is logged instead (see _send_error)

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)

    def log_error(self, fmt, *args):
        if not fmt.startswith("Request timed out"):  # an idle keep-alive connection closing
            super().log_error(fmt, *args)

    def do_GET(self):
        self._serve()

    def do_POST(self):
        self._serve()

    # -- dispatch

    def _serve(self):
        started = time.monotonic()
        self.connection.settimeout(RECEIVE_TIMEOUT)
        self.body = None
        self.headers_sent = False
        try:
            self.body = RequestBody(self)
            url = urlsplit(self.path)
            pairs = parse_qsl(url.query, keep_blank_values=True)
            if self.server.draining:
                raise ClickHouseError.named("ABORTED", "Server is shutting down")
            if url.path == "/ping" or (url.path == "/" and self.command == "GET" and not any(k == "query" for k, _ in pairs)):
                self.body.read_all()
                self._send_plain(200, b"Ok.\n")
            elif url.path in ("/", ""):
                self._run(self._parse(pairs))
            else:
                self.body.read_all()
                self._send_plain(404, f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n".encode())
        except ClickHouseError as exc:
            self._send_error(exc)
        except ConnectionError:  # the client went away while we answered
            self.close_connection = True
        except Exception as exc:  # a bug here must not kill the connection thread silently
            log.exception("unexpected error")
            self._send_error(engine_error(exc))
        finally:
            if self.server.draining or (self.body is not None and not self.body.finished):
                self.close_connection = True  # unread body bytes would be taken for the next request
            self.connection.settimeout(KEEP_ALIVE_TIMEOUT)
            if self.server.verbose:
                log.info("%s %s %.1f ms", self.command, self.path[:200], (time.monotonic() - started) * 1000)

    def _parse(self, pairs: list[tuple[str, str]]) -> Query:
        q = Query()
        self._authenticate(pairs)
        for key, value in pairs:
            if key == "query":
                q.sql = value
            elif key == "database":
                q.database = value or "default"
            elif key == "default_format":
                q.default_format = value or "TabSeparated"
            elif key == "query_id":
                q.query_id = value
            elif key == "decompress":
                q.decompress = _truthy(value)
            elif key == "compress":
                q.compress = _truthy(value)
            elif key == "wait_end_of_query":
                q.wait_end = _truthy(value)
            elif key.startswith("param_"):
                q.params[key[len("param_"):]] = value
            elif key not in NOT_SETTINGS:
                if not _IDENT.match(key):
                    raise ClickHouseError.named("UNKNOWN_SETTING", f"Unknown setting '{key}'")
                q.settings[key] = value
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            self._parse_multipart(q, ctype)
        q.query_id = q.query_id or str(uuid.uuid4())
        return q

    def _parse_multipart(self, q: Query, ctype: str) -> None:
        # The crate sends .param() queries as multipart: a "query" part and
        # "param_<name>" parts. Other parts (external tables) are not supported.
        raw = self.body.read_all()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + raw)
        if not message.is_multipart():
            raise ClickHouseError.named("BAD_ARGUMENTS", "Malformed multipart/form-data body")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition") or ""
            value = (part.get_payload(decode=True) or b"").decode("utf-8")
            if name == "query":
                q.sql = f"{q.sql}\n{value}" if q.sql else value
            elif name.startswith("param_"):
                q.params[name[len("param_"):]] = value
            else:
                raise ClickHouseError.named("NOT_IMPLEMENTED", f"Unsupported multipart field '{name}'")

    def _authenticate(self, pairs: list[tuple[str, str]]) -> None:
        expected = self.server.credentials
        if expected is None:
            return  # accept anyone, like a default server with an empty password
        args = dict(pairs)
        user = self.headers.get("X-ClickHouse-User") or args.get("user")
        password = self.headers.get("X-ClickHouse-Key") or args.get("password")
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        user, password = user or "default", password or ""
        if not (hmac.compare_digest(user, expected[0]) and hmac.compare_digest(password, expected[1])):
            raise ClickHouseError.named(
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name")

    # -- execution

    def _run(self, q: Query) -> None:
        body_chunks = self.body.chunks()
        if q.decompress:
            body_chunks = decompress_blocks(body_chunks)

        insert, body_chunks = self._split_insert(q, body_chunks)
        if insert is not None:
            if self.command == "GET":
                raise _readonly_error()
            return self._insert(q, *insert, body_chunks)

        raw = b"".join(body_chunks)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ClickHouseError.named(
                "BAD_ARGUMENTS", "The query is not valid UTF-8 (send binary INSERT data after ?query=INSERT ... FORMAT ...)") from None
        sql = f"{q.sql}\n{text}" if q.sql and text else (q.sql or text)
        if not statement_head(sql).strip():
            raise ClickHouseError.named("SYNTAX_ERROR", "Empty query")

        with self.server.engine.connection() as conn:
            self._check_statement(conn, sql)
            conn.use(q.database)
            conn.apply_settings(q.settings)
            try:
                if not (self._can_stream(q, sql) and self._stream_select(conn, q, sql)):
                    self._buffered(conn, q, sql)
            finally:
                conn.reset_settings(q.settings)
                if changes_session(sql):
                    conn.discard = True

    def _split_insert(self, q: Query, chunks: Iterator[bytes]):
        """Finds ``INSERT ... FORMAT <fmt>`` whose data can be spooled for FROM INFILE.

        Returns ((statement without FORMAT, fmt) or None, the body's chunks). The
        statement is the query parameter (the crate: body = data only) or the start
        of the body (curl: ``INSERT INTO t FORMAT CSV``, newline, data).
        """
        if q.sql:
            match = _FORMAT_AT_END.match(q.sql)
            # INSERT ... SELECT (input()) and inline VALUES are left to the engine's parser.
            if first_keyword(q.sql) == "INSERT" and match and not _NOT_SPOOLABLE.search(match.group(1)):
                return (match.group(1), match.group(2)), chunks
            return None, chunks
        head = bytearray()
        for chunk in chunks:  # peek far enough to see the statement
            head += chunk
            if len(head) >= 65536:
                break
        if first_keyword(head[:65536].decode("latin-1")) == "INSERT":
            match = _FORMAT_IN_HEAD.match(head)
            # Quoted text could hide the real FORMAT clause: also left to the engine.
            if match and b"'" not in match.group(1) and not _NOT_SPOOLABLE.search(match.group(1).decode("latin-1")):
                statement = (match.group(1).decode("utf-8"), match.group(2).decode())
                return statement, _chain(bytes(head[match.end():]), chunks)
        return None, _chain(bytes(head), chunks)

    def _check_statement(self, conn: Connection, sql: str) -> None:
        if first_keyword(sql) == "INSERT":
            return  # inline data would be parsed as SQL by classify_query
        info = conn.raw.classify_query(sql)
        if info["statement_count"] > 1:
            raise ClickHouseError.named("SYNTAX_ERROR", "Multi-statements are not allowed")
        if self.command == "GET" and info["query_class"] != _chdb.query_class.READ_ONLY and first_keyword(sql) not in ("SET", "USE"):
            raise _readonly_error()

    def _can_stream(self, q: Query, sql: str) -> bool:
        return (not q.wait_end and first_keyword(sql) in ("SELECT", "WITH", "(")
                and q.default_format.lower() in STREAMABLE_FORMATS
                and not _ANY_FORMAT_CLAUSE.search(sql))  # an explicit FORMAT clause: buffered

    def _buffered(self, conn: Connection, q: Query, sql: str) -> None:
        result = conn.run(sql, q.default_format, q.params)
        data = result.bytes()
        summary = {
            "read_rows": result.rows_read(), "read_bytes": result.bytes_read(),
            "written_rows": result.rows_written(), "written_bytes": result.bytes_written(),
            "total_rows_to_read": 0, "result_rows": result.rows_read(), "result_bytes": len(data),
            "elapsed_ns": int(result.elapsed() * 1e9),
        }
        explicit = _FORMAT_AT_END.match(sql)
        self._send_result(q, data, summary, explicit.group(2) if explicit else q.default_format)

    def _stream_select(self, conn: Connection, q: Query, sql: str) -> bool:
        """Streams a SELECT in chunks; returns False if chdb cannot stream this query."""
        fmt = q.default_format.lower()
        raw = conn.raw
        try:
            stream = raw.send_query(sql, q.default_format, params=q.params)
            first = raw.streaming_fetch_result(stream)
        except Exception as exc:
            if "Streaming query is not supported" in str(exc):
                return False
            raise engine_error(exc) from None
        data = first.bytes()
        header = b""
        if fmt in ("rowbinarywithnamesandtypes", "rowbinarywithnames"):
            if not data:
                # chdb sends the header alone for an empty result; should that ever
                # change, the buffered path still yields the header the crate needs.
                with contextlib.suppress(Exception):
                    raw.streaming_cancel_query(stream)
                return False
            header = data[:rowbinary_header_size(data, fmt.endswith("types"))]

        tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
        self.send_response(200)
        self._common_headers(q, {"read_rows": first.rows_read(), "read_bytes": first.bytes_read()}, q.default_format)
        self.send_header("X-ClickHouse-Exception-Tag", tag)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.headers_sent = True
        try:
            self._write_chunk(data, q.compress)
            while True:
                try:
                    result = raw.streaming_fetch_result(stream)
                except Exception as exc:
                    self._write_stream_error(engine_error(exc), tag, q)
                    return True
                data = result.bytes()
                if not data:
                    break
                if header and data.startswith(header):
                    data = data[len(header):]
                self._write_chunk(data, q.compress)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away: stop the query
            self.close_connection = True
            try:
                raw.streaming_cancel_query(stream)
            except Exception:
                conn.discard = True
        return True

    def _insert(self, q: Query, statement: str, fmt: str, data: Iterator[bytes]) -> None:
        # The data is spooled to a file and inserted with INSERT ... FROM INFILE.
        # chdb's streaming insert API (send_insert) would avoid the copy, but it
        # reports success for INSERTs that fail in the table's sink (CHECK
        # constraints, materialized views, too many partitions) and drops their
        # data; FROM INFILE runs the ordinary INSERT and raises like a server.
        # A body cut off half-way then never reaches the engine at all.
        fd, path = tempfile.mkstemp(prefix="insert-", suffix=".bin", dir=self.server.spool_dir)
        try:
            with os.fdopen(fd, "wb") as spool:
                for chunk in data:
                    spool.write(chunk)
            with self.server.engine.connection() as conn:
                conn.use(q.database)
                conn.apply_settings(q.settings)
                try:
                    result = conn.run(infile_insert(statement, path, fmt), q.default_format, q.params)
                finally:
                    conn.reset_settings(q.settings)
        finally:
            os.unlink(path)
        summary = {
            "read_rows": result.rows_read(), "read_bytes": result.bytes_read(),
            "written_rows": result.rows_written(), "written_bytes": result.bytes_written(),
            "total_rows_to_read": 0, "result_rows": result.rows_written(),
            "result_bytes": result.bytes_written(), "elapsed_ns": int(result.elapsed() * 1e9),
        }
        self._send_result(q, b"", summary, q.default_format)

    # -- responses

    def _common_headers(self, q: Query, summary: dict, fmt: str) -> None:
        self.send_header("Content-Type", content_type(fmt))
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-local")
        self.send_header("X-ClickHouse-Query-Id", q.query_id)
        self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Timezone", self.server.timezone)
        self.send_header("Keep-Alive", f"timeout={KEEP_ALIVE_TIMEOUT}")
        # ClickHouse sends every summary value as a JSON string; the crate relies on it.
        self.send_header("X-ClickHouse-Summary", json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":")))

    def _send_result(self, q: Query, data: bytes, summary: dict, fmt: str) -> None:
        if q.compress and data:
            data = compress_block(data)
        self.send_response(200)
        self._common_headers(q, summary, fmt)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.headers_sent = True
        if data:
            self.wfile.write(data)

    def _write_chunk(self, data: bytes, compress: bool) -> None:
        if data:
            if compress:
                data = compress_block(data)
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _write_stream_error(self, exc: ClickHouseError, tag: str, q: Query) -> None:
        # ClickHouse 25.11+ framing, recognised by the crate when it is one chunk;
        # the connection is then closed without the final chunk, so a client that
        # misses the frame still sees a broken response rather than fewer rows.
        log.info("query %s failed while streaming: %s", q.query_id, exc.text())
        message = exc.text().encode() + b"\n"
        frame = b"\r\n__exception__\r\n%b\r\n%b%d %b\r\n__exception__\r\n" % (
            tag.encode(), message, len(message), tag.encode())
        self.wfile.write(b"%x\r\n%b\r\n" % (len(frame), frame))
        self.close_connection = True

    def _send_error(self, exc: ClickHouseError) -> None:
        log.info("query failed: %s", exc.text())
        if self.headers_sent:
            self.close_connection = True  # nothing sensible can follow a started response
            return
        try:
            if self.body is not None and not self.body.finished:
                # Read the rest so that the client, still sending, gets to see the error.
                with contextlib.suppress(ClickHouseError):
                    self.body.drain()
            text = (exc.text() + "\n").encode()
            self.send_response(exc.status)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("X-ClickHouse-Exception-Code", str(exc.code))
            self.send_header("X-ClickHouse-Server-Display-Name", "chdb-local")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.headers_sent = True
            self.wfile.write(text)
        except OSError:
            self.close_connection = True  # the client is gone

    def _send_plain(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Keep-Alive", f"timeout={KEEP_ALIVE_TIMEOUT}")
        self.end_headers()
        self.headers_sent = True
        self.wfile.write(text)


def _readonly_error() -> ClickHouseError:
    return ClickHouseError.named(
        "READONLY", "Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
        "readonly. You should use method POST for modifying queries")


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


class Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up shutdown
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, engine: Engine, spool_dir: str, timezone: str, credentials, verbose: bool):
        self.engine = engine
        self.spool_dir = spool_dir
        self.timezone = timezone
        self.credentials = credentials
        self.verbose = verbose
        self.draining = False
        super().__init__(address, Handler)


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KALSHIBOOK_LOCAL_CLICKHOUSE_PORT", "8123")))
    parser.add_argument("--data", required=True, help="chdb data directory (one per process)")
    parser.add_argument("--spool", help="directory for INSERT data in transit, of this launcher's own "
                        "(default: DATA/http_spool)")
    parser.add_argument("--max-connections", type=int, default=64, help="concurrent queries")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    # Optional credentials check; by default any user/password is accepted.
    user = os.environ.get("KALSHIBOOK_LOCAL_CLICKHOUSE_USER")
    password = os.environ.get("KALSHIBOOK_LOCAL_CLICKHOUSE_PASSWORD")
    credentials = (user or "default", password or "") if (user or password) else None

    os.makedirs(args.data, exist_ok=True)
    # Inside the data directory by default: one launcher per data directory, so
    # leftovers of a killed launcher are ours to delete, and go with the data.
    spool_dir = os.path.abspath(args.spool or os.path.join(args.data, "http_spool"))
    os.makedirs(spool_dir, exist_ok=True)
    for leftover in os.listdir(spool_dir):
        if leftover.startswith("insert-") and leftover.endswith(".bin"):
            os.unlink(os.path.join(spool_dir, leftover))
    engine = Engine(os.path.abspath(args.data), args.max_connections)
    global ENGINE_VERSION
    ENGINE_VERSION, timezone, names = engine.describe()
    ERROR_NAMES.update(names)
    ERROR_CODES.update({n: c for c, n in names.items()})

    # Loopback only: FROM INFILE / file() read this machine's files.
    try:
        server = Server(("127.0.0.1", args.port), engine, spool_dir, timezone, credentials, args.verbose)
    except OSError as exc:
        log.error("cannot listen on 127.0.0.1:%d: %s", args.port, exc)
        engine.close()
        return 1

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        server.draining = True
        # shutdown() waits for serve_forever() to return, which runs in this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("ClickHouse %s (chdb) on http://127.0.0.1:%d, data in %s", ENGINE_VERSION, args.port, args.data)
    server.serve_forever(poll_interval=0.2)
    server.server_close()

    deadline = time.monotonic() + SHUTDOWN_GRACE
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.05)
    if engine.active:
        log.warning("%d queries still running after %d s; exiting without closing the engine", engine.active, SHUTDOWN_GRACE)
        logging.shutdown()
        os._exit(1)  # closing chdb under running queries could crash; parts written so far are on disk
    engine.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
