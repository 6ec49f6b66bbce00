"""The `recsys-platform` console script: argument parsing and one function per command."""

from __future__ import annotations

import argparse
import sys

from recsys_platform.errors import RecsysError, disk_full, disk_full_in
from recsys_platform.settings import Settings
from recsys_platform.streaming.firehose import FAILED_PREFIX, PROCESSOR_BUFFER_BYTES

# What each command reads of the configuration (None: everything). A command parses only the
# variables it uses, so a typo in one a command never reads cannot stop it.
USES: dict[str, tuple[str, ...] | None] = {
    "seed": ("home", "source_url"),
    "produce-events": ("home", "source_url", "stream", "aws_endpoint_url", "aws_region"),
    "stop": ("home",),
}


def _settings(args: argparse.Namespace) -> Settings:
    """The one `Settings` of this command: its variables, then its flags (`--home`, `--source-url`)."""
    return Settings.from_env(using=USES.get(args.command), source_url=getattr(args, "source_url", None),
                             home=getattr(args, "home", None))


def cmd_seed(args: argparse.Namespace) -> int:
    import os

    from recsys_platform.batch.seed import seed
    from recsys_platform.batch.source import SourceDatabase

    settings = _settings(args)
    os.makedirs(settings.home, exist_ok=True)
    db = SourceDatabase(settings.source_url, create=True)  # seeding may create a SQLite file
    db.connect().close()  # a clear, masked error if the database is unreachable
    try:
        summary = seed(db.engine, scale=args.scale, seed=args.seed, replace=args.replace, mode=args.mode)
    except FileExistsError as e:
        raise RecsysError(f"{db.masked_url}: {e}") from None
    print(f"seeded {db.masked_url} at scale {args.scale} ({args.mode} mode): {summary}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recsys_platform.cli.demo import run_demo

    report = run_demo(_settings(args), verbose=args.verbose)
    return 1 if report.failed_checks else 0


def cmd_produce_events(args: argparse.Namespace) -> int:
    import time
    from collections import Counter

    from recsys_platform import wiring

    if (args.count is None) == (args.from_file is None):
        raise RecsysError("give --count N (synthetic sessions) or --from FILE (a recorded JSON-lines log), one of them")
    settings = _settings(args)
    if args.from_file is not None:
        from recsys_platform.streaming.producer import recorded

        try:
            events = iter(recorded(args.from_file))
        except OSError as e:
            raise RecsysError(f"cannot read {args.from_file}: {e.strerror}") from None
        except ValueError as e:
            raise RecsysError(f"{args.from_file}: {e}") from None
    else:
        from recsys_platform.batch.source import SourceDatabase
        from recsys_platform.streaming.producer import load_catalog, sessions

        db = SourceDatabase(settings.source_url)
        db.connect().close()
        customers, products = load_catalog(db.engine)
        if not customers or not products:
            raise RecsysError(f"{db.masked_url} has no customers or products: run `recsys-platform seed` first")
        if args.learnable:
            import datetime as dt

            from recsys_platform.streaming.producer import SessionTastes, learnable_sessions

            try:
                tastes = SessionTastes.of_seed(args.source_scale, args.source_seed, customers, products)
            except ValueError as e:
                raise RecsysError(f"{e}: pass the --source-scale and --source-seed it was seeded with") from None
            events = learnable_sessions(customers, tastes, args.count, dt.datetime.now(dt.timezone.utc),
                                        malformed_share=args.malformed, shift=args.shift, seed=args.seed)
        else:
            events = sessions(customers, products, args.count, args.malformed, seed=args.seed)
    stream = wiring.stream(settings)
    kinds: Counter = Counter()
    batch, sent, started = [], 0, time.monotonic()
    for key, data, kind in events:
        kinds[kind] += 1
        batch.append((key, data))
        if len(batch) >= 500 or (args.rate and len(batch) >= max(1, int(args.rate / 10))):
            sent += stream.put_records(batch)
            batch = []
            if args.rate:  # pace to `rate` events per second
                time.sleep(max(0.0, sent / args.rate - (time.monotonic() - started)))
    if batch:
        sent += stream.put_records(batch)
    print(f"produced {sent} events into {settings.stream} stream {stream.name!r}: {dict(kinds)}")
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    from recsys_platform import wiring
    from recsys_platform.streaming.delivery import BufferHints

    settings = _settings(args)
    hints = BufferHints(args.buffer_records, args.buffer_bytes, args.buffer_seconds)
    runtime = wiring.delivery_runtime(settings, wiring.inference_service(settings), hints=hints,
                                      retry_duration_s=args.retry_seconds)
    counters = runtime.run(once=args.once, max_seconds=args.max_seconds)
    print(f"delivered into {settings.recommendations_url}: {counters.summary()}")
    return _records_outcome(args.command, counters, settings.recommendations_url)


def cmd_redrive(args: argparse.Namespace) -> int:
    from recsys_platform import wiring

    settings = _settings(args)
    runtime = wiring.delivery_runtime(settings, wiring.inference_service(settings),
                                      retry_duration_s=args.retry_seconds)
    counters = runtime.redrive()
    print(f"redrove {settings.recommendations_url}/{FAILED_PREFIX}/: {counters.summary()}")
    return _records_outcome(args.command, counters, settings.recommendations_url)


def _records_outcome(command: str, counters, bucket: str) -> int:
    """0 when every record was delivered, dropped, or refused for its content (the summary counts
    those with their reasons: sending them again cannot help); 3, with one line on stderr, when
    records failed because the transformation could not run (an outage outlasting the retries)
    or a processing-failed object could not be read: `redrive` is the fix. 1 if the counts do not
    balance (a bug)."""
    from recsys_platform.streaming.delivery import INVOKE_FAILED, UNREADABLE

    if not counters.balanced:
        return 1
    unsent, unreadable = counters.reasons.get(INVOKE_FAILED, 0), counters.reasons.get(UNREADABLE, 0)
    if unsent or unreadable:
        print(f"recsys-platform {command}: {unsent} record(s) failed because the transformation could not run"
              + (f", {unreadable} processing-failed object(s) unreadable (left as they are)" if unreadable else "")
              + f"; the records are under {bucket}/{FAILED_PREFIX}/ with their raw data: fix the cause, then "
              "`recsys-platform redrive` sends them through the transformation again", file=sys.stderr)
        return 3
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from recsys_platform import wiring
    from recsys_platform.ml import artifacts
    from recsys_platform.serving.http import serve

    settings = _settings(args)
    try:  # before any server starts: a fresh home has nothing to serve
        artifacts.current_version(wiring.store(settings, settings.artifacts_url))
    except artifacts.ArtifactError:
        raise RecsysError(f"no model serves yet under {settings.artifacts_url}: run `recsys-platform demo`, or "
                          "run model_and_vectors_job (the model, its vectors and the items' attributes), "
                          "then serve") from None
    service = wiring.inference_service(settings)
    version, _ = service.models.get()  # fail now, clearly, if the vectors are not loaded

    def ready(server) -> None:
        print(f"serving model {version} on http://{args.host}:{args.port} (POST /user_embeddings, "
              "POST /items_from_user?limit=N, GET /items_from_item?item_id=...&limit=N; OpenAPI at /docs)", flush=True)

    serve(service, args.port, args.host, ready=ready)
    return 0


def cmd_serve_dagster(args: argparse.Namespace) -> int:
    from recsys_platform.deploy.dagster_instance import serve

    return serve(_settings(args), host=args.host, port=args.port)


def cmd_package(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recsys_platform.deploy.packaging import LAMBDA_REQUIREMENTS, build, image_packages

    for name, digest in build(args.out).items():
        print(f"{args.out}/{name}  {Path(args.out, name).stat().st_size / 1e3:,.0f} kB  sha256={digest[:16]}")
    sizes = image_packages()
    largest = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in list(sizes.items())[:5])
    print(f"the Lambda image's Python packages ({LAMBDA_REQUIREMENTS.name}, as installed here): "
          f"{sum(sizes.values()) / 1e6:.0f} MB in {len(sizes)} distributions (largest, MB: {largest})")
    return 0


def cmd_ecs_instance(args: argparse.Namespace) -> int:
    from recsys_platform.deploy.dagster_instance import ecs_instance_yaml, write_ecs_instance

    settings = _settings(args)
    if args.out == "-":
        print(ecs_instance_yaml(settings), end="")
        return 0
    path, created = write_ecs_instance(settings, args.out)
    if created:
        print(f"created the database of the Dagster instance on {settings.dagster_pg_host}")
    print(f"wrote {path}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from recsys_platform.vectors.embedded import stop_embedded

    stopped = stop_embedded(_settings(args).pgdata)
    print("stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL was not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-platform",
        description="Product recommendations on Dagster: batch training data, model, vectors, stream. "
        "Configuration comes from RECSYS_* environment variables (see README).")
    parser.add_argument("--home", help="state folder for the embedded default (RECSYS_HOME, default ./.recsys)")
    parser.add_argument("--debug", action="store_true", help="on failure, show the full Python traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("seed", help="create the classicmodels schema with ratings and fill it deterministically")
    p.add_argument("--scale", type=float, default=1.0, help="1 is the lab's size (~120 customers); 100 and 1000 feed benchmarks")
    p.add_argument("--seed", type=int, default=42, help="random seed (same seed and scale, same data)")
    p.add_argument("--source-url", help="SQLAlchemy URL (RECSYS_SOURCE_URL; default: SQLite under RECSYS_HOME)")
    p.add_argument("--replace", action="store_true", help="drop what the database holds and seed again")
    p.add_argument("--mode", choices=("features", "collaborative"), default="features",
                   help="features: ratings built from the features the model reads (default); collaborative: "
                        "from latent tastes the features explain only in part, with a long-tailed popularity")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("demo", help="run the platform end to end on the configured profile and print a summary")
    p.add_argument("--source-url", help="SQLAlchemy URL (RECSYS_SOURCE_URL)")
    p.add_argument("--verbose", action="store_true",
                   help="stream Dagster's event log to the terminal too (always in $RECSYS_HOME/logs/dagster.log)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("produce-events", help="write synthetic activity sessions, or replay a recorded log, into "
                       "the stream (RECSYS_STREAM)")
    p.add_argument("--count", type=int, help="synthetic sessions to produce")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="replay a recorded JSON-lines log instead: one event per line, as it is")
    p.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    p.add_argument("--malformed", type=float, default=0.05, help="share of malformed events (default 0.05)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--learnable", action="store_true",
                   help="sessions of 2-5 timed events whose carts follow the customers' latent tastes (those of "
                   "the seeded source: see --source-scale, --source-seed), for the feedback loop to learn from")
    p.add_argument("--source-scale", type=float, default=1.0, help="with --learnable: the scale the source was seeded at")
    p.add_argument("--source-seed", type=int, default=42, help="with --learnable: the seed the source was seeded with")
    p.add_argument("--shift", type=float, default=0.0,
                   help="with --learnable: how far tastes move half way through (0 none, 1 all new)")
    p.set_defaults(func=cmd_produce_events)

    p = sub.add_parser("deliver", help="the local delivery runtime (Firehose): stream -> transformation -> bucket")
    p.add_argument("--once", action="store_true", help="stop when the stream is drained")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--buffer-records", type=int, default=500)
    p.add_argument("--buffer-bytes", type=int, default=PROCESSOR_BUFFER_BYTES,
                   help=f"the processor buffer in bytes (default {PROCESSOR_BUFFER_BYTES:,}, as infra/ sets it)")
    p.add_argument("--buffer-seconds", type=float, default=1.0)
    _retry_seconds(p)
    p.set_defaults(func=cmd_deliver)

    p = sub.add_parser("redrive", help="send the records under processing-failed/ through the transformation "
                       "again, exactly once (after an outage or a fix)")
    _retry_seconds(p)
    p.set_defaults(func=cmd_redrive)

    p = sub.add_parser("serve", help="the model inference HTTP API (the Lambda Function URL routes) on localhost")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("serve-dagster", help="the production Dagster deployment on this machine: webserver + daemon "
                       "over PostgreSQL storage (RECSYS_DAGSTER_PG_URL, else the embedded server), run queue, retries")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_serve_dagster)

    p = sub.add_parser("package", help="build the Lambda zips and the Glue script (reproducibly) for infra/")
    p.add_argument("--out", default="dist", help="output folder (default dist/, which infra/ reads)")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("ecs-instance", help="write the Dagster instance of the ECS deployment (dagster.yaml: "
                       "RDS storage, EcsRunLauncher, run queue, retries) from RECSYS_ECS_* and RECSYS_DAGSTER_PG_*")
    p.add_argument("--out", help="the file to write (default $DAGSTER_HOME/dagster.yaml; - prints it)")
    p.set_defaults(func=cmd_ecs_instance)

    p = sub.add_parser("stop", help="stop the embedded PostgreSQL (vector store) under RECSYS_HOME")
    p.set_defaults(func=cmd_stop)
    return parser


def _retry_seconds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retry-seconds", type=float, default=60.0, help="how long a failing batch is retried before "
                   "its records go to processing-failed/ (default 60, as Firehose)")


def _quiet_known_warnings() -> None:
    """Dagster's beta notices (observable sources, backfill policies) are not the user's concern."""
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", message="Property `OpDefinition.version` is deprecated")


def main(argv: list[str] | None = None) -> int:
    """Every failure ends in one line on stderr and a non-zero exit (2: the user can fix it,
    1: unexpected); `--debug` shows the traceback instead."""
    _quiet_known_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, RecsysError):
            print(f"recsys-platform {args.command}: error: {e}", file=sys.stderr)
            return 2
        full = disk_full_in(e)
        if full is not None:  # a write below the platform's own stores (a library's, a database's)
            where = full.filename or f"RECSYS_HOME={getattr(args, 'home', None) or '.recsys'}"
            print(f"recsys-platform {args.command}: error: {disk_full(str(where), full)}", file=sys.stderr)
            return 2
        print(f"recsys-platform {args.command}: unexpected error: {type(e).__name__}: "
              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
