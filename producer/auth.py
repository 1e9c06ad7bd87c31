"""Write keys: which source a request speaks for (QUESTLOG_WRITE_KEYS).

The key file is TOML, one ``"<write key>" = "<source>"`` line per key (several keys may name one
source, so a key can be rotated)::

    # compose/collector/write-keys.toml
    "demo-key-7f3a9c41e2b8" = "demo"

With no file set, keys are off and every event's source is ``default``. The file is read at
start (a malformed one stops the collector with the reason) and again within a few seconds of a
change (a malformed change is refused and logged; the keys in use stay).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

from questlog.catalog.watch import file_stamp

log = logging.getLogger(__name__)

SOURCE_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
_SOURCE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY = re.compile(r"[\x21-\x7e]{8,256}")  # printable ASCII, no spaces: fits a header and a URL
MAX_KEY_CHARS = 256


class KeyFileError(ValueError):
    """The key file is unreadable or malformed; the message names the file and the problem."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_write_keys(text: str, source: str) -> dict[bytes, str]:
    """sha256(key) -> source name, from the key file's text (``source`` names it in errors)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"{source}: not valid TOML: {exc}") from None
    keys: dict[bytes, str] = {}
    for n, (key, name) in enumerate(doc.items(), 1):
        if not _KEY.fullmatch(key):
            raise KeyFileError(f"{source}: key #{n} must be 8 to 256 printable ASCII characters without spaces")
        if not isinstance(name, str) or not _SOURCE.fullmatch(name):
            raise KeyFileError(f"{source}: the source of key #{n} must be {SOURCE_RULE}, got {name!r}")
        keys[_digest(key)] = name
    if not keys:
        raise KeyFileError(f"{source}: no keys; unset QUESTLOG_WRITE_KEYS to turn write keys off")
    return keys


def bearer_token(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    if not authorization or len(authorization) > MAX_KEY_CHARS + 16:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class WriteKeys:
    """The key file as the running collector sees it; ``source_for(key)`` is None for a wrong key."""

    def __init__(self, path: str | Path, interval_s: float = 2.0) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._keys = self._load()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        return file_stamp(self.path)

    def _load(self) -> Mapping[bytes, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read the write keys QUESTLOG_WRITE_KEYS={self.path}: {exc}") from None
        return parse_write_keys(text, str(self.path))

    def _current(self) -> Mapping[bytes, str]:
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return self._keys
        with self._lock:
            self._checked = now
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._keys = self._load()
                    log.info("write keys reloaded: %d keys", len(self._keys))
                except KeyFileError as exc:
                    log.error("write keys change refused, keeping the current ones: %s", exc)
        return self._keys

    def source_for(self, key: str | None) -> str | None:
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        return self._current().get(_digest(key))
