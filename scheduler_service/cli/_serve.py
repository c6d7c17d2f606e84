"""`aistack serve`: run the scheduler service against a Kubernetes cluster."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from scheduler_service.kube import (
    ServeOptions,
    SettingsError,
    load_settings,
    serve,
    with_accounting_url,
)
from scheduler_service.kube._driver import signing_key

__all__ = ["add_serve_parser", "run_serve_command"]


def add_serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serve` command to the `aistack` parser."""
    serve = commands.add_parser(
        "serve",
        help="run the scheduler service on a Kubernetes cluster",
        description="Watch GPU pods, admit them by queue and quota, and serve the API, the "
        "admission webhooks (HTTPS) and metrics (HTTP). In a pod it uses the service account; "
        "elsewhere pass --kubeconfig.",
    )
    serve.add_argument("--config", type=Path, help="settings YAML (default: built-in defaults)")
    serve.add_argument("--tls-cert", type=Path, required=True, help="serving certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, required=True, help="its private key (PEM)")
    serve.add_argument("--port", type=int, default=8443, help="HTTPS port (default 8443)")
    serve.add_argument("--metrics-port", type=int, default=9090, help="metrics and probes port")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster)")
    serve.add_argument(
        "--webhook-port",
        type=int,
        help="serve the admission webhooks on this port, not --port (with --webhook-client-ca)",
    )
    serve.add_argument(
        "--webhook-client-ca",
        type=Path,
        help="CA (PEM) of the client certificate the API server presents to webhooks: on "
        "--webhook-port only its clients get through (docs/security.md)",
    )
    serve.add_argument(
        "--accounting-url",
        default=os.environ.get("AISTACK_ACCOUNTING_URL") or None,
        help="accounting store, sqlite:///<path> or postgresql://... (default: the settings' "
        "accounting.url; $AISTACK_ACCOUNTING_URL)",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    serve.set_defaults(run=run_serve_command)


def run_serve_command(args: argparse.Namespace) -> int:
    """Validate the settings and serve until interrupted; 2 for bad settings or files."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        settings = load_settings(args.config)
        if args.accounting_url:
            settings = with_accounting_url(settings, args.accounting_url)
        signing_key(settings.allocation_key_file)  # unreadable or short: refused now
    except SettingsError as error:
        print(f"aistack serve: error: {error}", file=sys.stderr)
        return 2
    if (args.webhook_port is None) != (args.webhook_client_ca is None):
        print(
            "aistack serve: error: give --webhook-port and --webhook-client-ca together (a "
            "webhook port open to any client would protect nothing)",
            file=sys.stderr,
        )
        return 2
    if args.webhook_port is not None and args.webhook_port in {args.port, args.metrics_port}:
        print(
            f"aistack serve: error: --webhook-port {args.webhook_port} is taken by --port or "
            "--metrics-port; choose another",
            file=sys.stderr,
        )
        return 2
    for path in (args.tls_cert, args.tls_key, args.kubeconfig, args.webhook_client_ca):
        if path is not None and not path.is_file():
            print(f"aistack serve: error: {path} does not exist or is not a file", file=sys.stderr)
            return 2
    options = ServeOptions(
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        port=args.port,
        metrics_port=args.metrics_port,
        host=args.host,
        kubeconfig=args.kubeconfig,
        webhook_port=args.webhook_port,
        webhook_client_ca=args.webhook_client_ca,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(settings, options)
    return 0
