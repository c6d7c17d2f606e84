"""Hera's pre-build hooks: every Hera workflow that mentions the scheduler is managed on build.

Hera calls the hooks registered for a class (by the hook's return annotation, which is why this
module does not use `from __future__ import annotations`) at the start of `build()`, which
`to_dict()`, `to_yaml()` and `create()` all go through. The hook builds the workflow as Hera
would, manages the manifest (`manage`) and hands Hera back an equal workflow made from it with
Hera's own `from_dict`, so Hera's mapping of every other field stays Hera's. A workflow that
never mentions the scheduler is returned untouched.

Importing `aistack_flows` registers the hooks once; they hold no state.
"""

import contextvars
from typing import TypeVar

from hera.shared import register_pre_build_hook
from hera.workflows import ClusterWorkflowTemplate, CronWorkflow, Workflow, WorkflowTemplate

from aistack_flows._manage import manage, uses_scheduler

__all__: list[str] = []

_W = TypeVar("_W", Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow)

_inside = contextvars.ContextVar("aistack_flows_building", default=False)
"""Set while the hook builds the author's workflow, whose own build calls the hook again."""


def _managed(workflow: _W) -> _W:
    if _inside.get():
        return workflow
    token = _inside.set(True)
    try:
        manifest = workflow.to_dict()
    finally:
        _inside.reset(token)
    if not uses_scheduler(manifest):
        return workflow
    rebuilt = type(workflow).from_dict(manage(manifest))
    assert isinstance(rebuilt, type(workflow))
    return rebuilt


@register_pre_build_hook
def _manage_workflow(workflow: Workflow) -> Workflow:
    return _managed(workflow)


@register_pre_build_hook
def _manage_workflow_template(workflow: WorkflowTemplate) -> WorkflowTemplate:
    return _managed(workflow)


@register_pre_build_hook
def _manage_cluster_workflow_template(
    workflow: ClusterWorkflowTemplate,
) -> ClusterWorkflowTemplate:
    return _managed(workflow)


@register_pre_build_hook
def _manage_cron_workflow(workflow: CronWorkflow) -> CronWorkflow:
    return _managed(workflow)
