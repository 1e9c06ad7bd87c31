"""`questlog status`: the pipeline at a glance, in well under 2 s.

Every probe runs at once, each in a thread of its own with a tight timeout, and whatever has not
answered by the deadline is reported as such instead of holding the answer up:

- services: the pid file of each service (`$QUESTLOG_HOME/run/<name>.pid`), its uptime, the
  restarts the Watchdog of `questlog run` recorded (`run/watchdog.json`), and the verdict of a
  health check like the one the runner waits on;
- the router's lag on the raw topic (its consumer group's committed offsets against the end of the
  topic) and the sink's on each typed topic (the offsets of the last batch Spark committed, read
  from its checkpoint over WebHDFS), in records and in seconds: the age of the oldest record not
  yet consumed;
- per table: freshness (age of the newest landed event), rows landed today (Trino), files and
  bytes on HDFS (WebHDFS content summary);
- dead letters of the last hour by reason code (their `reason_code` column,
  `questlog.deadletters.REASON_CODES`).

Services and lags are asked anew every time. The figures that need Trino or the HDFS client
(freshness and rows today, dead letters, HDFS usage, and the sink's offsets in its checkpoint,
from which its lag is counted) can take longer than the deadline on a busy
or cold machine, so each answer is kept in `$QUESTLOG_HOME/run/status-answers.json` with the time
it was had: a figure that misses the deadline is shown from there with its age ("as of 40s ago"),
and a detached `python -m ops.status --refresh` (one at a time) asks again with a long deadline,
so the next call has it fresh. `questlog run` starts one as soon as the pipeline is up, so even the
first `questlog status` has an answer for every row. `Status.ages` says how old each answer is.

Healthy means every service is up and passes its check; `questlog status` exits 1 otherwise.
Importing this module touches nothing: the heavy clients are imported inside the probes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from ops.stack import specs
from questlog.checkpoint import sink_progress
from questlog.deadletters import reason_code
from questlog.settings import Settings

SERVICES = specs.NAMES  # every service of ops/stack/specs.py, in its order
DEADLINE_S = 1.5  # every probe's answer is in by then, or it is reported as timed out
PROBE_TIMEOUT_S = 1.2  # each client's own timeout, below the deadline
WATCHDOG_STATE = "watchdog.json"  # under $QUESTLOG_HOME/run/, written by ops.stack.runner.Watchdog
FRESHNESS_DAYS = 7  # freshness looks at the last week's partitions; older is reported as such


def set_deadline(seconds: float) -> None:
    """Wait up to ``seconds`` for the probes (each client's own timeout a little less): the
    default keeps `questlog status` under 2 s; a script on a busy machine may give Trino longer."""
    global DEADLINE_S, PROBE_TIMEOUT_S
    DEADLINE_S, PROBE_TIMEOUT_S = seconds, seconds * 0.8


# Results ----------------------------------------------------------------------------------------


@dataclass
class ServiceStatus:
    name: str
    up: bool  # its process runs
    healthy: bool  # and its check passes
    verdict: str
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int | None = None  # as counted by the running `questlog run`; None without one


@dataclass
class Lag:
    records: int | None
    seconds: float | None  # age of the oldest record not consumed yet; 0 when caught up


@dataclass
class TableStatus:
    name: str
    topic: str
    freshness_s: float | None = None  # age of the newest landed event (received_at, dead letters: failed_at)
    newest: str | None = None
    rows_today: int | None = None
    files: int | None = None
    bytes: int | None = None
    note: str | None = None  # e.g. "no table yet"; why its freshness is unknown otherwise


@dataclass
class Status:
    healthy: bool
    took_s: float
    services: list[ServiceStatus]
    router_lag: Lag | None
    sink_lag: dict[str, Lag]
    tables: list[TableStatus]
    dead_letters_last_hour: dict[str, int] | None
    errors: dict[str, str] = field(default_factory=dict)  # probe -> why it has no answer
    # probe -> the age in seconds of the answer shown: 0 when asked now, more when it came from
    # the answers kept by an earlier call or refresh (CACHED_PROBES only)
    ages: dict[str, float] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # kept probes never answered yet (a refresh runs)
    # forget requests not done yet (questlog forget): id, state, since when, what they wait for;
    # never the player's id
    forget_requests: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Running probes side by side ----------------------------------------------------------------


class Probes:
    """Functions run in daemon threads at once; ``collect`` returns what answered by the deadline
    (a probe still running then never holds the process up: its thread is a daemon)."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.timed_out: set[str] = set()

    def start(self, name: str, fn: Callable[[], Any]) -> None:
        def body() -> None:
            try:
                self.results[name] = fn()
            except Exception as exc:  # reported per probe; one failing probe never hides the others
                self.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                    self.timed_out.add(name)  # slower than its client's timeout, not failing

        thread = threading.Thread(target=body, name=f"probe-{name}", daemon=True)
        self.threads[name] = thread
        thread.start()

    def collect(self, deadline: float) -> None:
        for name, thread in self.threads.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.errors[name] = f"no answer within {DEADLINE_S:.1f}s"


def _http_json(url: str, timeout: float = PROBE_TIMEOUT_S, context=None) -> Any:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return json.loads(response.read())


def _trino_tls(settings: Settings):
    """The TLS context of an https Trino (its CA: QUESTLOG_TRINO_CA or the local stack's), or None."""
    if settings.trino_scheme != "https":
        return None
    import ssl

    return ssl.create_default_context(cafile=settings.trino_ca_file)


def _trino_headers(settings: Settings) -> dict[str, str]:
    """Who asks: QUESTLOG_TRINO_USER, with its password over https (Trino's password authentication)."""
    headers = {"X-Trino-User": settings.trino_user}
    password = settings.trino_password() if settings.trino_scheme == "https" else None
    if password is not None:
        import base64

        token = base64.b64encode(f"{settings.trino_user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


# Service checks: the same questions the runner asks before it calls a service up.


def _admin(settings: Settings):
    """An admin client that logs nothing: what fails is the verdict, not lines on stderr."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({**settings.kafka_client(), "log_level": 0})


def _check_kafka(settings: Settings) -> tuple[bool, str]:
    topics = _admin(settings).list_topics(timeout=PROBE_TIMEOUT_S).topics
    return True, f"ok, {len(topics)} topics"


def _namenode_beans(settings: Settings) -> tuple[dict, dict]:
    state = _http_json(f"{settings.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState")
    info = _http_json(f"{settings.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo")
    return state["beans"][0], info["beans"][0]


def _check_postgres(settings: Settings) -> tuple[bool, str]:
    """Up when it takes the catalog's credentials; healthy when the Iceberg catalog's table is
    there: the number of tables the catalog names."""
    from ops.stack.postgres import connect

    try:
        settings.catalog_db_password()
    except RuntimeError:  # a stack started elsewhere: its port answers, its password is not here
        with socket.create_connection((settings.catalog_db_host, settings.catalog_db_port), PROBE_TIMEOUT_S):
            return True, "answers (no password here to log in: QUESTLOG_CATALOG_DB_PASSWORD_FILE)"
    conn = connect(settings, timeout=PROBE_TIMEOUT_S)
    try:
        tables = conn.run("SELECT count(*) FROM iceberg_tables")[0][0]
    finally:
        conn.close()
    return True, f"ok, {tables} Iceberg tables"


def _check_trino(settings: Settings) -> tuple[bool, str]:
    starting = _http_json(f"{settings.trino_url}/v1/info", context=_trino_tls(settings)).get("starting")
    return (False, "starting") if starting else (True, "ok")


def _check_collector(settings: Settings) -> tuple[bool, str]:
    try:
        state = _http_json(f"{settings.collector_url}/healthz").get("status")
    except urllib.error.HTTPError as exc:  # it answers, so it is up: 503 while Kafka is away
        return False, f"/healthz answered {exc.code}"
    return state == "ok", "ok" if state == "ok" else f"healthz says {state!r}"


def _metrics_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        return response.read().decode(errors="replace")


def _check_router(settings: Settings) -> tuple[bool, str]:
    # Up when its web server answers (a killed worker's consumer group lingers for a while),
    # healthy when its consumer group is stable and holds the raw topic, as the runner checks.
    _metrics_text(settings.router_metrics_url)
    admin = _admin(settings)
    group = admin.describe_consumer_groups([settings.router_id], request_timeout=PROBE_TIMEOUT_S)[
        settings.router_id
    ].result(timeout=PROBE_TIMEOUT_S)
    owned = [tp for m in group.members for tp in m.assignment.topic_partitions if tp.topic == settings.raw_topic]
    if group.state.name != "STABLE" or not owned:
        return (
            False,
            f"consumer group {group.state.name.lower()}, {len(owned)} partitions of {settings.raw_topic} owned",
        )
    return True, f"ok, {len(group.members)} worker(s), {len(owned)} partition(s)"


def _check_compactor(settings: Settings) -> tuple[bool, str]:
    """Healthy when its loop runs: it has no port, only the file it writes once it loops (a
    compactor on another machine is not visible from here, like its pid)."""
    ready = settings.home_path / "run" / "compactor.ready"
    if not ready.exists():
        raise RuntimeError(f"no {ready.name} in {ready.parent}: its loop does not run here")
    return True, f"ok, every {settings.compact_interval_s:.0f} s"


def _check_sink(settings: Settings) -> tuple[bool, str]:
    """Up when its GET /metrics answers; healthy when it says a streaming query runs
    (questlog_sink_queries_active), which works as well for a sink on another machine. A local
    sink whose metrics port is taken still counts by the file it writes once its query runs."""
    ready = settings.home_path / "run" / "sink.ready"
    try:
        text = _metrics_text(settings.sink_metrics_url)
    except Exception:
        if ready.exists():
            return True, f"ok, query running (sink.ready; no answer at {settings.sink_metrics_url})"
        raise
    active = re.search(r"^questlog_sink_queries_active\s+([0-9.eE+-]+)", text, re.M)
    if active is None:
        return False, "serves /metrics without questlog_sink_queries_active"
    if float(active.group(1)) < 1:
        return False, "no streaming query running"
    return True, "ok, query running"


def _restarts(settings: Settings) -> dict[str, int] | None:
    try:
        state = json.loads((settings.home_path / "run" / WATCHDOG_STATE).read_text())
    except (OSError, ValueError):
        return None
    return {k: int(v) for k, v in state.get("restarts", {}).items()}


# Lag ----------------------------------------------------------------------------------------


def _sink_offsets(settings: Settings) -> dict[str, dict[int, int]]:
    """{topic: {partition: next offset to read}} of the last batch the sink committed
    (questlog.checkpoint.sink_progress)."""
    return sink_progress(settings, PROBE_TIMEOUT_S)[1]


def kafka_lags(
    settings: Settings, sink_offsets: dict[str, dict[int, int]] | None, topics: list[str]
) -> tuple[Lag, dict[str, Lag]]:
    """The router's lag on the raw topic and the sink's on each of ``topics`` (given its
    offsets), in records and seconds (the age of the first record not consumed yet)."""
    from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

    consumer = Consumer(
        {
            **settings.kafka_client(),
            "group.id": settings.router_id,
            "enable.auto.commit": False,
            "log_level": 0,
            "socket.timeout.ms": 2000,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        meta = consumer.list_topics(timeout=PROBE_TIMEOUT_S).topics
        raw = [
            TopicPartition(settings.raw_topic, p)
            for p in (meta[settings.raw_topic].partitions if settings.raw_topic in meta else ())
        ]
        committed = consumer.committed(raw, timeout=PROBE_TIMEOUT_S) if raw else []
        start: dict[tuple[str, int], int] = {}  # the next offset each consumer reads
        ends: dict[tuple[str, int], int] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=PROBE_TIMEOUT_S)
            start[(tp.topic, tp.partition)] = (
                low if tp.offset == OFFSET_INVALID or tp.offset < 0 else max(tp.offset, low)
            )
            ends[(tp.topic, tp.partition)] = high
        for topic in topics if sink_offsets is not None else ():
            for p in meta[topic].partitions if topic in meta else ():
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=PROBE_TIMEOUT_S)
                start[(topic, p)] = max((sink_offsets or {}).get(topic, {}).get(p, low), low)
                ends[(topic, p)] = high
        behind = [TopicPartition(t, p, start[(t, p)]) for (t, p) in start if ends[(t, p)] > start[(t, p)]]
        oldest: dict[str, float] = {}  # topic -> timestamp (s) of its oldest unconsumed record
        if behind:
            consumer.assign(behind)
            waiting = {(tp.topic, tp.partition) for tp in behind}
            deadline = time.monotonic() + PROBE_TIMEOUT_S * 0.6
            while waiting and time.monotonic() < deadline:
                msg = consumer.poll(0.1)
                if msg is None or msg.error() or (msg.topic(), msg.partition()) not in waiting:
                    continue
                topic = str(msg.topic())
                waiting.discard((topic, msg.partition()))
                ts = msg.timestamp()[1] / 1000.0
                oldest[topic] = min(oldest.get(topic, ts), ts)
    finally:
        consumer.close()
    now = time.time()

    def lag(topic: str) -> Lag:
        records = sum(ends[k] - start[k] for k in start if k[0] == topic)
        seconds = 0.0 if records == 0 else (round(max(0.0, now - oldest[topic]), 1) if topic in oldest else None)
        return Lag(records, seconds)

    return lag(settings.raw_topic), {t: lag(t) for t in topics if sink_offsets is not None}


# Tables -------------------------------------------------------------------------------------


def _hdfs(settings: Settings):
    from hdfs import InsecureClient

    return InsecureClient(settings.webhdfs_url, user="questlog", timeout=PROBE_TIMEOUT_S)


def _hdfs_usage(settings: Settings, names: list[str]) -> dict[str, tuple[int, int]]:
    from hdfs.util import HdfsError

    client = _hdfs(settings)
    out = {}
    for name in names:
        try:
            # the Iceberg table's location (spark_sink.tables.table_location): data and metadata files
            summary = client.content(f"{settings.warehouse_dir.rstrip('/')}/{settings.trino_schema}/{name}")
        except HdfsError as exc:
            if "does not exist" not in str(exc):
                raise
            summary = {"fileCount": 0, "length": 0}  # a table with nothing landed yet
        out[name] = (summary["fileCount"], summary["length"])
    return out


class TrinoError(RuntimeError):
    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name  # Trino's errorName, e.g. TABLE_NOT_FOUND


def _trino(settings: Settings, statement: str, timeout: float | None = None) -> list[list]:
    """Rows of ``statement``, asked over Trino's REST protocol with the standard library: the
    `trino` client pulls in `requests`, whose import alone can take a second on a loaded machine."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        f"{settings.trino_url}/v1/statement",
        data=statement.encode(),
        method="POST",
        headers={
            **_trino_headers(settings),
            "X-Trino-Catalog": settings.trino_catalog,
            "X-Trino-Schema": settings.trino_schema,
        },
    )
    context = _trino_tls(settings)
    rows: list[list] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"Trino did not finish within {timeout:.1f}s")
        with urllib.request.urlopen(request, timeout=left, context=context) as response:
            answer = json.loads(response.read())
        if answer.get("error"):
            raise TrinoError(answer["error"].get("message", "query failed"), answer["error"].get("errorName"))
        rows += answer.get("data") or []
        if not answer.get("nextUri"):
            return rows
        request = urllib.request.Request(answer["nextUri"], headers=_trino_headers(settings))


def _webhdfs(settings: Settings, path: str, op: str) -> bytes:
    """One WebHDFS GET with the standard library (OPEN follows the redirect to the DataNode)."""
    url = f"{settings.webhdfs_url}/webhdfs/v1{path}?op={op}&user.name=questlog"
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        return response.read()


NO_TABLE_YET = "no table yet"


def _freshness(settings: Settings, table, now: dt.datetime) -> tuple[str | None, int, str | None]:
    """(newest landed timestamp, rows landed today, note) of one table: one query per table, all
    at once, so that a table not created yet (a type just added to the catalog, its table made by
    the sink with its first rows) costs only its own figures: no rows, noted as NO_TABLE_YET."""
    today = now.date().isoformat()
    since = (now.date() - dt.timedelta(days=FRESHNESS_DAYS)).isoformat()
    try:
        rows = _trino(
            settings,
            f"SELECT CAST(max({table.time_column}) AS varchar), count_if(dt = '{today}') "
            f"FROM {table.name} WHERE dt >= '{since}'",
        )
    except TrinoError as exc:
        if exc.name == "TABLE_NOT_FOUND":
            return None, 0, NO_TABLE_YET
        raise
    newest, count = rows[0]
    return newest, int(count or 0), None


def _dead_letters(settings: Settings, table: str, now: dt.datetime) -> dict[str, int]:
    """The last hour's dead letters by reason code (their `reason_code` column; a dead letter
    written before the column existed is coded from its text, as the router would)."""
    cutoff = now - dt.timedelta(hours=1)
    where = (
        f"WHERE dt >= '{cutoff.date().isoformat()}' "
        f"AND failed_at >= TIMESTAMP '{cutoff.strftime('%Y-%m-%d %H:%M:%S')}' "
    )
    rows = _trino(
        settings,
        "SELECT reason_code, CASE WHEN reason_code IS NULL THEN substr(reason, 1, 300) END, count(*) "
        f"FROM {table} {where}GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 2000",
    )
    codes: dict[str, int] = {}
    for code, reason, count in rows:
        key = code or reason_code(reason)
        codes[key] = codes.get(key, 0) + int(count)
    return dict(sorted(codes.items(), key=lambda kv: -kv[1]))


def _age(text: str | None, now: dt.datetime) -> float | None:
    if not text:
        return None
    newest = dt.datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=dt.UTC)
    return round(max(0.0, (now - newest).total_seconds()), 1)


def _tables(settings: Settings):
    from questlog.catalog import CatalogError, load_catalog
    from questlog.catalog.watch import load_last_good

    try:
        catalog = load_catalog(settings.catalog)
    except (CatalogError, OSError, ValueError):  # a malformed deployed file: the stages run on the last good one
        last = load_last_good(settings.home)
        if last is None:
            raise
        catalog = last
    return catalog.tables(settings.raw_topic, settings.dlq_topic)


# Answers kept between calls ------------------------------------------------------------------

ANSWERS = "status-answers.json"  # under $QUESTLOG_HOME/run/
REFRESH_LOCK = "status-refresh.lock"
REFRESH_DEADLINE_S = 60.0


def cached_probe(name: str) -> bool:
    """The probes whose answers are kept: those that need Trino or the HDFS client (the sink's
    offsets come from its checkpoint through WebHDFS)."""
    return name.startswith("freshness ") or name in ("dead letters", "hdfs usage", "sink offsets")


def load_answers(settings: Settings) -> dict[str, dict[str, Any]]:
    try:
        kept = json.loads((settings.home_path / "run" / ANSWERS).read_text())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def save_answers(settings: Settings, fresh: dict[str, Any], at: float) -> None:
    """Keep ``fresh`` answers (probe -> value) beside the others; never fails the caller."""
    run = settings.home_path / "run"
    try:
        kept = load_answers(settings)
        kept.update({name: {"at": at, "value": value} for name, value in fresh.items()})
        tmp = run / f".{ANSWERS}.{os.getpid()}"
        tmp.write_text(json.dumps(kept, default=list))
        os.replace(tmp, run / ANSWERS)
    except OSError:
        pass


def _from_json(name: str, value: Any) -> Any:
    """A kept answer as the probe returns it (JSON has lists where the probes have tuples)."""
    if name.startswith("freshness "):
        return tuple(value)
    if name == "hdfs usage":
        return {table: tuple(pair) for table, pair in value.items()}
    if name == "sink offsets":  # JSON's keys are strings; the partitions are numbers
        return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in value.items()}
    return value


def spawn_refresh(settings: Settings) -> None:
    """Ask every figure again in a detached process with a long deadline, keeping the answers for
    the next call; at most one such process per QUESTLOG_HOME (a lock file)."""
    import subprocess
    import sys

    try:
        (settings.home_path / "run").mkdir(parents=True, exist_ok=True)
        subprocess.Popen(
            [sys.executable, "-m", "ops.status", "--refresh"],
            env={**os.environ, **settings.to_env()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        pass


def refresh(settings: Settings) -> bool:
    """Every probe with REFRESH_DEADLINE_S, its figures kept; False if another refresh runs."""
    import fcntl

    run = settings.home_path / "run"
    run.mkdir(parents=True, exist_ok=True)
    with open(run / REFRESH_LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        set_deadline(REFRESH_DEADLINE_S)
        collect(settings, refresh_after=False)
    return True


# The whole answer ---------------------------------------------------------------------------


def collect(settings: Settings, meanwhile: Callable[[], Any] | None = None, refresh_after: bool = True) -> Status:
    """Ask everything at once; return what answered by the deadline, and for the figures that did
    not, their last kept answer with its age (then, with ``refresh_after``, a detached refresh
    asks again for the next call). ``meanwhile`` runs while the probes wait for their answers (the
    CLI imports its renderer then).

    A service's verdict comes from probing it where the settings point, so a remote cluster gets
    one too: up when it answers (or, for a service the local runner started, while its process
    runs), healthy when its check passes. Pid, uptime and restarts only where a local `questlog
    run` started it (its pid file in $QUESTLOG_HOME/run)."""
    from ops.stack.process import Supervisor, uptime_s

    started = time.monotonic()
    deadline = started + DEADLINE_S
    now = dt.datetime.now(dt.UTC)
    probes = Probes()
    # First what needs no catalog, so that the network waits begin at once.
    for probe in dict.fromkeys(spec.probe for spec in specs.SPECS if spec.probe):  # the HDFS daemons share one
        probes.start(probe, partial(PROBES[probe], settings))
    probes.start("sink offsets", lambda: _sink_offsets(settings))
    tables = _tables(settings)
    typed_topics = [t.topic for t in tables]
    dead_table = next(t.name for t in tables if t.topic == settings.dlq_topic)
    for t in tables:
        probes.start(f"freshness {t.name}", partial(_freshness, settings, t, now))
    probes.start("dead letters", lambda: _dead_letters(settings, dead_table, now))
    probes.start("hdfs usage", lambda: _hdfs_usage(settings, [t.name for t in tables]))

    # The lags need the sink's offsets first: the Kafka side waits for them, within the deadline,
    # and takes the kept ones (their age shown on the sink's rows) when WebHDFS is slower than that.
    kept_offsets = load_answers(settings).get("sink offsets")
    lag_from_kept: list[bool] = []

    def lags():
        probes.threads["sink offsets"].join(max(0.0, deadline - time.monotonic() - PROBE_TIMEOUT_S * 0.7))
        offsets = probes.results.get("sink offsets")
        if offsets is None and kept_offsets is not None:
            offsets = _from_json("sink offsets", kept_offsets["value"])
            lag_from_kept.append(True)
        return kafka_lags(settings, offsets, typed_topics)

    probes.start("lag", lags)
    supervisor = Supervisor(settings.home_path)
    pids = {name: supervisor.running_pid(name) for name in SERVICES}
    local_run = any(pids.values())  # a `questlog run` of this QUESTLOG_HOME is running
    # The compactor has no port: only a local run (its pid, its ready file) shows it; pointed at
    # services started elsewhere, status has nothing to ask it and leaves it out.
    shown = [
        name
        for name in SERVICES
        if name != "compactor" or pids[name] is not None or (settings.home_path / "run" / "compactor.ready").exists()
    ]
    if "compactor" in shown:
        probes.start("compactor", lambda: _check_compactor(settings))
    restarts = _restarts(settings) if local_run else None
    if meanwhile is not None:
        meanwhile()
    probes.collect(deadline)
    results, errors = dict(probes.results), dict(probes.errors)
    asked_at = time.time()
    asked_now = {name: value for name, value in results.items() if cached_probe(name)}
    save_answers(settings, asked_now, asked_at)
    ages = {name: 0.0 for name in asked_now}
    pending = []
    kept = load_answers(settings)
    for name in [n for n in probes.threads if cached_probe(n) and n not in asked_now]:
        # still asking, or its client gave up waiting: no error, only slower than the deadline
        late = probes.threads[name].is_alive() or name in probes.timed_out
        answer = kept.get(name)
        if answer is None:
            if late:
                pending.append(name)
            continue
        results[name] = _from_json(name, answer["value"])
        ages[name] = round(max(0.0, asked_at - float(answer["at"])), 1)
        if late:
            errors.pop(name, None)
    if lag_from_kept and kept_offsets is not None:  # the offsets came after the lags were counted
        ages["sink offsets"] = round(max(0.0, asked_at - float(kept_offsets["at"])), 1)
    if refresh_after and len(ages) + len(pending) > len(asked_now):  # something was not asked anew
        spawn_refresh(settings)

    out: list[ServiceStatus] = []
    for name in shown:
        pid = pids[name]
        probe = specs.BY_NAME[name].probe or name
        answered = probe not in errors
        uptime = uptime_s(pid) if pid else None
        svc = ServiceStatus(
            name,
            up=pid is not None or answered,
            healthy=False,
            verdict="down",
            pid=pid,
            uptime_s=round(uptime, 1) if uptime is not None else None,
            restarts=None if restarts is None else restarts.get(name, 0),
        )
        if not answered:
            svc.verdict = (
                f"unhealthy: {errors[probe]}"
                if pid is not None
                else "down (not running)"
                if _started_here(supervisor, name)
                else f"down: {errors[probe]}"
            )
        elif name == "namenode":
            state = results[probe][0]["FSState"]
            svc.healthy = state in ("Operational", "safeMode")
            svc.verdict = "ok" if state == "Operational" else state
        elif name == "datanode":
            state, info = results[probe]
            live, safemode = state["NumLiveDataNodes"], info["Safemode"]
            svc.up = pid is not None or live >= 1  # the NameNode is the one that answered
            svc.healthy = live >= 1 and safemode == ""
            svc.verdict = f"ok, {live} live" if svc.healthy else f"{live} live datanodes; {safemode or 'safe mode'}"
        else:
            svc.healthy, svc.verdict = results[probe]
        out.append(svc)

    router_lag, sink_lag = results.get("lag", (None, {}))
    usage = results.get("hdfs usage", {})
    table_rows = []
    for t in tables:
        row = TableStatus(t.name, t.topic)
        fresh = results.get(f"freshness {t.name}")
        if fresh is not None:
            row.newest, row.rows_today, row.note = fresh
            row.freshness_s = _age(row.newest, dt.datetime.now(dt.UTC))
        if t.name in usage:
            row.files, row.bytes = usage[t.name]
        table_rows.append(row)
    return Status(
        forget_requests=_forget_requests(settings),
        healthy=all(s.healthy for s in out),
        took_s=round(time.monotonic() - started, 3),
        services=out,
        router_lag=router_lag,
        sink_lag=sink_lag,
        tables=table_rows,
        dead_letters_last_hour=results.get("dead letters"),
        errors={k: v for k, v in errors.items() if k not in SERVICES and k != "namenode" and k not in pending},
        ages=ages,
        pending=pending,
    )


def _forget_requests(settings: Settings) -> list[dict[str, Any]]:
    """The open forget requests, from their files (no network)."""
    from questlog.privacy import RequestStore

    out = []
    for r in RequestStore(settings).open():
        out.append(
            {
                "id": r.id,
                "state": r.state,
                "requested_at": r.requested_at,
                "erased_at": r.erased_at,
                "note": r.note,
                "leaves_hdfs_after": None if r.erased_at is None else r.erased_at + settings.forget_grace_s,
            }
        )
    return out


# Each service's probe where the settings point (ops/stack/specs.py names it): up when it
# answers, and its verdict. The NameNode's answers the DataNode's row too.
PROBES: dict[str, Callable[[Settings], Any]] = {
    "kafka": _check_kafka,
    "namenode": _namenode_beans,
    "postgres": _check_postgres,
    "trino": _check_trino,
    "collector": _check_collector,
    "router": _check_router,
    "sink": _check_sink,
}


def _started_here(supervisor, name: str) -> bool:
    """Whether a local `questlog run` started ``name`` (its pid file is there, its process gone)."""
    return supervisor.pidfile(name).exists()


# Rendering ----------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds / 86400:.1f}d"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _lag_text(lag: Lag | None) -> str:
    if lag is None:
        return "unknown"
    records = "?" if lag.records is None else f"{lag.records:,} records"
    return f"{records}, oldest {duration(lag.seconds)}" if lag.records else "caught up"


def table(status: Status):
    """One rich Table: services, lags, tables, dead letters, and what did not answer."""
    from rich.table import Table

    out = Table(
        title=f"Questlog: {'healthy' if status.healthy else 'UNHEALTHY'} (answered in {status.took_s:.2f}s)",
        title_justify="left",
        expand=False,
    )
    for column in ("", "state", "detail"):
        out.add_column(column, overflow="fold")
    for svc in status.services:
        state = "[green]up[/]" if svc.healthy else ("[yellow]up, unhealthy[/]" if svc.up else "[red]down[/]")
        detail = svc.verdict
        if svc.up and svc.uptime_s is not None:  # known only for what a local `questlog run` started
            detail += f"; up {duration(svc.uptime_s)}"
        if svc.restarts is not None:
            detail += f"; {svc.restarts} restarts"
        out.add_row(svc.name, state, detail)
    out.add_section()
    out.add_row("router lag", "", f"{_lag_text(status.router_lag)} on events")
    for topic, lag in status.sink_lag.items():
        out.add_row("sink lag", "", f"{_lag_text(lag)} on {topic}{_as_of(status, 'sink offsets')}")
    out.add_section()
    for t in status.tables:
        fresh = (
            t.note
            if t.note
            else "unknown"
            if t.rows_today is None
            else "no rows in the last week"
            if t.newest is None
            else f"newest {duration(t.freshness_s)} ago"
        )
        today = "?" if t.rows_today is None else f"{t.rows_today:,}"
        files = "?" if t.files is None else f"{t.files:,}"
        detail = f"{today} rows today{_as_of(status, f'freshness {t.name}')}; {files} files, {size(t.bytes)} on HDFS"
        out.add_row(t.name, fresh, detail + _as_of(status, "hdfs usage"))
    out.add_section()
    dead = status.dead_letters_last_hour
    when = "last hour" + _as_of(status, "dead letters")
    if dead is None:
        out.add_row("dead letters", when, "unknown")
    elif not dead:
        out.add_row("dead letters", when, "none")
    else:
        for code, n in dead.items():
            out.add_row("dead letters", when, f"{n:,} x {code}")
    if status.forget_requests:
        out.add_section()
        now = time.time()
        for r in status.forget_requests:
            if r["state"] == "pending":
                what = f"rows still in the tables; asked {duration(now - r['requested_at'])} ago"
            else:
                what = f"rows erased; files leave HDFS in {duration(max(0.0, r['leaves_hdfs_after'] - now))}"
            out.add_row(f"forget {r['id'][:12]}", r["state"], what + (f"; {r['note']}" if r["note"] else ""))
    for probe in status.pending:
        out.add_row(
            f"[dim]{probe}[/]", "[yellow]first answer on its way[/]", "asked in the background; shown next time"
        )
    for probe, why in status.errors.items():
        out.add_row(f"[dim]{probe}[/]", "[yellow]no answer[/]", why)
    return out


def _as_of(status: Status, probe: str) -> str:
    """ " (as of 40s ago)" for an answer kept from an earlier call; "" for one asked now."""
    age = status.ages.get(probe)
    return f" (as of {duration(age)} ago)" if age else ""


def main(argv: list[str] | None = None) -> int:
    """`python -m ops.status --refresh`: ask every figure with a long deadline and keep the answers."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ops.status")
    parser.add_argument(
        "--refresh", action="store_true", help="ask every figure with a long deadline, keep the answers"
    )
    args = parser.parse_args(argv)
    if not args.refresh:
        parser.error("nothing to do: --refresh")
    refresh(Settings.from_env())
    os._exit(0)  # not the interpreter's clean-up: it would wait for late clients' threads


if __name__ == "__main__":
    main()
