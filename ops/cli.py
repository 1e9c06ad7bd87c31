"""`questlog`: run the pipeline, query it, load it."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys

import click

from questlog.deadletters import REASON_CODES
from questlog.settings import Settings


@click.group()
@click.option("--verbose", "-v", is_flag=True, help="Log debug output to stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Questlog: game events over HTTP, queryable per type in Trino seconds later.

    Every setting comes from a QUESTLOG_* environment variable (see questlog/settings.py).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Settings.from_env()


def _banner(settings: Settings) -> str:
    c = settings.collector_url
    exe = os.path.join(os.path.dirname(sys.executable), "questlog")
    rel = os.path.relpath(exe)
    ql = rel if not rel.startswith("..") else exe  # a command the user can paste from here
    return f"""
Questlog is running. State: {settings.home}   Logs: {settings.home}/logs/

Send events (the seed's routes, or JSON):
  ab -n 150 -H "Host: user1.comcast.com" {c}/purchase_a_sword
  ab -n 10 -H "Host: user1.comcast.com" {c}/join_guild
  curl -X POST {c}/events -H 'Content-Type: application/json' \\
       -d '{{"event_type": "purchase_sword", "sword_type": "katana", "price": 12.5}}'
  {ql} load                      # a demo load with ab

Query them (Trino {settings.trino_url}, catalog {settings.trino_catalog}, schema {settings.trino_schema}):
  {ql} query "SELECT count(*) FROM sword_purchases"
  {ql} sql                       # interactive SQL shell

Stop: Ctrl-C here, or `make stop` from another shell.
"""


@main.command()
@click.option("--stack-only", is_flag=True, help="Start Kafka, HDFS and Trino only, not the pipeline.")
@click.pass_obj
def run(settings: Settings, stack_only: bool) -> None:
    """Start the local stack and the pipeline; stop everything on Ctrl-C."""
    from ops.stack.runner import Pipeline

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for sig in signals:  # while starting: stop at once, and stop what has started
        signal.signal(sig, interrupt)
    pipeline = Pipeline(settings, apps=not stack_only, echo_logs=True)
    try:
        pipeline.up()
    except KeyboardInterrupt:
        click.echo("questlog: interrupted while starting; what had started is stopped", err=True)
        sys.exit(130)
    except Exception as exc:
        raise click.ClickException(str(exc)) from exc
    stopping = []
    for sig in signals:  # once up: finish the current check, then stop everything in order
        signal.signal(sig, lambda *_: stopping.append(True))
    click.echo(_banner(settings))
    code = pipeline.watch(lambda: bool(stopping))
    click.echo("questlog: stopping...", err=True)
    pipeline.down()
    sys.exit(code)


@main.command()
@click.pass_obj
def stop(settings: Settings) -> None:
    """Stop every process a `questlog run` started (from any shell)."""
    from ops.stack.runner import stop_all

    if not stop_all(settings):
        click.echo("questlog: nothing was running", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on standard output, for scripts.")
@click.option(
    "--deadline",
    default=1.5,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the probes. A figure that needs Trino or HDFS and has not answered by "
    "then is shown as last answered, with its age, and asked again in the background.",
)
@click.option(
    "--no-refresh", is_flag=True, help="Do not ask the late figures again in the background for the next call."
)
@click.pass_obj
def status(settings: Settings, as_json: bool, deadline: float, no_refresh: bool) -> None:
    """Health, lag, freshness, dead letters by code and HDFS usage, in one table (under 2 s); each
    figure says how old it is when it is not from this call.

    Exits 1 when a service is down or fails its health check."""
    import json

    from ops.status import collect, set_deadline, table

    set_deadline(deadline)

    def renderer():  # imported while the probes wait for their answers
        import rich.table  # noqa: F401
        from rich.console import Console

        return Console()

    console = []
    result = collect(
        settings, meanwhile=None if as_json else lambda: console.append(renderer()), refresh_after=not no_refresh
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        console[0].print(table(result))
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: the interpreter's clean-up would wait for the Kafka clients of probes that
    # answered late (librdkafka's threads stop on their own timeouts), 0.3 s at a load of 10.
    os._exit(0 if result.healthy else 1)


@main.command()
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="T",
    help="Only this table (repeatable); default: every table of the deployed catalog, dead letters included.",
)
@click.option("--date", "dates", multiple=True, metavar="YYYY-MM-DD", help="Only this date partition (repeatable).")
@click.option(
    "--dry-run", is_flag=True, help="Only print files and bytes per table and date, and what compaction would do."
)
@click.option(
    "--min-files", default=2, show_default=True, help="Compact a partition once this many small files can be merged."
)
@click.pass_obj
def compact(settings: Settings, tables: tuple[str, ...], dates: tuple[str, ...], dry_run: bool, min_files: int) -> None:
    """Rewrite each date partition's small data files into files near QUESTLOG_COMPACT_TARGET_MB
    (Trino's Iceberg `optimize`, one commit), then expire snapshots older than
    QUESTLOG_COMPACT_GRACE_S (docs/compaction.md). Readers see the table before or after, never
    between."""
    from compactor.compact import Compactor
    from questlog.catalog.watch import CatalogSource

    known = [t.name for t in CatalogSource(settings.catalog).get().tables(settings.raw_topic, settings.dlq_topic)]
    unknown = sorted(set(tables) - set(known))
    if unknown:
        raise click.BadParameter(
            f"no such table: {', '.join(unknown)} (tables: {', '.join(known)})", param_hint="--table"
        )
    compactor = Compactor(settings, progress=lambda m: click.echo(f"questlog: {m}", err=True))
    reports = compactor.run(list(tables) or known, list(dates) or None, min_files=min_files, dry_run=dry_run)
    click.echo(f"{'table':<22} {'date':<10} {'files':>7} {'bytes':>14}  {'compaction'}")
    for r in reports:
        if r.done:
            what = f"done: {r.files} files -> {r.output_files}"
        elif r.small >= max(2, min_files):
            what = f"would rewrite {r.small} small files"
        else:
            what = "nothing to do"
        click.echo(f"{r.table:<22} {r.date:<10} {r.files:>7} {r.bytes:>14,}  {what}")


@main.command()
@click.option("--interval", default=2.0, show_default=True, metavar="SECONDS", help="Seconds between refreshes.")
@click.option("--window", default=5.0, show_default=True, metavar="MINUTES", help="Minutes of history shown.")
@click.pass_obj
def top(settings: Settings, interval: float, window: float) -> None:
    """A live view: events/s per stage with sparklines, lag, freshness, dead letters (Ctrl-C to leave).

    Reads the GET /metrics of the collector, the router and the sink."""
    from ops.top import run as run_top

    run_top(settings, interval_s=interval, window_s=window * 60)


@main.command()
@click.argument("service")
@click.option("--lines", "-n", default=50, show_default=True, help="How many lines to show.")
@click.pass_obj
def logs(settings: Settings, service: str, lines: int) -> None:
    """Show the end of SERVICE's log (kafka, namenode, datanode, trino, collector, router, sink, compactor)."""
    from ops.stack.process import tail

    path = settings.home_path / "logs" / f"{service}.log"
    if not path.exists():
        raise click.ClickException(f"no log for {service!r} at {path}")
    click.echo(tail(path, lines))


@main.command()
@click.pass_obj
def fetch(settings: Settings) -> None:
    """Download (once) the JVM artifacts of Kafka, HDFS and Trino."""
    from ops.stack.artifacts import fetch_all

    fetch_all(settings.cache_path)


@main.command()
@click.argument("statement")
@click.pass_obj
def query(settings: Settings, statement: str) -> None:
    """Run one SQL STATEMENT on Trino and print the rows (tab-separated, with a header)."""
    import trino

    from questlog.sql import execute

    try:
        columns, rows = execute(settings, statement)
    except trino.exceptions.TrinoUserError as exc:
        raise click.ClickException(exc.message) from exc
    except Exception as exc:
        raise click.ClickException(f"query failed: {exc}") from exc
    if columns:
        click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("cli_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def sql(settings: Settings, cli_args: tuple[str, ...]) -> None:
    """Open Trino's interactive SQL shell on the events schema.

    Further arguments go to the Trino CLI, e.g. `questlog sql --execute "SHOW TABLES"`."""
    from ops.stack import artifacts
    from ops.stack.java import find_java

    cli = artifacts.trino_cli(settings.cache_path)
    java = find_java(22, purpose="the Trino CLI")
    credentials = settings.trino_credentials
    user = credentials[0] if credentials else settings.trino_user
    server = f"{settings.trino_scheme}://{settings.trino_host}:{settings.trino_port}"  # without credentials
    argv = [java, "-jar", str(cli), "--server", server, "--catalog", settings.trino_catalog]
    argv += ["--schema", settings.trino_schema, "--user", user]
    env = dict(os.environ)
    password = settings.trino_password(user) if settings.trino_scheme == "https" else None
    if password is not None:  # the CLI reads it from TRINO_PASSWORD with --password: never on its command line
        argv.append("--password")
        env["TRINO_PASSWORD"] = password
    if settings.trino_ca_file:
        argv += ["--truststore-path", settings.trino_ca_file]
    os.execve(java, [*argv, *cli_args], env)


@main.command()
@click.option("--players", default=100, show_default=True, metavar="N", help="Simulated players.")
@click.option(
    "--rate",
    default=200.0,
    show_default=True,
    metavar="EVENTS/S",
    help="Target rate; 0 sends as fast as the client takes them.",
)
@click.option(
    "--duration",
    "duration_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Send for this long (default: 10 s unless --count is given).",
)
@click.option(
    "--count",
    type=int,
    default=None,
    metavar="N",
    help="Send this many events (with --duration: whichever comes first).",
)
@click.option(
    "--bad-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="FRACTION",
    help="Share of events made wrong for their schema on purpose (they become dead letters).",
)
@click.option("--seed", type=int, default=None, help="Random seed, for a repeatable run.")
@click.option(
    "--write-key",
    envvar="QUESTLOG_WRITE_KEY",
    default=None,
    metavar="KEY",
    help="Write key, when the collector has keys on [env QUESTLOG_WRITE_KEY].",
)
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="The client's on-disk spool (events survive a restart while the collector is away).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Afterwards, check in Trino that every accepted event landed "
    "exactly once (a bad one in dead_letters); exit 1 if not.",
)
@click.option(
    "--verify-timeout",
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long --verify waits for the events to land.",
)
@click.option(
    "--ab",
    "use_ab",
    is_flag=True,
    help="Instead: the seed's demo with Apache Bench (`ab`), sword purchases and guild joins on the GET routes.",
)
@click.option("-n", "requests", default=150, show_default=True, help="With --ab: sword purchases to send.")
@click.option("--guild-joins", default=10, show_default=True, help="With --ab: guild joins to send.")
@click.option("--host", default="user1.comcast.com", show_default=True, help="With --ab: Host header, as in the seed.")
@click.option("-c", "concurrency", default=1, show_default=True, help="With --ab: concurrent requests.")
@click.pass_obj
def load(
    settings: Settings,
    players: int,
    rate: float,
    duration_s: float | None,
    count: int | None,
    bad_share: float,
    seed: int | None,
    write_key: str | None,
    spool_dir: str | None,
    verify: bool,
    verify_timeout: float,
    use_ab: bool,
    requests: int,
    guild_joins: int,
    host: str,
    concurrency: int,
) -> None:
    """Send game-like traffic with the Python client (questlog_client): PLAYERS in sessions buying
    swords, joining and leaving guilds, levelling up, and every other catalog type; then a summary
    by type, and with --verify a check against Trino. With --ab, the seed's demo with `ab`."""
    if use_ab:
        _load_ab(settings, requests, guild_joins, host, concurrency)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ops.load import run_load, settle_marker
    from ops.load import verify as check
    from questlog.catalog import CatalogError, load_catalog

    try:
        cat = load_catalog(settings.catalog)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    if duration_s is None and count is None:
        duration_s = 10.0
    console = Console(stderr=True)
    total = count if count is not None else None
    with Progress(
        TextColumn("[bold]load"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=total or duration_s)

        def show(result, elapsed: float) -> None:
            done = result.total_sent if total else min(elapsed, duration_s or elapsed)
            progress.update(
                task,
                completed=done,
                description=(
                    f"{result.total_sent:,} sent, {sum(result.accepted.values()):,} accepted, "
                    f"{sum(result.refused.values()):,} refused, {result.total_sent / max(elapsed, 1e-9):,.0f}/s"
                ),
            )

        result = run_load(
            settings.collector_url,
            cat,
            write_key=write_key,
            players=players,
            rate=rate,
            duration_s=duration_s,
            count=count,
            bad_share=bad_share,
            seed=seed,
            spool_dir=spool_dir,
            on_progress=show,
        )
    click.echo(result.summary())
    if not verify:
        return
    verdict = check(
        settings,
        cat,
        result,
        verify_timeout,
        settle_marker(settings, cat, write_key),
        say=lambda m: console.print(m, style="dim"),
    )
    click.echo(verdict.report())
    if not verdict.ok:
        sys.exit(1)


def _load_ab(settings: Settings, requests: int, guild_joins: int, host: str, concurrency: int) -> None:
    """The seed's demo traffic with Apache Bench (`ab`)."""
    ab = shutil.which("ab")
    if ab is None:
        raise click.ClickException("Apache Bench (`ab`) is not installed: apt-get install apache2-utils")
    for path, n in (("/purchase_a_sword", requests), ("/join_guild", guild_joins)):
        if n <= 0:
            continue
        cmd = [ab, "-n", str(n), "-c", str(concurrency), "-H", f"Host: {host}", settings.collector_url + path]
        click.echo(f"$ {' '.join(cmd)}", err=True)
        result = subprocess.run(cmd, capture_output=True, text=True)
        summary = [
            line
            for line in result.stdout.splitlines()
            if line.startswith(("Complete requests", "Failed requests", "Non-2xx", "Requests per second"))
        ]
        click.echo("\n".join(summary) or result.stdout + result.stderr)
        if result.returncode != 0:
            raise click.ClickException(f"ab failed with code {result.returncode}")


@main.group()
def catalog() -> None:
    """The event catalog: check, deploy and document schema changes."""


@catalog.command("deploy")
@click.option(
    "--schemas",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    metavar="DIR",
    help="Directory of *.toml schemas (default: questlog/catalog/schemas).",
)
@click.option("--dry-run", is_flag=True, help="Only check that the change is compatible.")
@click.pass_obj
def catalog_deploy(settings: Settings, schemas: str | None, dry_run: bool) -> None:
    """Check the schemas against the deployed catalog (QUESTLOG_CATALOG) and deploy them.

    Compatible changes only: new types, new optional fields (with a version bump). The new types'
    Kafka topics are created first (as the admin, QUESTLOG_KAFKA_USER); a running pipeline picks the
    new catalog up within seconds, no restart needed."""
    from questlog.catalog import SCHEMA_DIR, CatalogError
    from questlog.catalog.evolution import IncompatibleChange
    from questlog.kafka_admin import deploy_with_topics

    try:
        _, changes = deploy_with_topics(settings, schemas or SCHEMA_DIR, dry_run=dry_run)
    except (IncompatibleChange, CatalogError) as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "would deploy" if dry_run else "deployed"
    click.echo(f"{verb} to {settings.catalog}: " + ("; ".join(changes) if changes else "no changes"))


@catalog.command("check")
@click.option(
    "--schemas",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    metavar="DIR",
    help="Directory of *.toml schemas (default: questlog/catalog/schemas).",
)
@click.pass_context
def catalog_check(ctx: click.Context, schemas: str | None) -> None:
    """Check a schema change without deploying it (deploy --dry-run)."""
    ctx.invoke(catalog_deploy, schemas=schemas, dry_run=True)


@catalog.command("docs")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Write to FILE instead of standard output (the repo's page is docs/events.md).",
)
@click.option(
    "--readme",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    metavar="FILE",
    help="Also refresh the list of tables in FILE (the repo's README.md), between its markers.",
)
@click.pass_obj
def catalog_docs(settings: Settings, output: str | None, readme: str | None) -> None:
    """Print the event reference page, generated from the deployed catalog."""
    from pathlib import Path

    from questlog.catalog import load_catalog
    from questlog.catalog.docs import render_markdown, with_tables

    deployed = load_catalog(settings.catalog)
    if readme:
        Path(readme).write_text(with_tables(Path(readme).read_text(), deployed))
    text = render_markdown(deployed)
    if output:
        with open(output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--type", "event_type", default=None, metavar="TYPE", help="Only dead letters of this event type.")
@click.option(
    "--code",
    "codes",
    multiple=True,
    type=click.Choice(list(REASON_CODES)),
    metavar="CODE",
    help="Only dead letters of this reason code (repeatable): " + ", ".join(REASON_CODES) + ".",
)
@click.option("--dry-run", is_flag=True, help="Show what would be re-sent; send nothing.")
@click.pass_obj
def replay(settings: Settings, event_type: str | None, codes: tuple[str, ...], dry_run: bool) -> None:
    """Re-send the dead letters that the deployed catalog now accepts.

    Safe to run again: events already in their table are skipped, and the sink drops repeated
    event_ids besides."""
    from ops.replay import replay as run_replay
    from questlog.catalog import load_catalog

    try:
        plan = run_replay(settings, load_catalog(settings.catalog), event_type, dry_run, codes=list(codes))
    except Exception as exc:
        raise click.ClickException(f"replay failed: {exc}") from exc
    click.echo(f"{'would re-send' if dry_run else 're-sent'}: {plan.replayed}")
    click.echo(f"already in their tables: {plan.already_landed}")
    click.echo(f"still rejected by the catalog: {sum(plan.still_invalid.values())}")
    for reason, n in plan.still_invalid.most_common(5):
        click.echo(f"  {n} x {reason}")
    click.echo(f"not replayable (not JSON or no event_id): {plan.not_replayable}")


def _requests_from(path: str) -> list[tuple[str, str | None]]:
    """A file of forget requests: one a line, a player id, or JSON {"user_id": ..., "source": ...}."""
    import json

    out: list[tuple[str, str | None]] = []
    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            if line.lstrip().startswith("{"):
                try:
                    doc = json.loads(line)
                    out.append((doc["user_id"], doc.get("source")))
                except (ValueError, KeyError, TypeError, RecursionError):
                    raise click.BadParameter(
                        f"line {n}: not a JSON object with a user_id", param_hint="--file"
                    ) from None
            else:
                out.append((line, None))
    return out


@main.command()
@click.option("--user", "user_id", metavar="USER", help="The player's id (the events' user_id).")
@click.option("--source", default=None, metavar="S", help="Only the player's events from this source (write key).")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    help='Many requests: a player id a line, or JSON lines {"user_id": ..., "source": ...}.',
)
@click.option("--now", is_flag=True, help="Erase their rows now instead of leaving it to the compactor service.")
@click.option("--wait", is_flag=True, help="With --now: also wait until their files are off HDFS.")
@click.option("--lift", is_flag=True, help="Lift the suppression: the player's events land again from now on.")
@click.option("--list", "listing", is_flag=True, help="List the requests (no personal data) and exit.")
@click.pass_obj
def forget(
    settings: Settings,
    user_id: str | None,
    source: str | None,
    path: str | None,
    now: bool,
    wait: bool,
    lift: bool,
    listing: bool,
) -> None:
    """Forget a player: every row of theirs leaves every table (dead letters included) and their
    files leave HDFS, and their events never land again (docs/privacy.md).

    The request is on disk before this answers; asking again is the same request. The compactor
    service erases the rows within QUESTLOG_FORGET_INTERVAL_S (or --now), and the files that held
    them QUESTLOG_FORGET_GRACE_S later. `questlog status` shows each request until it is done."""
    import time

    from questlog.privacy import DONE, RequestStore

    store = RequestStore(settings)
    if listing:
        for r in store.all():
            click.echo(
                f"{r.id}  {r.state:<8} requested {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r.requested_at))}"
                f"  rows {sum(r.rows.values())}  {r.note}"
            )
        return
    wanted = ([(user_id, source)] if user_id else []) + (_requests_from(path) if path else [])
    if not wanted:
        raise click.UsageError("say whom: --user USER or --file FILE")
    ids = []
    for user, src in wanted:
        try:
            if lift:
                lifted = store.lift(user, src)
                click.echo(f"{'lifted' if lifted else 'no such request'}: {lifted.id if lifted else '-'}")
                continue
            request, new = store.record(user, src)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--user") from None
        ids.append(request.id)
        click.echo(f"{'recorded' if new else 'already asked'}: request {request.id} ({request.state})")
    if lift or not now:
        return
    from compactor.erasure import Busy, Eraser
    from questlog.catalog.watch import CatalogSource

    source_ = CatalogSource(settings.catalog)
    eraser = Eraser(
        settings,
        lambda: source_.get().tables(settings.raw_topic, settings.dlq_topic),
        progress=lambda m: click.echo(f"questlog: {m}", err=True),
        store=store,
    )
    deadline = time.monotonic() + 600 + (settings.forget_grace_s if wait else 0)
    while time.monotonic() < deadline:
        try:
            eraser.run_once()
        except Busy as exc:
            click.echo(f"questlog: {exc}", err=True)
        states = [getattr(store.get(i), "state", "?") for i in ids]
        if all(state == DONE or (not wait and state == "erased") for state in states):
            click.echo(f"{'done' if wait else 'rows erased'}: {len(ids)} requests")
            return
        time.sleep(5)
    raise click.ClickException("not done in time; the compactor service carries on (questlog status)")


if __name__ == "__main__":
    main()
