"""The deployed catalog as the running stages see it: reloaded when it changes, and never replaced
by one that is malformed or incompatible with the last catalog a stage accepted.

Every stage (collector, router, sink) remembers the last catalog it accepted in
``$QUESTLOG_HOME/catalog/last-good.json``, so that a stage starting after a bad file was written
(by hand, bypassing `questlog catalog deploy`) refuses it as the running stages did, instead of
adopting it or crash-looping on it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from questlog.catalog import Catalog, CatalogError, catalog_to_json, load_catalog
from questlog.catalog.evolution import check_evolution

log = logging.getLogger(__name__)


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file a stage reloads when it changes, or None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def last_good_path(home: str | Path) -> Path:
    """Where the stages of QUESTLOG_HOME ``home`` remember the last catalog they accepted."""
    return Path(home) / "catalog" / "last-good.json"


def load_last_good(home: str | Path) -> Catalog | None:
    """The last catalog accepted in ``home``, or None if there is none (or it is unreadable)."""
    path = last_good_path(home)
    if not path.exists():
        return None
    try:
        return load_catalog(path)
    except CatalogError as exc:
        log.warning("ignoring the remembered catalog: %s", exc)
        return None


def _remember(home: str | Path, catalog: Catalog) -> None:
    """Remember ``catalog`` as the last good one, unless another stage of ``home`` already
    remembers a later one (which ``catalog`` could not replace): the memory never goes back."""
    path = last_good_path(home)
    remembered = load_last_good(home)
    if remembered is not None and (remembered == catalog or check_evolution(remembered, catalog)):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(catalog_to_json(catalog))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:  # the stage runs on without the memory rather than stop
        log.warning("could not remember the accepted catalog in %s: %s", path, exc)


class CatalogSource:
    """``get()`` returns the current catalog, looking at the file at most every ``interval_s``.

    A file that is unreadable, or incompatible with the catalog in use (at start: the last one
    accepted in ``home``, default QUESTLOG_HOME), is refused: the stage keeps running on what it
    has and logs why. Only a first start, with nothing accepted before, fails on a bad file."""

    def __init__(self, path: str | Path, interval_s: float = 2.0, home: str | Path | None = None) -> None:
        if home is None:
            from questlog.settings import Settings

            home = Settings.from_env().home
        self.path = Path(path)
        self.home = Path(home)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._catalog = self._first()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        return file_stamp(self.path)

    def _first(self) -> Catalog:
        last = load_last_good(self.home)
        try:
            deployed = load_catalog(self.path)
        except CatalogError as exc:
            if last is None:
                raise CatalogError(
                    f"{exc} (and no catalog was accepted before in {self.home}: "
                    "fix the file, or deploy with `questlog catalog deploy`)"
                ) from None
            log.error("catalog refused, running on the last one accepted (%s): %s", last_good_path(self.home), exc)
            return last
        if last is not None:
            problems = check_evolution(last, deployed)
            if problems:
                log.error(
                    "catalog %s refused, running on the last one accepted (%s): %s",
                    self.path,
                    last_good_path(self.home),
                    "; ".join(problems),
                )
                return last
            if deployed == last:
                return last
        _remember(self.home, deployed)
        return deployed

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
            _remember(self.home, new)
            self._catalog = new
            return new
