"""Files that only this user may read: the stack's generated passwords, keys and configs that hold
them. Written 0600 from their first byte (a file written and chmod-ed after is readable by anyone in
between), never printed, never on a command line."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``, readable by this user only from its first byte; a file that was
    there already (with whatever mode) is replaced and made 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def generated_secret(path: Path, private_dir: bool = True) -> str:
    """The secret in ``path`` (its first line), generated there on first use (a random token, 0600;
    two first starts at once keep the first one's). ``private_dir``: its directory 0700 too (not for
    a directory another user must cross, as PostgreSQL's own user does its home)."""
    if private_dir:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().splitlines()[0]
