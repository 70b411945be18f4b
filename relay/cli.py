"""
The ``relay`` command: ``demo``, ``worker``, ``send``, ``monitor``, ``workers``
and ``dashboard``.

Run ``relay --help`` (or ``python -m relay --help``) for the details of each.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal as os_signal
import sys
import time
from collections.abc import Iterable, Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn

from relay.bridge import Relay
from relay.presence import WORKER_COUNTERS, Peer
from relay.signals import Signal
from relay.transport.base import TransportError
from relay.usage import UsageError

DEFAULT_NAMESPACE = "relay"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _redis_url(given: str | None) -> str:
    return given or os.environ.get("REDIS_URL") or DEFAULT_URL


def _namespace(given: str | None) -> str:
    return given or os.environ.get("RELAY_NAMESPACE") or DEFAULT_NAMESPACE


def _connect(url: str, namespace: str, secret: str | None = None, **options: Any) -> Relay:
    """A bridge on ``url``, after checking that Redis answers."""
    secret = secret or os.environ.get("RELAY_SECRET") or None
    if secret:
        options["secret"] = secret
    try:
        bridge = Relay(url, namespace=namespace, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    try:
        bridge.transport.check()
    except TransportError as exc:
        bridge.close()
        # The transport's own message names the Redis ("cannot reach Redis at
        # ...", "Redis at ... refused the credentials ..."); say which if not.
        where = bridge.transport.description
        message = str(exc) if where in str(exc) else f"cannot reach Redis at {where}: {exc}"
        raise UsageError(message) from None
    return bridge


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- relay worker ---------------------------------------------------------------


def load_app(spec: str) -> tuple[str, Any]:
    """
    Import ``spec`` (``module`` or ``module:attribute``).

    Returns the imported module or attribute. Raises ``UsageError`` with one
    clear line when it cannot be imported.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise UsageError(f"APP {spec!r} should look like 'package.module' or 'module:attribute'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import APP {spec!r}: {exc}") from None
    if not attribute:
        return spec, module
    try:
        target: Any = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise UsageError(
            f"cannot import APP {spec!r}: {module_name} has no {attribute!r}"
        ) from None
    return spec, target


def _app_signals(app: Any) -> list[Signal]:
    if isinstance(app, Signal):
        return [app]
    if isinstance(app, (list, tuple)):
        return [s for s in app if isinstance(s, Signal)]
    if isinstance(app, ModuleType):
        declared = getattr(app, "SIGNALS", None)
        if declared is not None:
            return _app_signals(declared)
        return [s for s in vars(app).values() if isinstance(s, Signal) and s.name]
    return []


def register_app(bridge: Relay, spec: str, app: Any) -> int:
    """
    Register what APP declares on ``bridge``; return how many signals it has.

    APP may be a module (its ``SIGNALS`` sequence if it has one, else every
    named ``Signal`` among its globals), a ``Signal``, a list of them, or a
    callable that takes the bridge and registers signals itself.
    """
    if callable(app) and not isinstance(app, (Signal, ModuleType, type)):
        app(bridge)
        count = len(bridge._signals)
    else:
        signals = _app_signals(app)
        for signal in signals:
            bridge.register(signal)
        count = len(signals)
    if count == 0:
        raise UsageError(
            f"APP {spec!r} defines no named signals to relay; give them names "
            "(Signal(name='app.signal')) or list them in SIGNALS"
        )
    return count


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    spec, app = load_app(args.app)
    options: dict[str, Any] = {"heartbeat": args.heartbeat}
    if args.worker_id:
        options["worker_id"] = args.worker_id
    bridge = _connect(
        _redis_url(args.redis_url), _namespace(args.namespace), args.secret, **options
    )
    try:
        register_app(bridge, spec, app)
        if args.metrics_port is not None:
            from relay.contrib.prometheus import serve_metrics

            serve_metrics(bridge, args.metrics_port, args.metrics_host)
        bridge.run()
    finally:
        bridge.close()
    return 0


# -- relay send -----------------------------------------------------------------


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``key=value`` arguments into keyword arguments (values stay strings)."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"expected key=value with a Python identifier as key, not {pair!r}")
        kwargs[key] = value
    return kwargs


def cmd_send(args: argparse.Namespace) -> int:
    kwargs = parse_pairs(args.pairs)
    if args.json is not None:
        try:
            extra = json.loads(args.json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(extra, dict) or not all(k.isidentifier() for k in extra):
            raise UsageError("--json must be a JSON object whose keys are Python identifiers")
        kwargs.update(extra)
    if "signal" in kwargs or "sender" in kwargs:
        raise UsageError("'signal' and 'sender' are not allowed as keyword names")
    bridge = _connect(
        _redis_url(args.redis_url), _namespace(args.namespace), args.secret, publish="sync"
    )
    try:
        signal = Signal(name=args.signal)
        try:
            bridge.register(signal)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            signal.send(args.sender, **kwargs)
        except TransportError as exc:
            raise UsageError(f"could not publish: {exc}") from None
    finally:
        bridge.close()
    print(f"sent {args.signal} to namespace {bridge.namespace!r}")
    return 0


# -- relay monitor --------------------------------------------------------------


def cmd_monitor(args: argparse.Namespace) -> int:
    from relay.monitor import monitor

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # Once: a second SIGTERM does not interrupt the cleanup of the first.
        os_signal.signal(os_signal.SIGTERM, os_signal.SIG_IGN)
        raise KeyboardInterrupt

    # Stop on SIGTERM as on Ctrl-C (exit 0), wherever the monitor is: as PID 1
    # of a container (docker compose stop) the default action of SIGTERM
    # would be ignored.
    os_signal.signal(os_signal.SIGTERM, interrupt)
    try:
        bridge = _connect(_redis_url(args.redis_url), _namespace(args.namespace), args.secret)
        try:
            return monitor(bridge, args.signal or None, as_json=args.json, limit=args.count)
        except ValueError as exc:  # a cluster: name the signals
            raise UsageError(str(exc)) from None
        finally:
            bridge.close()
    except KeyboardInterrupt:
        return 0


# -- relay workers ----------------------------------------------------------------


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def workers_table(peers: Sequence[Peer], now: float) -> list[str]:
    """The lines ``relay workers`` prints for ``peers``."""
    header = (
        "WORKER",
        "KIND",
        "HOST",
        "PID",
        "STATE",
        "UP",
        "SENDS",
        "HEARS",
        *("ERRORS" if name == "receiver_errors" else name.upper() for name in WORKER_COUNTERS),
    )
    rows: list[tuple[str, ...]] = [header]
    for peer in peers:
        stats = peer.stats
        if peer.alive:
            state = "alive"
        else:
            state = f"{peer.state} (last seen {_ago(now - peer.last_seen)} ago)"
        rows.append(
            (
                peer.worker_id or "-",
                peer.kind,
                peer.host,
                str(peer.pid),
                state,
                _ago(peer.last_seen - peer.started_at),
                str(len(peer.sends)),
                str(len(peer.hears)),
                *(str(stats.get(name, 0)) for name in WORKER_COUNTERS),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def cmd_workers(args: argparse.Namespace) -> int:
    bridge = _connect(_redis_url(args.redis_url), _namespace(args.namespace), args.secret)
    try:
        peers = bridge.peers(include_gone=True)
    finally:
        bridge.close()
    if args.json:
        print(json.dumps([peer.as_dict() for peer in peers], indent=2))
        return 0
    if not peers:
        print(f"no workers on namespace {bridge.namespace!r} (in the last hour)")
        return 0
    for line in workers_table(peers, time.time()):
        print(line)
    return 0


# -- relay dashboard --------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    from relay.dashboard import run_dashboard
    from relay.dashboard.server import is_loopback

    _setup_logging(args.verbose)
    if not is_loopback(args.host) and not args.token:
        raise UsageError(
            f"--host {args.host} serves the dashboard beyond this machine: give a --token "
            "that the page must present (or keep the default --host 127.0.0.1)"
        )
    bridge = _connect(_redis_url(args.redis_url), _namespace(args.namespace), args.secret)
    try:
        return run_dashboard(bridge, host=args.host, port=args.port, token=args.token)
    finally:
        bridge.close()


# -- relay demo -----------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from relay.demo.run import run_demo

    if args.workers < 1 or args.signals < 1:
        raise UsageError("--workers and --signals must be at least 1")
    if args.cluster and (args.redis_url or args.embedded):
        raise UsageError("--cluster starts its own broker: leave out --redis-url and --embedded")
    return run_demo(
        workers=args.workers,
        signals=args.signals,
        # $REDIS_URL does not apply to --cluster, which asks for a broker of its own.
        redis_url=None if args.cluster else args.redis_url or os.environ.get("REDIS_URL"),
        embedded=args.embedded,
        cluster=args.cluster,
    )


# -- the parser -------------------------------------------------------------------


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"Redis to use (default: $REDIS_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help=f"namespace shared by the processes (default: $RELAY_NAMESPACE, else "
        f"{DEFAULT_NAMESPACE!r})",
    )
    parser.add_argument(
        "--secret",
        metavar="SECRET",
        help="sign and verify messages with this shared secret (default: $RELAY_SECRET)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="Django-compatible signals that also fire in every other process.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="see relay work across processes",
        description="Start worker processes, send signals to them and check that every "
        "expected delivery happened exactly once. Uses --redis-url, else $REDIS_URL, else "
        "a Redis on 127.0.0.1:6379 if one answers, else an embedded broker; with --cluster, "
        "a Redis Cluster of its own.",
    )
    demo.add_argument("--workers", type=int, default=3, metavar="N", help="worker processes (3)")
    demo.add_argument(
        "--signals", type=int, default=3000, metavar="M", help="signals to send (3000)"
    )
    demo.add_argument("--redis-url", metavar="URL", help="Redis to use")
    demo.add_argument(
        "--embedded",
        action="store_true",
        help="use the embedded broker even if a Redis answers (needs signal-relay[demo])",
    )
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="start a local 3-shard Redis Cluster for the demo and stop it at the end "
        "(needs redis-server and redis-cli on PATH)",
    )
    demo.set_defaults(handler=cmd_demo)

    worker = commands.add_parser(
        "worker",
        help="listen for signals in a worker process",
        description="Import APP, register its signals and fire their receivers for sends "
        "from every process, until SIGINT or SIGTERM.",
    )
    worker.add_argument(
        "app",
        metavar="APP",
        help="'module' or 'module:attribute': a module with named signals (or a SIGNALS "
        "list), a Signal, a list of them, or a callable taking the Relay",
    )
    _add_broker_options(worker)
    worker.add_argument(
        "--worker-id",
        metavar="NAME",
        help="a stable name for this worker, shown by `relay workers`",
    )
    worker.add_argument(
        "--heartbeat",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="announce this worker every SECONDS (5; 0: no presence)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics on port N (needs signal-relay[prometheus])",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address to serve metrics on (127.0.0.1)",
    )
    worker.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    worker.set_defaults(handler=cmd_worker)

    send = commands.add_parser(
        "send",
        help="send one signal to every process",
        description="Publish one signal as any other process would; exit 0 once published.",
    )
    send.add_argument("signal", metavar="SIGNAL", help="the signal's name, e.g. shop.order_placed")
    send.add_argument("pairs", nargs="*", metavar="key=value", help="keyword arguments (strings)")
    send.add_argument("--sender", metavar="NAME", help="the sender's name (default: None)")
    send.add_argument(
        "--json",
        metavar="OBJECT",
        help="more keyword arguments as a JSON object, e.g. '{\"order_id\": 42}'",
    )
    _add_broker_options(send)
    send.set_defaults(handler=cmd_send)

    monitor = commands.add_parser(
        "monitor",
        help="show every signal on a namespace",
        description="A live, decoded tail of every signal sent on a namespace, until interrupted.",
    )
    monitor.add_argument(
        "--signal",
        action="append",
        metavar="NAME",
        help="only this signal (repeatable; default: all)",
    )
    monitor.add_argument("--json", action="store_true", help="one JSON object a line")
    monitor.add_argument(
        "--count", type=int, metavar="N", help="exit after N messages (default: never)"
    )
    _add_broker_options(monitor)
    monitor.set_defaults(handler=cmd_monitor)

    workers = commands.add_parser(
        "workers",
        help="list the processes on a namespace",
        description="Every process whose bridge heartbeats on the namespace, alive or gone "
        "in the last hour, from its last heartbeat.",
    )
    workers.add_argument("--json", action="store_true", help="a JSON array of the workers")
    _add_broker_options(workers)
    workers.set_defaults(handler=cmd_workers)

    dashboard = commands.add_parser(
        "dashboard",
        help="a live dashboard of a namespace in the browser",
        description="Serve a page that shows the workers of a namespace, their counters, "
        "per-signal rates and delivery latency, live.",
    )
    dashboard.add_argument("--port", type=int, default=8765, metavar="N", help="port (8765)")
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="address to serve on (127.0.0.1); any other needs --token",
    )
    dashboard.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get("RELAY_DASHBOARD_TOKEN"),
        help="a secret the page must present: open http://HOST:PORT/?token=TOKEN "
        "(default: $RELAY_DASHBOARD_TOKEN)",
    )
    _add_broker_options(dashboard)
    dashboard.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    dashboard.set_defaults(handler=cmd_dashboard)
    return parser


def fail(message: str) -> NoReturn:
    print(f"relay: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relay`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "send":
        # argparse fills the key=value list only up to the first option; the
        # pairs given after an option (``send SIG --sender X a=1``) are extra.
        args.pairs += [item for item in extra if not item.startswith("-")]
        extra = [item for item in extra if item.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.handler(args))
    except UsageError as exc:
        fail(str(exc))
    except TransportError as exc:
        fail(f"lost Redis: {exc}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
