"""The deployed catalog as the running stages see it: reloaded when it changes."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from questlog.catalog import Catalog, CatalogError, load_catalog
from questlog.catalog.evolution import check_evolution

log = logging.getLogger(__name__)


class CatalogSource:
    """``get()`` returns the current catalog, looking at the file at most every ``interval_s``.

    A changed file that is unreadable, or incompatible with the catalog in use, is refused: the
    stage keeps running on what it has and logs why."""

    def __init__(self, path: str | Path, interval_s: float = 2.0) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._catalog = load_catalog(self.path)
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self) -> Catalog:
        """The current catalog, looking at the file now."""
        return self.get(force=True)

    def get(self, force: bool = False) -> Catalog:
        now = time.monotonic()
        if not force and now - self._checked < self.interval_s:
            return self._catalog
        with self._lock:
            self._checked = now
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                return self._catalog
            self._stamp = stamp
            try:
                new = load_catalog(self.path)
            except CatalogError as exc:
                log.error("catalog change refused, keeping the current one: %s", exc)
                return self._catalog
            problems = check_evolution(self._catalog, new)
            if problems:
                log.error("catalog change refused, keeping the current one: %s", "; ".join(problems))
                return self._catalog
            if new == self._catalog:  # touched, or rewritten alike: nothing to do, keep the compiled one
                return self._catalog
            log.info("catalog reloaded: %s", ", ".join(f"{et.name} v{et.version}" for et in new))
            self._catalog = new
            return new
