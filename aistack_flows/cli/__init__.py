"""The pipeline author's commands, which read like kubectl and argo.

    aistack submit FILE...       build (Hera .py, or YAML) and create on the cluster
    aistack render FILE...       the managed manifests as YAML (for GitOps), nothing created
    aistack list                 workflows: phase, queue, GPU steps waiting and running
    aistack status WORKFLOW      each step: state, queue, GPUs asked or held, why it waits
    aistack explain WORKFLOW     the scheduler's reasons with numbers, attempts and evictions
    aistack queues               quota, used, borrowed and waiting GPUs per queue and pool
    aistack report usage         GPU-hours per queue, namespace or user (from the service)

They talk to the Kubernetes API with the user's kubeconfig (RBAC applies), except `submit
--argo-server`, which goes through Argo Server as Hera's `create()` does, and `report usage`,
which asks the scheduler service's API (`--server`) with the user's bearer token. Tables for people,
`-o json|yaml` for scripts. Exit status: 0; 1 when the cluster refused or could not be reached;
2 for a usage error, a file that is not a pipeline, or a pipeline that cannot run as written.
"""

from aistack_flows.cli._commands import add_author_commands

__all__ = ["add_author_commands"]
