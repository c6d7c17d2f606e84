"""The author's commands: arguments in, one request or a few to Kubernetes, a report out.

Each `run_*` returns the exit status and prints the answer; errors go to stderr as one line
that says what was wrong and what to do (see the package docstring for the statuses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from aistack_flows._errors import PipelineError
from aistack_flows._load import LoadError, Pipeline, load_pipelines
from aistack_flows._submit import (
    ARGO_GROUP,
    ARGO_VERSION,
    Submitted,
    render,
    submit,
    submit_to_argo,
)
from aistack_flows.cli._connect import ConnectError, connect
from aistack_flows.cli._local import add_local_options, add_run_commands, run_local
from aistack_flows.cli._output import FORMATS, emit, table
from aistack_flows.cli._report import (
    StepRow,
    pods_by_workflow,
    queue_rows,
    step_rows,
    workflow_row,
)
from aistack_flows.cli._usage import add_report_commands
from aistack_flows.local import DashboardServer
from scheduler_service import pod_contract as contract

__all__ = ["add_author_commands"]

Json = dict[str, Any]

_SERVICE_COMPONENT = "aistack-scheduler"
"""The event source the scheduler service writes (its evictions, on pods and workflows)."""


def add_author_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    serve_dashboard: Callable[[int], DashboardServer] | None = None,
) -> None:
    """Add submit, render, list, status, explain, queues, report, run and logs to `aistack`.

    `serve_dashboard` starts the dashboard's pages for `aistack run --dashboard` (the service's
    package passes them in: this package does not import the service's web app).
    """
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default as kubectl)")
    cluster.add_argument("--context", help="kubeconfig context (default: the current one)")
    cluster.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    cluster.add_argument("-o", "--output", choices=FORMATS, default="table", help="format")

    submit_ = commands.add_parser(
        "submit",
        parents=[cluster],
        help="build pipelines (Hera .py or YAML) and create them on the cluster",
        description="Build each pipeline the files define, with its GPU steps managed, and "
        "create it: with the Kubernetes API, or through Argo Server with --argo-server.",
    )
    submit_.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit_.add_argument("--argo-server", metavar="URL", help="submit through Argo Server")
    submit_.add_argument(
        "--token", help="Argo Server bearer token (default: $ARGO_TOKEN)", default=None
    )
    submit_.add_argument(
        "--insecure-skip-tls-verify", action="store_true", help="do not check Argo Server's TLS"
    )
    submit_.set_defaults(run=run_submit)

    render_ = commands.add_parser(
        "render",
        help="print the managed manifests as YAML (for GitOps); nothing is created",
        description="Build each pipeline the files define, with its GPU steps managed, and "
        "print the manifests as one YAML stream.",
    )
    render_.add_argument("files", nargs="+", type=Path, metavar="FILE")
    render_.set_defaults(run=run_render)

    list_ = commands.add_parser("list", parents=[cluster], help="list workflows")
    list_.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    add_local_options(list_, flag=True)
    list_.set_defaults(run=_or_local(run_list))

    for name, run, text in (
        ("status", run_status, "each step: state, queue, GPUs asked or held, why it waits"),
        ("explain", run_explain, "the scheduler's reasons for each GPU step, with numbers"),
    ):
        parser = commands.add_parser(name, parents=[cluster], help=text, description=text)
        parser.add_argument("workflow", metavar="WORKFLOW")
        add_local_options(parser, flag=True)
        parser.set_defaults(run=_or_local(run))

    queues = commands.add_parser(
        "queues", parents=[cluster], help="quota, used, borrowed and waiting GPUs per queue"
    )
    queues.set_defaults(run=run_queues)
    add_report_commands(commands)
    add_run_commands(commands, serve_dashboard=serve_dashboard)


def _or_local(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command on a cluster, or on the local runner's state with `--local`."""

    def either(args: argparse.Namespace) -> int:
        return run_local(args) if args.local else command(args)

    return either


# -- running one ----------------------------------------------------------------------------------


def _fail(message: str, status: int) -> int:
    print(f"aistack: error: {message}", file=sys.stderr)
    return status


class _NotFoundError(Exception):
    """What the user named is not there; the message says where to look."""


def _guarded(action: Callable[[], int]) -> int:
    """Run `action`, turning the ways the cluster or the files fail into one line and a status."""
    try:
        return action()
    except (LoadError, PipelineError) as error:
        return _fail(str(error), 2)
    except (ConnectError, _NotFoundError) as error:
        return _fail(str(error), 1)
    except ApiException as error:
        return _fail(_api_message(error), 1)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        return _fail(f"cannot reach the cluster: {error}", 1)


def _api_message(error: ApiException) -> str:
    try:
        detail = json.loads(error.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        detail = error.reason
    return f"the API server answered {error.status}: {detail}"


def _client(args: argparse.Namespace) -> tuple[ApiClient, str]:
    client, namespace = connect(args.kubeconfig, args.context)
    return client, args.namespace or namespace


def _pipelines(files: Iterable[Path]) -> list[Pipeline]:
    return [p for path in files for p in load_pipelines(path)]


def run_render(args: argparse.Namespace) -> int:
    """`aistack render FILE...`."""

    def action() -> int:
        print(render(_pipelines(args.files)), end="")
        return 0

    return _guarded(action)


def run_submit(args: argparse.Namespace) -> int:
    """`aistack submit FILE...`: every pipeline is built (and checked) before any is created."""

    def action() -> int:
        pipelines = _pipelines(args.files)
        for pipeline in pipelines:
            pipeline.to_dict()  # a PipelineError stops them all before the first is created
        done: list[Submitted] = []
        if args.argo_server:
            namespace = args.namespace or "default"
            token = args.token or os.environ.get("ARGO_TOKEN")
            done += [
                submit_to_argo(
                    p,
                    host=args.argo_server,
                    token=token,
                    namespace=namespace,
                    verify_ssl=not args.insecure_skip_tls_verify,
                )
                for p in pipelines
            ]
        else:
            client, namespace = _client(args)
            with client:
                done += [submit(p, client, namespace=namespace) for p in pipelines]
        print(emit(done, args.output, lambda: "\n".join(str(s) for s in done)))
        return 0

    return _guarded(action)


def run_list(args: argparse.Namespace) -> int:
    """`aistack list`."""

    def action() -> int:
        client, namespace = _client(args)
        with client:
            custom, core = CustomObjectsApi(client), CoreV1Api(client)
            selector = "workflows.argoproj.io/workflow"
            workflows: Any
            pods: Any
            if args.all_namespaces:
                workflows = custom.list_cluster_custom_object(ARGO_GROUP, ARGO_VERSION, "workflows")
                pods = core.list_pod_for_all_namespaces(
                    label_selector=selector, _preload_content=False
                )
            else:
                workflows = custom.list_namespaced_custom_object(
                    ARGO_GROUP, ARGO_VERSION, namespace, "workflows"
                )
                pods = core.list_namespaced_pod(
                    namespace, label_selector=selector, _preload_content=False
                )
        grouped = pods_by_workflow(json.loads(pods.data)["items"])
        now = time.time()
        rows = [
            workflow_row(w, grouped.get(w["metadata"]["name"], ()), now)
            for w in sorted(workflows["items"], key=lambda w: w["metadata"]["name"])
        ]
        headers = ["namespace", "name", "status", "queue", "waiting", "running", "age", "message"]

        def as_table() -> str:
            chosen = headers if args.all_namespaces else headers[1:]
            values = [
                [r.namespace, r.name, r.phase, r.queue, r.waiting, r.running, r.age, r.message]
                for r in rows
            ]
            offset = 0 if args.all_namespaces else 1
            return table(chosen, [v[offset:] for v in values])

        print(emit(rows, args.output, as_table))
        return 0

    return _guarded(action)


def _workflow_and_pods(args: argparse.Namespace) -> tuple[Json, list[Json], list[Json]]:
    """The workflow, its pods and the scheduler's events about it (or its pods)."""
    client, namespace = _client(args)
    with client:
        custom, core = CustomObjectsApi(client), CoreV1Api(client)
        try:
            workflow: Any = custom.get_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, namespace, "workflows", args.workflow
            )
        except ApiException as error:
            if error.status == 404:
                raise _NotFoundError(
                    f"no workflow {args.workflow!r} in namespace {namespace!r}; "
                    "`aistack list` shows the workflows there"
                ) from None
            raise
        selector = f"workflows.argoproj.io/workflow={args.workflow}"
        pods: Any = core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        events: Any = core.list_namespaced_event(
            namespace, field_selector=f"source={_SERVICE_COMPONENT}", _preload_content=False
        )
    pod_list: list[Json] = json.loads(pods.data)["items"]
    names = {args.workflow} | {p["metadata"]["name"] for p in pod_list}
    ours = [
        e
        for e in json.loads(events.data)["items"]
        if (e.get("involvedObject") or {}).get("name") in names
    ]
    ours.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return workflow, pod_list, ours


def _step_table(rows: Sequence[StepRow]) -> str:
    return table(
        ["step", "state", "queue", "gpus", "node", "message"],
        [[r.step, r.state, r.queue, r.gpus, r.node, r.message] for r in rows],
    )


def run_status(args: argparse.Namespace) -> int:
    """`aistack status WORKFLOW`."""

    def action() -> int:
        workflow, pods, _ = _workflow_and_pods(args)
        rows = step_rows(workflow, pods)
        status = workflow.get("status") or {}
        header = (
            f"Workflow {workflow['metadata']['namespace']}/{workflow['metadata']['name']}: "
            f"{status.get('phase') or 'Pending'}"
        )
        data = {
            "workflow": workflow["metadata"]["name"],
            "phase": status.get("phase"),
            "steps": rows,
        }
        print(emit(data, args.output, lambda: header + "\n\n" + _step_table(rows)))
        return 0

    return _guarded(action)


def run_explain(args: argparse.Namespace) -> int:
    """`aistack explain WORKFLOW`: GPU steps only; each with its reason, attempts and events."""

    def action() -> int:
        workflow, pods, events = _workflow_and_pods(args)
        rows = [r for r in step_rows(workflow, pods) if r.queue != "-"]
        data = {"workflow": workflow["metadata"]["name"], "steps": rows, "events": events}
        print(emit(data, args.output, lambda: _explanation(workflow, rows, events)))
        return 0

    return _guarded(action)


def _explanation(workflow: Json, rows: Sequence[StepRow], events: Sequence[Json]) -> str:
    metadata = workflow["metadata"]
    lines = [f"Workflow {metadata['namespace']}/{metadata['name']}"]
    if not rows:
        lines.append("  no step asks the scheduler for GPUs")
    for row in rows:
        gang = f", gang {row.gang}" if row.gang else ""
        lines += ["", f"{row.step}: {row.state} in queue {row.queue}, {row.gpus}{gang}"]
        if row.node != "-":
            lines.append(f"  on node {row.node}")
        if row.message:
            lines.append(f"  {'why' if row.state == 'Waiting' else 'last'}: {row.message}")
        if len(row.attempts) > 1:
            lines.append("  attempts:")
            lines += [f"    #{a.number} {a.phase}: {a.message}".rstrip(": ") for a in row.attempts]
    if events:
        lines += ["", "Scheduler events:"]
        for event in events:
            when = event.get("lastTimestamp") or event.get("eventTime") or ""
            target = (event.get("involvedObject") or {}).get("name")
            lines.append(f"  {when}  {event.get('reason')}  {target}: {event.get('message')}")
    return "\n".join(lines)


def run_queues(args: argparse.Namespace) -> int:
    """`aistack queues`."""

    def action() -> int:
        client, _ = _client(args)
        with client:
            found: Any = CustomObjectsApi(client).list_cluster_custom_object(
                contract.GROUP, contract.QUEUE_VERSION, contract.QUEUE_PLURAL
            )
        rows = queue_rows(found["items"])
        headers = [
            "queue", "parent", "pool", "quota", "limit", "fair share",
            "used", "borrowed", "waiting", "pending",
        ]  # fmt: skip

        def as_table() -> str:
            return table(
                headers,
                [
                    [
                        r.queue,
                        r.parent,
                        r.pool,
                        r.quota,
                        r.limit,
                        r.fair_share,
                        r.used,
                        r.borrowed,
                        r.waiting,
                        r.pending_workloads,
                    ]
                    for r in rows
                ],
            )

        print(emit(rows, args.output, as_table))
        return 0

    return _guarded(action)
