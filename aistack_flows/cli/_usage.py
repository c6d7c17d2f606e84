"""`aistack report usage`: GPU-hours per queue, namespace or user, from the scheduler service.

Unlike the other author commands, which read Kubernetes objects, the records behind a usage
report live in the service (its accounting store), so this one asks the service's API
(`GET /api/v1/usage`) with a Kubernetes bearer token; the service applies the caller's RBAC, as
the API does for every request (docs/api.md, docs/usage-report.md).

    aistack report usage --since 30d --by queue -o csv --server https://localhost:8443
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import urllib3

from aistack_flows.cli._connect import ConnectError, connect
from aistack_flows.cli._output import table

__all__ = ["add_report_commands", "run_usage"]

_SERVER_ENV = "AISTACK_SERVER"
_TOKEN_ENV = "AISTACK_TOKEN"
_NO_SERVER = (
    "where is the scheduler service? pass --server (or set $AISTACK_SERVER) to the address of "
    "its API, e.g. after `kubectl -n aistack-system port-forward service/aistack 8443:443`: "
    "--server https://localhost:8443"
)
_TIMEOUT_SECONDS = 30


def add_report_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `report usage` to the `aistack` parser."""
    report = commands.add_parser(
        "report",
        help="reports from the scheduler service's accounting records",
        description="Reports from the scheduler service's accounting records (like Slurm's "
        "sreport).",
    )
    kinds = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    usage = kinds.add_parser(
        "usage",
        help="GPU-hours allocated (and used, where measured) per queue, namespace or user",
        description="GPU-hours allocated (and used, where measured) over a period, per queue, "
        "namespace or user. Times: 30d, 12h, 2w (before now), now, 2026-05-01, an RFC 3339 "
        "time, or Unix seconds.",
    )
    usage.add_argument("--since", default="30d", help="start of the period (default 30d)")
    usage.add_argument("--until", help="end of the period (default now)")
    usage.add_argument(
        "--by", choices=("queue", "namespace", "user"), default="queue", help="one row per ..."
    )
    usage.add_argument("-n", "--namespace", help="only workloads of this namespace")
    usage.add_argument(
        "-o", "--output", choices=("table", "csv", "json"), default="table", help="format"
    )
    usage.add_argument(
        "--server", default=os.environ.get(_SERVER_ENV), help="the service's API ($AISTACK_SERVER)"
    )
    usage.add_argument(
        "--token",
        default=os.environ.get(_TOKEN_ENV),
        help="a Kubernetes bearer token ($AISTACK_TOKEN; default: the kubeconfig's, if it has one)",
    )
    usage.add_argument("--kubeconfig", type=Path, help="kubeconfig to take the token from")
    usage.add_argument("--context", help="kubeconfig context to take the token from")
    usage.add_argument(
        "--certificate-authority", type=Path, help="CA file that signed the service's certificate"
    )
    usage.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="do not check the service's certificate",
    )
    usage.set_defaults(run=run_usage)


class _UsageError(Exception):
    """The report could not be had; the message says why and what to do."""


def run_usage(args: argparse.Namespace) -> int:
    """`aistack report usage`: 0; 1 when the service refused or could not be reached."""
    try:
        body = _fetch(args)
    except _UsageError as error:
        print(f"aistack: error: {error}", file=sys.stderr)
        return 1
    if args.output == "csv":
        print(body, end="")
        return 0
    report = json.loads(body)
    print(json.dumps(report, indent=2) if args.output == "json" else usage_table(report))
    return 0


def usage_table(report: dict[str, Any]) -> str:
    """The report as people read it: a title line, one row per key, the total last."""
    from_, to = (_when(report["since"]), _when(report["until"]))
    rows = [*report["rows"], report["total"]]
    lines = [f"GPU usage by {report['by']}, {from_} to {to}", ""]
    lines.append(
        table(
            [report["by"], "allocated gpu-hours", "used gpu-hours", "workloads"],
            [
                [
                    row["key"] or "(unknown)",
                    f"{row['allocated_gpu_hours']:.2f}",
                    None if row["used_gpu_hours"] is None else f"{row['used_gpu_hours']:.2f}",
                    row["workloads"],
                ]
                for row in rows
            ],
        )
    )
    if report.get("truncated"):
        lines.append("(only the largest rows are listed; the total counts them all)")
    return "\n".join(lines)


def _when(seconds: float) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415 - only the table needs it

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _token(args: argparse.Namespace) -> str | None:
    """--token, else the bearer token of the kubeconfig's user (none: no token is sent)."""
    if args.token:
        return str(args.token)
    try:
        client, _ = connect(args.kubeconfig, args.context)
    except ConnectError:
        return None
    with client:
        found = client.configuration.api_key.get("authorization") or ""
    return found.removeprefix("Bearer ").strip() or None


def _fetch(args: argparse.Namespace) -> str:
    if not args.server:
        raise _UsageError(_NO_SERVER)
    query = {
        "since": args.since,
        "by": args.by,
        "format": "csv" if args.output == "csv" else "json",
    }
    if args.until:
        query["until"] = args.until
    if args.namespace:
        query["namespace"] = args.namespace
    url = f"{args.server.rstrip('/')}/api/v1/usage?{urllib.parse.urlencode(query)}"
    headers = {"Accept": "text/csv" if args.output == "csv" else "application/json"}
    token = _token(args)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    context = ssl.create_default_context(
        cafile=str(args.certificate_authority) if args.certificate_authority else None
    )
    if args.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    pool = urllib3.PoolManager(ssl_context=context, timeout=_TIMEOUT_SECONDS, retries=False)
    try:
        response = pool.request("GET", url, headers=headers)
    except urllib3.exceptions.HTTPError as error:
        raise _UsageError(f"cannot reach the scheduler service at {args.server}: {error}") from None
    text = response.data.decode("utf-8", errors="replace")
    if response.status != 200:
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text.strip()[:300] or response.reason
        raise _UsageError(f"the scheduler service answered {response.status}: {message}")
    return text
