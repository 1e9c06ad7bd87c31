"""Players' personal data: the keyed hash of personal fields, forget requests and the suppression
list they make, and the audit log of erasures (docs/privacy.md).

* The secret: 32 random bytes in ``$QUESTLOG_HOME/privacy/secret`` (0600, made on first use, or
  QUESTLOG_PRIVACY_SECRET_FILE). It keys every hash (HMAC-SHA256) and is never written to a table,
  a topic or a log; losing it makes every later hash differ from the earlier ones.
* Personal fields (``pii`` in a schema: ``hash``, ``drop``, ``ip``) are rewritten by the router
  before any copy is written (``pseudonymise``): a hashed value is ``hmac:<32 hex>``, the same for
  the same value, so joins and counts of distinct values still work; ``ip`` keeps an IPv4 address's
  first three bytes and an IPv6 address's first 48 bits.
* A forget request is a file ``$QUESTLOG_HOME/privacy/requests/<id>.json`` written and fsynced
  before ``questlog forget`` answers (``RequestStore.record``): durable, and idempotent (the id is
  a keyed hash of the player, so asking twice is one request). While pending it holds the player's
  id (the compactor needs it to find their rows); once erased only its keyed hash is kept, which
  is what the suppression list is made of. ``Suppressions`` is that list as the router reads it:
  reloaded when the directory changes (one ``stat`` per chunk routed), a set lookup per event.
* The audit log (``$QUESTLOG_HOME/privacy/audit.log``, JSON lines) says what was done when by
  request id: tables, rows, files rewritten; never the player's id or its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from questlog.catalog.model import PII_MODES  # noqa: F401  (re-exported)
from questlog.settings import Settings

log = logging.getLogger(__name__)

HASH_PREFIX = "hmac:"
MAX_USER_ID_CHARS = 1024  # the longest player id a forget request takes (the router's ids are shorter)
ANY_SOURCE = "*"

PENDING, ERASED, DONE, LIFTED = "pending", "erased", "done", "lifted"
SUPPRESSING = (PENDING, ERASED, DONE)


# The secret ---------------------------------------------------------------------------------


def secret_path(settings: Settings) -> Path:
    return Path(settings.privacy_secret_file or Path(settings.home) / "privacy" / "secret")


def load_secret(settings: Settings) -> bytes:
    """The hashing key: read from its file, made (0600, 32 random bytes) if there is none yet."""
    path = secret_path(settings)
    for _ in range(3):
        try:
            text = path.read_text().strip()
            if text:
                return bytes.fromhex(text)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile: read theirs
            time.sleep(0.05)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
    raise RuntimeError(f"the privacy secret {path} is empty or unreadable (QUESTLOG_PRIVACY_SECRET_FILE)")


class Hasher:
    """HMAC-SHA256 under the secret, in the spellings Questlog uses."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._players: dict[str, str] = {}

    def __repr__(self) -> str:  # never the key
        return "Hasher(<secret>)"

    def _mac(self, domain: bytes, value: str) -> str:
        return hmac.new(self._key, domain + value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def value(self, value: str) -> str:
        """A personal field's pseudonym: ``hmac:`` and 32 hex digits."""
        return HASH_PREFIX + self._mac(b"value\0", value)[:32]

    def player(self, user_id: str) -> str:
        """The suppression list's key of a player id (cached: players repeat)."""
        known = self._players.get(user_id)
        if known is None:
            if len(self._players) > 100_000:
                self._players.clear()
            known = self._players[user_id] = self._mac(b"player\0", user_id)
        return known

    def request_id(self, user_id: str, source: str | None) -> str:
        return self._mac(b"request\0", f"{source or ANY_SOURCE}\0{user_id}")[:24]


def truncate_ip(value: Any) -> str | None:
    """An address with its host part cut: IPv4 to /24, IPv6 to /48; None for what is no address."""
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def pseudonymise(event: dict, rules: Iterable[tuple[str, str]], hasher: Hasher) -> bool:
    """Rewrite ``event``'s personal fields in place by their rules ((field, mode) pairs); True when
    a field was changed (an event without personal values, or one already rewritten, is not)."""
    changed = False
    for name, mode in rules:
        if name not in event:
            continue
        value = event[name]
        if mode == "drop":
            del event[name]
            changed = True
        elif value is None:
            continue
        elif mode == "hash":
            if not (isinstance(value, str) and value.startswith(HASH_PREFIX) and len(value) == len(HASH_PREFIX) + 32):
                event[name] = hasher.value(value if isinstance(value, str) else json.dumps(value))
                changed = True
        elif mode == "ip":
            event[name] = truncate_ip(value)
            changed = changed or event[name] != value
    return changed


# Forget requests ----------------------------------------------------------------------------


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID_CHARS:
        raise ValueError(f"a player id is 1 to {MAX_USER_ID_CHARS} characters")
    if any(ord(c) < 32 for c in user_id):
        raise ValueError("a player id has no control characters")
    return user_id


@dataclass
class Request:
    id: str
    user_hash: str
    source: str | None  # None: the player in every source
    requested_at: float
    state: str = PENDING
    user_id: str | None = None  # only while pending/erasing: the tables hold it
    erased_at: float | None = None
    done_at: float | None = None
    note: str = ""
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows erased
    files_rewritten: int = 0
    files: list[str] = field(default_factory=list)  # data files that held them, until gone from HDFS

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        if self.state != PENDING:
            doc.pop("user_id", None)  # erased: only its hash stays
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Request:
        known = set(cls.__dataclass_fields__)
        return cls(**{"source": None, **{k: v for k, v in doc.items() if k in known}})


def _write_durably(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class RequestStore:
    """The forget requests under ``$QUESTLOG_HOME/privacy/requests``: one file each."""

    def __init__(self, settings: Settings, hasher: Hasher | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.home) / "privacy"
        self.dir = self.root / "requests"
        self.audit_path = self.root / "audit.log"
        self._hasher = hasher

    @property
    def hasher(self) -> Hasher:
        if self._hasher is None:
            self._hasher = Hasher(load_secret(self.settings))
        return self._hasher

    def _ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, request_id: str) -> Path:
        return self.dir / f"{request_id}.json"

    def record(self, user_id: str, source: str | None = None, now: float | None = None) -> tuple[Request, bool]:
        """Record a forget request durably (on disk, fsynced, before returning); (it, new). Asking
        again for a player already asked for is the same request: pending stays pending, one erased
        or done is erased again (its rows may have come back through a path nobody checks)."""
        check_user_id(user_id)
        self._ensure()
        rid = self.hasher.request_id(user_id, source)
        existing = self.get(rid)
        if existing is not None and existing.state == PENDING:
            return existing, False
        request = Request(
            rid, self.hasher.player(user_id), source, now if now is not None else time.time(), user_id=user_id
        )
        if existing is not None and existing.state in (ERASED, DONE):  # what is still to check on HDFS
            request.files, request.rows = existing.files, existing.rows
        _write_durably(self.path(rid), request.to_json())
        self.audit("requested", request)
        return request, existing is None

    def lift(self, user_id: str, source: str | None = None) -> Request | None:
        """End the suppression of a player: their events land again from now on."""
        check_user_id(user_id)
        request = self.get(self.hasher.request_id(user_id, source))
        if request is None or request.state == LIFTED:
            return request
        request.state, request.user_id, request.note = LIFTED, None, "suppression lifted"
        request.done_at = request.done_at or time.time()
        self.save(request)
        self.audit("lifted", request)
        return request

    def save(self, request: Request) -> None:
        self._ensure()
        _write_durably(self.path(request.id), request.to_json())

    def get(self, request_id: str) -> Request | None:
        try:
            return Request.from_json(json.loads(self.path(request_id).read_text()))
        except FileNotFoundError:
            return None

    def all(self) -> list[Request]:
        out = []
        try:
            paths = sorted(self.dir.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            try:
                out.append(Request.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # replaced meanwhile; read next time
        return sorted(out, key=lambda r: r.requested_at)

    def open(self) -> list[Request]:
        """Requests not done yet: pending (rows still there) or erased (bytes still on HDFS)."""
        return [r for r in self.all() if r.state in (PENDING, ERASED)]

    def audit(self, what: str, request: Request, **details: Any) -> None:
        """One line of the audit log: what, when, which request; never the player's id or hash."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "what": what,
            "request": request.id,
            "scope": "one source" if request.source else "every source",
            **details,
        }
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Suppressions:
    """The players whose events must not land, as the router checks them: the hashes of every
    request not lifted, reloaded when the requests' directory changes."""

    def __init__(self, settings: Settings, hasher: Hasher | None = None) -> None:
        self.store = RequestStore(settings, hasher)
        self._stamp: int | None = None
        self.any_source: frozenset[str] = frozenset()
        self.by_source: frozenset[tuple[str, str]] = frozenset()
        self.refresh()

    @property
    def hasher(self) -> Hasher:
        return self.store.hasher

    def refresh(self) -> bool:
        """Reload if the directory changed since the last look; whether it did."""
        try:
            stamp = self.store.dir.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = 0
        if stamp == self._stamp:
            return False
        requests = [r for r in self.store.all() if r.state in SUPPRESSING]
        self.any_source = frozenset(r.user_hash for r in requests if not r.source)
        self.by_source = frozenset((r.source, r.user_hash) for r in requests if r.source)
        self._stamp = stamp
        log.info("suppression list loaded: %d forget requests", len(self))
        return True

    def __len__(self) -> int:
        return len(self.any_source) + len(self.by_source)

    def matches(self, event: Any) -> bool:
        """Whether ``event`` (a parsed event) is a suppressed player's."""
        if not (self.any_source or self.by_source) or not isinstance(event, dict):
            return False
        user = event.get("user_id")
        if not isinstance(user, str) or not user:
            return False
        h = self.hasher.player(user)
        if h in self.any_source:
            return True
        source = event.get("source")
        return bool(self.by_source) and (source if isinstance(source, str) else "default", h) in self.by_source
