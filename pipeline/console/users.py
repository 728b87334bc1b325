"""The console's users: one JSON file of people, each in one org with one role, their passwords
hashed with Argon2id (argon2-cffi), and the key that signs the console's session cookies.

The file is written whole to a temporary file and renamed, so a crash never leaves half of it, and
is readable by its owner only (it holds hashes and the signing key)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pipeline.config import ConfigError

ROLES = ("viewer", "reviewer", "admin")  # each can do what the ones before it can
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASHER = PasswordHasher()
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    name: str
    org: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user has `role` or one above it."""
        return ROLES.index(self.role) >= ROLES.index(role)


class Users:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()  # the console's threads share one Users
        self._data = self._read()

    def _read(self) -> dict:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"secret": secrets.token_hex(32), "users": {}}
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"console.users: {self.path}: not a console users file ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict) or not data.get("secret"):
            raise ConfigError(f"console.users: {self.path}: not a console users file")
        return data

    def reload(self) -> None:
        with self._lock:
            self._data = self._read()

    def stamp(self, name: str) -> str:
        """Changes with the user's password (or org, role): a session carries it, so a changed
        password ends the sessions signed in with the old one."""
        u = self._data["users"].get(name)
        return hashlib.sha256(orjson.dumps(u, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16] if u else ""

    @property
    def secret(self) -> str:
        return str(self._data["secret"])

    def get(self, name: str) -> User | None:
        u = self._data["users"].get(name)
        return User(name, u["org"], u["role"]) if u else None

    def all(self) -> list[User]:
        return sorted((User(n, u["org"], u["role"]) for n, u in self._data["users"].items()),
                      key=lambda u: (u.org, u.name))

    def of_any(self) -> bool:
        return bool(self._data["users"])

    def of_org(self, org: str) -> list[User]:
        return sorted((User(n, u["org"], u["role"]) for n, u in self._data["users"].items() if u["org"] == org),
                      key=lambda u: u.name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is theirs; None otherwise (the same for an unknown name, after
        the same work, so the answer's timing does not tell which names exist)."""
        self.reload()  # a password changed by `console-user` counts at once
        u = self._data["users"].get(name)
        stored = u["hash"] if u else _DUMMY
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if u is None:
            return None
        if _HASHER.check_needs_rehash(stored):
            with self._lock:
                self._data = self._read()
                if name in self._data["users"]:
                    self._data["users"][name]["hash"] = _HASHER.hash(password)
                    self._write()
        return User(name, u["org"], u["role"])

    def put(self, name: str, org: str, role: str, password: str | None) -> User:
        """Add a user or change one's org, role or password (None keeps the password)."""
        if not _NAME.match(name):
            raise ConfigError(f"console user {name!r}: a name is 1–64 letters, digits or . _ @ -")
        if role not in ROLES:
            raise ConfigError(f"console user {name}: role {role!r} is not one of {', '.join(ROLES)}")
        if not org:
            raise ConfigError(f"console user {name}: an org is needed")
        with self._lock:
            self._data = self._read()  # what another process (console-user) wrote meanwhile
            return self._put(name, org, role, password)

    def _put(self, name: str, org: str, role: str, password: str | None) -> User:
        old = self._data["users"].get(name)
        if password is None and old is None:
            raise ConfigError(f"console user {name}: a new user needs a password")
        if password is not None and len(password) < MIN_PASSWORD:
            raise ConfigError(f"console user {name}: a password has at least {MIN_PASSWORD} characters")
        digest = _HASHER.hash(password) if password is not None else old["hash"]
        self._data["users"][name] = {"org": org, "role": role, "hash": digest}
        self._write()
        return User(name, org, role)

    def remove(self, name: str) -> bool:
        with self._lock:
            self._data = self._read()
            if self._data["users"].pop(name, None) is None:
                return False
            self._write()
            return True

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)  # mode 0600, unique
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(self._data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.replace(tmp, self.path)


_DUMMY = _HASHER.hash(secrets.token_hex(16))
