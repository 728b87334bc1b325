"""ClickHouse backends behind one small interface: the native protocol (clickhouse-driver) and chDB.

URLs: `clickhouse://user:password@host:9000/database` (native protocol) or `chdb:PATH` (embedded,
a directory as the database; `chdb:PATH?database=NAME` picks the database name, default qunguard).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import orjson

# clickhouse-driver logs each failed connection with its traceback before raising; the error it
# raises is what qunguard reports (one line, password hidden), so its own log stays quiet.
logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)


class BackendError(RuntimeError):
    """The ClickHouse server could not be reached or refused a statement."""


class Backend(Protocol):
    database: str

    def execute(self, sql: str) -> None: ...
    def query(self, sql: str) -> list[tuple]: ...
    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None: ...
    def version(self) -> tuple[int, ...]: ...
    def close(self) -> None: ...


def _first_lines(exc: BaseException) -> str:
    """The server's message without its stack trace."""
    return str(exc).split("Stack trace:")[0].strip()


def quote(text: str) -> str:
    """Text as the inside of a ClickHouse string literal ('…')."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


class NativeBackend:
    """clickhouse-driver over the native TCP protocol (ClickHouse 18.16 and current servers)."""

    def __init__(self, url: str) -> None:
        from clickhouse_driver import Client

        u = urlparse(url)
        self.database = (u.path or "/qunguard").lstrip("/") or "qunguard"
        self._client = Client(
            host=u.hostname or "127.0.0.1", port=u.port or 9000,
            user=unquote(u.username or "default"), password=unquote(u.password or ""),
            connect_timeout=5, send_receive_timeout=60, settings={"insert_block_size": 1_048_576},
        )
        self._lock = threading.Lock()

    def _run(self, sql: str, params: Any = None) -> Any:
        from clickhouse_driver.errors import Error as DriverError

        with self._lock:
            try:
                return self._client.execute(sql, params) if params is not None else self._client.execute(sql)
            except (DriverError, OSError, EOFError) as exc:
                self._client.disconnect()
                raise BackendError(f"ClickHouse: {_first_lines(exc)}") from exc

    def execute(self, sql: str) -> None:
        self._run(sql)

    def query(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in self._run(sql)]

    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if rows:
            self._run(f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) VALUES", rows)

    def version(self) -> tuple[int, ...]:
        return parse_version(self._run("SELECT version()")[0][0])

    def close(self) -> None:
        self._client.disconnect()


class ChdbBackend:
    """chDB: ClickHouse in this process, one directory as the database (the embedded default)."""

    def __init__(self, url: str) -> None:
        try:
            from chdb import session
        except ImportError as exc:
            from pipeline.config import ConfigError

            raise ConfigError(f"config: clickhouse.url: {url} needs the embedded extra "
                              "(pip install 'qunguard[embedded]')") from exc

        rest = url[len("chdb:"):]
        path, _, query = rest.partition("?")
        self.database = parse_qs(query).get("database", ["qunguard"])[0]
        self.path = path or ".qunguard/chdb"
        self._session = session.Session(self.path)
        self._lock = threading.Lock()

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except Exception as exc:  # chDB raises plain RuntimeError for SQL errors
                raise BackendError(f"chDB: {_first_lines(exc)}") from exc

    def execute(self, sql: str) -> None:
        self._run(sql)

    def query(self, sql: str) -> list[tuple]:
        res = self._run(sql, "JSONCompact")
        raw = res.bytes()
        return [tuple(r) for r in orjson.loads(raw)["data"]] if raw else []

    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        # Positional rows (JSONCompactEachRow, which reads rows separated by commas too) from one
        # dumps of the list, its brackets left out: a dumps per row held orjson's 4-8 KB buffer
        # for each until the join (200,000 rows: 0.46 s and over a gigabyte; one dumps: 0.03 s).
        body = str(memoryview(orjson.dumps(rows))[1:-1], "utf-8")
        self._run(f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) FORMAT JSONCompactEachRow\n" + body)

    def version(self) -> tuple[int, ...]:
        return parse_version(self.query("SELECT version()")[0][0])

    def close(self) -> None:
        with self._lock:
            self._session.close()


def connect(url: str) -> Backend:
    if url.startswith("chdb:"):
        return ChdbBackend(url)
    if url.startswith(("clickhouse://", "clickhouse+native://")):
        return NativeBackend(url.replace("clickhouse+native://", "clickhouse://"))
    raise ValueError(f"clickhouse.url: {url!r} is neither clickhouse://host:port/db nor chdb:PATH")
