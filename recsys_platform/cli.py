"""The `recsys-platform` console script."""

from __future__ import annotations

import argparse
import sys

from recsys_platform.core.errors import RecsysError
from recsys_platform.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(source_url=getattr(args, "source_url", None), home=getattr(args, "home", None))


def cmd_seed(args: argparse.Namespace) -> int:
    import os

    from recsys_platform.core.seed import seed
    from recsys_platform.core.source import SourceDatabase

    settings = _settings(args)
    os.makedirs(settings.home, exist_ok=True)
    db = SourceDatabase(settings.source_url)
    db.connect().close()  # a clear, masked error if the database is unreachable
    try:
        summary = seed(db.engine, scale=args.scale, seed=args.seed, replace=args.replace)
    except FileExistsError as e:
        raise RecsysError(f"{db.masked_url}: {e}") from None
    print(f"seeded {db.masked_url} at scale {args.scale}: {summary}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recsys_platform.demo import run_demo

    report = run_demo(_settings(args))
    return 1 if report.failed_checks else 0


def _stream(settings):
    from recsys_platform.core.stream import Stream

    return Stream.from_setting(settings.stream, settings.home, settings.aws_endpoint_url)


def cmd_produce_events(args: argparse.Namespace) -> int:
    import time
    from collections import Counter

    from recsys_platform.core.producer import load_catalog, sessions
    from recsys_platform.core.source import SourceDatabase

    settings = _settings(args)
    db = SourceDatabase(settings.source_url)
    db.connect().close()
    customers, products = load_catalog(db.engine)
    if not customers or not products:
        raise RecsysError(f"{db.masked_url} has no customers or products: run `recsys-platform seed` first")
    stream = _stream(settings)
    kinds: Counter = Counter()
    batch, sent, started = [], 0, time.monotonic()
    for key, data, kind in sessions(customers, products, args.count, args.malformed, seed=args.seed):
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


def serve_inference(settings):
    """Point the in-process model inference handler at the configured artifacts and vectors."""
    from lambdas.model_inference import handler as inference
    from recsys_platform.core.inference import InferenceService, ModelCache
    from recsys_platform.core.object_store import ObjectStore
    from recsys_platform.core.vector_store import VectorStore, embedded_dsn

    artifacts = ObjectStore.from_url(settings.artifacts_url, endpoint_url=settings.aws_endpoint_url)
    service = InferenceService(ModelCache(artifacts),
                               VectorStore(settings.vector_dsn or embedded_dsn(f"{settings.home}/pgdata")))
    inference.set_service(service)
    return service


def delivery_runtime(settings, log=print, hints=None):
    """The local Firehose: the configured stream into the recommendations bucket."""
    from lambdas.stream_transformation.handler import lambda_handler
    from recsys_platform.core.delivery import DeliveryRuntime
    from recsys_platform.core.object_store import ObjectStore

    serve_inference(settings)
    store = ObjectStore.from_url(settings.recommendations_url, endpoint_url=settings.aws_endpoint_url)
    return DeliveryRuntime(_stream(settings), lambda_handler, store, f"{settings.home}/delivery", hints=hints, log=log)


def cmd_deliver(args: argparse.Namespace) -> int:
    from recsys_platform.core.delivery import BufferHints

    settings = _settings(args)
    runtime = delivery_runtime(settings, hints=BufferHints(args.buffer_records, args.buffer_bytes, args.buffer_seconds))
    counters = runtime.run(once=args.once, max_seconds=args.max_seconds)
    print(f"delivered into {settings.recommendations_url}: {counters.summary()}")
    return 0 if counters.balanced else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from recsys_platform.serve import make_server

    settings = _settings(args)
    version, _ = serve_inference(settings).models.get()  # fail now, clearly, if no model is published
    server = make_server(args.port, args.host)
    print(f"serving model {version} on http://{args.host}:{server.server_port} "
          "(POST /user_embeddings, POST /items_from_user?limit=N, GET /items_from_item?item_id=...&limit=N)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from recsys_platform.packaging import build

    for name, digest in build(args.out).items():
        print(f"{args.out}/{name}  sha256={digest[:16]}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from recsys_platform.core.vector_store import stop_embedded

    settings = _settings(args)
    stopped = stop_embedded(f"{settings.home}/pgdata")
    print("stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL was not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-platform",
        description="Product recommendations on Dagster: batch training data, model, vectors, stream. "
        "Configuration comes from RECSYS_* environment variables (see README).")
    parser.add_argument("--home", help="state folder for the embedded default (RECSYS_HOME, default ./.recsys)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("seed", help="create the classicmodels schema with ratings and fill it deterministically")
    p.add_argument("--scale", type=float, default=1.0, help="1 is the lab's size (~120 customers); 100 and 1000 feed benchmarks")
    p.add_argument("--seed", type=int, default=42, help="random seed (same seed and scale, same data)")
    p.add_argument("--source-url", help="SQLAlchemy URL (RECSYS_SOURCE_URL; default: SQLite under RECSYS_HOME)")
    p.add_argument("--replace", action="store_true", help="drop what the database holds and seed again")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("demo", help="run the platform end to end on the configured profile and print a summary")
    p.add_argument("--source-url", help="SQLAlchemy URL (RECSYS_SOURCE_URL)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("produce-events", help="write synthetic activity sessions into the stream (RECSYS_STREAM)")
    p.add_argument("--count", type=int, required=True, help="sessions to produce")
    p.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    p.add_argument("--malformed", type=float, default=0.05, help="share of malformed events (default 0.05)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_produce_events)

    p = sub.add_parser("deliver", help="the local delivery runtime (Firehose): stream -> transformation -> bucket")
    p.add_argument("--once", action="store_true", help="stop when the stream is drained")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--buffer-records", type=int, default=500)
    p.add_argument("--buffer-bytes", type=int, default=1 << 20)
    p.add_argument("--buffer-seconds", type=float, default=1.0)
    p.set_defaults(func=cmd_deliver)

    p = sub.add_parser("serve", help="the model inference HTTP API (the Lambda Function URL routes) on localhost")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("package", help="build the Lambda zips and the Glue script (reproducibly) for infra/")
    p.add_argument("--out", default="dist", help="output folder (default dist/, which infra/ reads)")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("stop", help="stop the embedded PostgreSQL (vector store) under RECSYS_HOME")
    p.set_defaults(func=cmd_stop)
    return parser


def _quiet_known_warnings() -> None:
    """Dagster's beta notices (observable sources, backfill policies) are not the user's concern."""
    import warnings

    try:
        from dagster._utils.warnings import BetaWarning

        warnings.filterwarnings("ignore", category=BetaWarning)
    except ImportError:  # a future Dagster without the class: nothing to silence
        pass
    warnings.filterwarnings("ignore", message="Property `OpDefinition.version` is deprecated")


def main(argv: list[str] | None = None) -> int:
    _quiet_known_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RecsysError as e:
        print(f"recsys-platform {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
