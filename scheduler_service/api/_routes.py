"""The REST API under /api/v1: queues, workloads, nodes and explain, each checked against RBAC.

Rights follow the Kubernetes objects behind each answer: queues are the cluster-scoped Queue
objects (`queues.aistack.io`), workloads are pods (so a user sees workloads in the namespaces
where they may list pods), nodes are nodes. A user without a right gets a 403 that names it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from scheduler_service.api._contract import Permission
from scheduler_service.api._deps import AccessDep, ActionsDep, ViewDep
from scheduler_service.api._errors import ApiError, error_responses
from scheduler_service.api._models import Explanation, NodeView, QueueView, WorkloadView
from scheduler_service.api._views import ClusterView
from scheduler_service.core import Workload, WorkloadState

__all__ = ["router"]

_GROUP = "aistack.io"

router = APIRouter(prefix="/api/v1", responses=error_responses(401, 403, 503))

# Routes with parameters say so: FastAPI would otherwise document its own 422 body.
_NAMED = error_responses(404, 422)


@router.get("/queues", tags=["queues"], summary="List queues")
def list_queues(view: ViewDep, access: AccessDep) -> list[QueueView]:
    """Every queue of the tree with its quotas, fair share, usage and workload counts.

    Needs `list` on `queues.aistack.io`.
    """
    access.require(Permission("list", "queues", group=_GROUP))
    return view.queue_views()


@router.get("/queues/{name}", tags=["queues"], summary="Get a queue", responses=_NAMED)
def get_queue(name: str, view: ViewDep, access: AccessDep) -> QueueView:
    """One queue. Needs `get` on `queues.aistack.io`."""
    access.require(Permission("get", "queues", group=_GROUP, name=name))
    queue = view.queues.get(name)
    if queue is None:
        raise ApiError(404, f"no queue named {name!r}; list the queues with GET /api/v1/queues")
    return view.queue_view(queue, view.workload_counts())


@router.get(
    "/workloads", tags=["workloads"], summary="List workloads", responses=error_responses(422)
)
def list_workloads(
    view: ViewDep,
    access: AccessDep,
    *,
    namespace: Annotated[
        str | None, Query(description="Only workloads whose pods are in this namespace.")
    ] = None,
    queue: Annotated[str | None, Query(description="Only workloads of this leaf queue.")] = None,
    state: Annotated[
        WorkloadState | None, Query(description="Only workloads in this state.")
    ] = None,
    workflow: Annotated[
        str | None, Query(description="Only the steps of this Argo Workflow.", max_length=253)
    ] = None,
) -> list[WorkloadView]:
    """Workloads in the namespaces where the user may `list pods`, sorted by namespace and name.

    Naming a namespace the user may not list pods in is a 403; otherwise such namespaces are
    left out of the answer.
    """
    if namespace is not None:
        access.require(Permission("list", "pods", namespace=namespace))
    chosen = []
    for workload in view.workloads.values():
        if queue is not None and workload.queue != queue:
            continue
        if state is not None and workload.state is not state:
            continue
        pods = view.pods_of(workload.name)
        if workflow is not None and pods.workflow != workflow:
            continue
        if namespace is not None and pods.namespace != namespace:
            continue
        if access.can(Permission("list", "pods", namespace=pods.namespace)):
            chosen.append(workload)
    chosen.sort(key=lambda w: (view.pods_of(w.name).namespace, w.name))
    return [view.workload_view(w) for w in chosen]


@router.get(
    "/workflows/{namespace}/{name}",
    tags=["workloads"],
    summary="The GPU steps of an Argo Workflow",
    responses=_NAMED,
)
def get_workflow(namespace: str, name: str, view: ViewDep, access: AccessDep) -> list[WorkloadView]:
    """The workloads the scheduler knows of Argo Workflow `name`: its GPU steps.

    Each is pending (with its reason), running or evicting. The Argo UI's workflow link leads
    here. Needs `list pods` in the namespace.
    """
    access.require(Permission("list", "pods", namespace=namespace))
    found = [
        view.workload_view(w)
        for w in view.workloads.values()
        if view.pods_of(w.name).namespace == namespace and view.pods_of(w.name).workflow == name
    ]
    if not found:
        raise ApiError(
            404,
            f"no step of workflow {name!r} in namespace {namespace!r} waits or runs under the "
            "scheduler now: its GPU steps may be done or not created yet, or it has none "
            f"(`aistack status {name} -n {namespace}` shows every step)",
        )
    return sorted(found, key=lambda w: w.name)


def _find(view: ClusterView, namespace: str, name: str) -> Workload:
    workload = view.find_workload(namespace, name)
    if workload is None:
        raise ApiError(
            404,
            f"no workload or pod named {name!r} in namespace {namespace!r} is known to the "
            "scheduler; check the namespace, and that the pod is managed (it has the label "
            "aistack.io/queue); GET /api/v1/workloads lists what is known",
        )
    return workload


@router.get(
    "/workloads/{namespace}/{name}", tags=["workloads"], summary="Get a workload", responses=_NAMED
)
def get_workload(namespace: str, name: str, view: ViewDep, access: AccessDep) -> WorkloadView:
    """One workload, by its name or the name of any of its pods. Needs `get pods` there."""
    access.require(Permission("get", "pods", namespace=namespace))
    return view.workload_view(_find(view, namespace, name))


@router.delete(
    "/workloads/{namespace}/{name}",
    tags=["workloads"],
    summary="Delete a workload",
    status_code=204,
    response_class=Response,
    responses=_NAMED,
)
def delete_workload(
    namespace: str, name: str, view: ViewDep, access: AccessDep, actions: ActionsDep
) -> None:
    """Delete every pod of the workload; its creator (e.g. Argo) decides what follows.

    Named by the workload's name or the name of any of its pods. Needs `delete pods` there.
    """
    access.require(Permission("delete", "pods", namespace=namespace))
    workload = _find(view, namespace, name)
    try:
        actions.delete_workload(workload.name)
    except KeyError:
        raise ApiError(
            404,
            f"workload {workload.name!r} in namespace {namespace!r} is already gone; "
            "GET /api/v1/workloads lists what is left",
        ) from None


@router.get("/nodes", tags=["nodes"], summary="List nodes")
def list_nodes(view: ViewDep, access: AccessDep) -> list[NodeView]:
    """Every node, its GPUs, and the pods and slices on each GPU. Needs `list nodes`."""
    access.require(Permission("list", "nodes"))
    return view.node_views()


@router.get("/nodes/{name}", tags=["nodes"], summary="Get a node", responses=_NAMED)
def get_node(name: str, view: ViewDep, access: AccessDep) -> NodeView:
    """One node, its GPUs, and the pods and slices on each GPU. Needs `get nodes`."""
    access.require(Permission("get", "nodes", name=name))
    if name not in view.nodes:
        raise ApiError(
            404,
            f"no node named {name!r} is known to the scheduler (nodes without GPUs or outside "
            "every pool are not); list them with GET /api/v1/nodes",
        )
    return view.node_views([name])[0]


@router.get(
    "/explain/{namespace}/{pod}", tags=["explain"], summary="Explain a pod", responses=_NAMED
)
def explain(namespace: str, pod: str, view: ViewDep, access: AccessDep) -> Explanation:
    """Why the pod's workload is pending (in words and numbers), or where it runs and since when.

    Needs `get pods` in the namespace.
    """
    access.require(Permission("get", "pods", namespace=namespace, name=pod))
    owner = view.by_pod.get((namespace, pod))
    if owner is None or owner not in view.workloads:
        raise ApiError(
            404,
            f"pod {pod!r} in namespace {namespace!r} is not managed by the scheduler, has ended, "
            "or does not exist; a managed pod has the label aistack.io/queue (check with "
            f"`kubectl get pod {pod} -n {namespace} --show-labels`), and a pod the scheduler "
            "stopped says why in its status message",
        )
    return view.explain(namespace, pod, view.workloads[owner])
