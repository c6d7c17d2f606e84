"""Gangs in Argo: a name per run, step and attempt; one pod per rank; how members find rank 0.

A gang step is one template fanned out N times (`withSequence`), each pod a rank. Argo builds
each member's pod from the same template, so everything that must differ per member comes in as
the input parameter `aistack-gang-rank` (Argo's `{{item}}` exists only where the step is called),
and everything the members share is computed from what Argo knows when it makes the pod:

- the gang's name hashes the workflow's uid and the fan-out's node name (each member's node name
  without its "(rank:rank)" suffix), so two runs of a workflow, or the same template fanned out
  from two places, never pair their pods; with a retry strategy, `{{retries}}` is appended, so
  the members of a retried attempt form a new gang instead of joining the old one;
- each member gets a hostname `<gang>-<rank>` under the `aistack-gang` headless Service (the
  service creates it), so MASTER_ADDR `<gang>-0.aistack-gang` reaches rank 0.

The hash is an Argo expression (`{{=...}}`, evaluated with sprig), resolved by the
workflow-controller when it creates the pod.
"""

from __future__ import annotations

from typing import Any

from scheduler_service import pod_contract as contract

__all__ = [
    "FAN_OUT_NODE",
    "MASTER_PORT",
    "RANK_PARAMETER",
    "gang_environment",
    "gang_name",
    "gang_pod_spec",
]

RANK_PARAMETER = "aistack-gang-rank"
"""The input parameter that carries a member's rank (`{{item}}` of the fan-out)."""

MASTER_PORT = 29500
"""The port rank 0 listens on for rendezvous (PyTorch's default)."""

_MEMBER_SUFFIX = "[(][0-9]+:[0-9]+[)]$"
"""A fan-out member's node name ends with "(rank:rank)" (its index and its item, equal here)."""

FAN_OUT_NODE = f"sprig.regexReplaceAll('{_MEMBER_SUFFIX}', node.name, '')"
"""An Argo expression: the node name of the fan-out a member belongs to (the same for all)."""
_RANK = f"{{{{inputs.parameters.{RANK_PARAMETER}}}}}"


def gang_name(*, retried: bool) -> str:
    """The gang label's value: 16 hex digits of the run and fan-out, then the attempt."""
    name = f"{{{{=sprig.trunc(16, sprig.sha256sum(workflow.uid + '/' + {FAN_OUT_NODE}))}}}}"
    return f"{name}-{{{{retries}}}}" if retried else name


def gang_environment(*, size: str, retried: bool) -> list[dict[str, str]]:
    """What each member reads: its rank, the gang's size, and where rank 0 listens.

    The `PET_` variables are torchrun's defaults for its flags, so `torchrun train.py` needs no
    arguments; MASTER_ADDR/MASTER_PORT serve `torch.distributed` and other launchers.
    """
    name = gang_name(retried=retried)
    master = f"{name}-0.{contract.GANG_SUBDOMAIN}"
    values = {
        "AISTACK_GANG_NAME": name,
        "AISTACK_GANG_RANK": _RANK,
        "AISTACK_GANG_SIZE": size,
        "MASTER_ADDR": master,
        "MASTER_PORT": str(MASTER_PORT),
        "PET_NNODES": size,
        "PET_NODE_RANK": _RANK,
        "PET_MASTER_ADDR": master,
        "PET_MASTER_PORT": str(MASTER_PORT),
    }
    return [{"name": key, "value": value} for key, value in values.items()]


def gang_pod_spec(*, retried: bool) -> dict[str, Any]:
    """The pod-spec fields that give a member its DNS name `<gang>-<rank>.aistack-gang`."""
    return {
        "hostname": f"{gang_name(retried=retried)}-{_RANK}",
        "subdomain": contract.GANG_SUBDOMAIN,
    }
