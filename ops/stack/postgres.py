"""PostgreSQL for the Iceberg catalog: set up once under QUESTLOG_HOME, started, health-checked.

The Iceberg JDBC catalog that Spark and Trino share keeps one row per table in this database
(`iceberg_tables`: the table's current metadata file; a commit is one conditional UPDATE of it).
The local stack runs the Debian build of PostgreSQL (`/usr/lib/postgresql/<major>/bin`, installed by
`make tools` when missing) as an unprivileged user (PostgreSQL refuses to run as root: as root, the
`postgres` user the Debian package creates), with:

* data under ``$QUESTLOG_HOME/postgres/data``, owned by that user;
* TCP on the loopback address of QUESTLOG_CATALOG_DB_URL only, no unix socket;
* its own credentials: the database user of QUESTLOG_CATALOG_DB_URL with a generated password kept
  in ``$QUESTLOG_HOME/postgres/password`` (0600; QUESTLOG_CATALOG_DB_PASSWORD_FILE), handed to
  initdb in a file and never on a command line; password authentication (SCRAM) for every connection;
* little memory (MEMORY below: 4 MiB of shared buffers, few connections and background workers),
  so that the whole process group stays under 100 MiB of RSS;
* the catalog's tables created as Iceberg's JDBC catalog creates them (schema version V1, which
  both Iceberg 1.12 in Spark and Trino 476's Iceberg connector read), once the server answers.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from ops.stack.process import Service, ServiceError
from ops.stack.secret_files import generated_secret, write_private
from questlog.settings import Settings

log = logging.getLogger(__name__)

MAJOR = 15  # the Debian package `postgresql-15`; compose's image is postgres:15 too
RUN_AS = "postgres"  # the user the Debian package creates, for when Questlog runs as root

# Server settings beside the defaults: loopback TCP only, small memory, durable commits.
MEMORY: dict[str, str] = {
    "shared_buffers": "4MB",
    "max_connections": "20",
    "work_mem": "1MB",
    "maintenance_work_mem": "8MB",
    "temp_buffers": "1MB",
    "wal_buffers": "512kB",
    "max_wal_size": "64MB",
    "min_wal_size": "32MB",
    "huge_pages": "off",
    "jit": "off",
    "max_worker_processes": "2",
    "max_parallel_workers": "0",
    "max_parallel_workers_per_gather": "0",
    "max_logical_replication_workers": "0",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "autovacuum_max_workers": "1",
}

# Iceberg's JDBC catalog tables (org.apache.iceberg.jdbc.JdbcUtil: V0_CREATE_CATALOG_SQL,
# CREATE_NAMESPACE_PROPERTIES_TABLE_SQL, and V1_UPDATE_CATALOG_SQL's `iceberg_type`), as its
# JdbcCatalog creates them with `jdbc.schema-version=V1`: made here so that Trino, which never
# creates them, answers "no such table" rather than an SQL error before the sink's first start.
CATALOG_TABLES = (
    "CREATE TABLE IF NOT EXISTS iceberg_tables(catalog_name VARCHAR(255) NOT NULL,"
    "table_namespace VARCHAR(255) NOT NULL,table_name VARCHAR(255) NOT NULL,"
    "metadata_location VARCHAR(1000),previous_metadata_location VARCHAR(1000),"
    "PRIMARY KEY (catalog_name, table_namespace, table_name))",
    "ALTER TABLE iceberg_tables ADD COLUMN IF NOT EXISTS iceberg_type VARCHAR(5)",
    "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties(catalog_name VARCHAR(255) NOT NULL,"
    "namespace VARCHAR(255) NOT NULL,property_key VARCHAR(255),property_value VARCHAR(1000),"
    "PRIMARY KEY (catalog_name, namespace, property_key))",
)


def bin_dir() -> Path:
    """The directory of PostgreSQL's server programs: the Debian layout's, MAJOR first."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: (Path(p).parent.parent.name != str(MAJOR), p)
    )
    if not found:
        raise ServiceError(
            f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres); `make run` installs it, "
            f"or: apt-get install postgresql-{MAJOR}"
        )
    return Path(found[0]).parent


def run_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: RUN_AS when this runs as root (PostgreSQL refuses root), else None
    (the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and there is no {RUN_AS!r} user to run it as; "
            f"apt-get install postgresql-{MAJOR} creates it (or run Questlog as an unprivileged user)"
        ) from None


def _reachable(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above ``path`` that ``user`` cannot enter, or None."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            mode = st.st_mode >> 6
        elif st.st_gid == user.pw_gid or st.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
            mode = st.st_mode >> 3
        else:
            mode = st.st_mode
        if not mode & 0o1:
            return parent
    return None


def ensure_password(settings: Settings) -> str:
    """The catalog database's password, generated into its 0600 file on first use."""
    if settings.catalog_db_password_env:
        return settings.catalog_db_password_env
    generated_secret(settings.catalog_db_password_path, private_dir=False)
    return settings.catalog_db_password()


def connect(settings: Settings, database: str | None = None, timeout: float = 3.0):
    """A pg8000 connection to the catalog database (or ``database``) with its credentials."""
    import pg8000.native

    return pg8000.native.Connection(
        settings.catalog_db_user,
        host=settings.catalog_db_host,
        port=settings.catalog_db_port,
        database=database or settings.catalog_db_name,
        password=settings.catalog_db_password(),
        timeout=timeout,
    )


def ensure_catalog_database(settings: Settings) -> None:
    """The catalog database and Iceberg's catalog tables in it (idempotent)."""
    conn = connect(settings, database="postgres")
    try:
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=settings.catalog_db_name):
            name = settings.catalog_db_name
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ServiceError(f"QUESTLOG_CATALOG_DB_URL: {name!r} is not a plain database name")
            conn.run(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    conn = connect(settings)
    try:
        for statement in CATALOG_TABLES:
            conn.run(statement)
    finally:
        conn.close()


def server_args(settings: Settings, data: Path) -> list[str]:
    options = {
        "listen_addresses": settings.catalog_db_host,
        "port": str(settings.catalog_db_port),
        "unix_socket_directories": "",
        "password_encryption": "scram-sha-256",
        **MEMORY,
    }
    args = [str(bin_dir() / "postgres"), "-D", str(data)]
    for key, value in options.items():
        args += ["-c", f"{key}={value}"]
    return args


def postgres(settings: Settings) -> Service:
    home = settings.home_path / "postgres"
    data = home / "data"
    user = run_user()
    ready = {"catalog": False}

    def setup() -> None:
        password = ensure_password(settings)
        home.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chmod(home, 0o755)  # only the data directory below is the server's own
            blocked = _reachable(data, user)
            if blocked is not None:
                raise ServiceError(
                    f"PostgreSQL runs as {user.pw_name!r} (it refuses root) and cannot enter {blocked}, "
                    f"above its data directory {data}: let it (chmod o+x {blocked}) or set QUESTLOG_HOME "
                    "to a directory it can reach"
                )
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)  # a half-made one of an interrupted first start
            data.mkdir(mode=0o700)
            pwfile = home / ".initdb-password"
            write_private(pwfile, password + "\n")
            try:
                if user is not None:
                    for path in (data, pwfile):
                        os.chown(path, user.pw_uid, user.pw_gid)
                result = subprocess.run(
                    [
                        str(bin_dir() / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        settings.catalog_db_user,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-instructions",
                    ],
                    capture_output=True,
                    text=True,
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                    cwd=home,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                raise ServiceError(f"initdb failed:\n{(result.stdout + result.stderr)[-3000:]}")
        # Password (SCRAM) authentication over TCP only: the only way in.
        hba = data / "pg_hba.conf"
        hba.write_text(
            "# written by ops/stack/postgres.py: password authentication over loopback TCP only\n"
            "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
        )
        if user is not None:
            os.chown(hba, user.pw_uid, user.pw_gid)
        ready["catalog"] = False

    def health() -> bool:
        if not ready["catalog"]:
            ensure_catalog_database(settings)
            ready["catalog"] = True
        conn = connect(settings, timeout=2.0)
        try:
            return bool(conn.run("SELECT 1 FROM iceberg_tables LIMIT 0") is not None)
        finally:
            conn.close()

    return Service(
        "postgres",
        server_args(settings, data),
        health,
        setup=setup,
        cwd=home,
        ports=[(settings.catalog_db_host, settings.catalog_db_port)],
        url=settings.catalog_db_url,
        user=user.pw_name if user else None,
    )
