"""The Grafana dashboard queries only metrics the service and the node agents export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "aistack-scheduler.json"
_NAME = re.compile(r"\baistack_[a-z_]+")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def exported() -> set[str]:
    """Every metric name the code registers (the first argument of a metric's constructor)."""
    names = set()
    for path in (ROOT / "scheduler_service").rglob("*.py"):
        names |= set(re.findall(r'"(aistack_[a-z_]+)"', path.read_text()))
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def test_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported()

    used = {name for expr in queries(dashboard) for name in _NAME.findall(expr)}
    unknown = set()
    for name in used:
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
        if name not in known and base not in known:
            unknown.add(name)
    assert unknown == set()
    assert {"aistack_pool_allocated_gpus", "aistack_gpu_pod_memory_used_bytes"} <= used


def test_every_panel_reads_the_chosen_data_source_and_has_a_unique_id() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]

    assert {p["datasource"]["uid"] for p in panels} == {"${datasource}"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] for p in panels)
