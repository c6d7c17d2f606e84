"""Rendering the chart with the real `helm` binary, and finding objects in what it renders.

`bin/helm` is built by `scripts/build-test-binaries`; without it every test that renders fails
(it does not skip: a chart that is never rendered is never tested).
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm" / "aistack"
CRD = CHART / "crds" / "queues.aistack.io.yaml"
HELM = ROOT / "bin" / "helm"
TESTDATA = Path(__file__).parent / "testdata"

RELEASE = "aistack"
"""Release name of every render; the chart's full name is then "aistack" too."""
NAMESPACE = "aistack-system"
KUBE_VERSION = "1.33.0"
"""Given explicitly: a `go install`ed helm, without the Makefile's ldflags, assumes 1.20."""

Manifest = dict[str, Any]


class RenderError(Exception):
    """`helm template` refused the values; the message is helm's stderr."""


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `bin/helm` with `args`; fail the test when the binary has not been built."""
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(ROOT)} is missing: run scripts/build-test-binaries")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, check=False, timeout=60
    )


def _template_args(values_files: Iterable[Path], set_json: Iterable[str]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in set_json:
        args += ["--set-json", assignment]
    return args


@functools.cache
def _render_text(values_files: tuple[Path, ...], set_json: tuple[str, ...]) -> str:
    result = helm(*_template_args(values_files, set_json))
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def render_text(*values_files: Path, set_json: Iterable[str] = ()) -> str:
    """The chart rendered by `helm template` with these values; RenderError if refused.

    `set_json` items are `--set-json` assignments (`'replicas=1'`, `'config.api.auth=false'`).
    Renders are cached per argument list: a test must not mutate what it gets.
    """
    return _render_text(tuple(values_files), tuple(set_json))


def render(*values_files: Path, set_json: Iterable[str] = ()) -> list[Manifest]:
    """The rendered objects, parsed; empty documents dropped."""
    text = render_text(*values_files, set_json=set_json)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_error(*values_files: Path, set_json: Iterable[str] = ()) -> str:
    """Helm's message when it refuses these values; fails the test if it renders them."""
    try:
        render_text(*values_files, set_json=set_json)
    except RenderError as exc:
        return str(exc)
    pytest.fail(f"helm rendered values it should refuse: {list(set_json)} {list(values_files)}")


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of `kind` (and `name`, when given); fails unless exactly one matches."""
    matches = kinds(manifests, kind, name)
    if len(matches) != 1:
        names = [m["metadata"]["name"] for m in matches]
        pytest.fail(f"expected one {kind} {name or ''}, rendered {len(matches)}: {names}")
    return matches[0]


def kinds(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Every object of `kind` (and `name`, when given)."""
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def container(manifests: Iterable[Manifest]) -> Manifest:
    """The scheduler container of the Deployment."""
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return dict(only)


def config_of(manifests: Iterable[Manifest]) -> Manifest:
    """The service's config.yaml, parsed from the ConfigMap."""
    text = find(manifests, "ConfigMap")["data"]["config.yaml"]
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


def sha256(text: str) -> str:
    """Hex SHA-256 of `text`, as Helm's `sha256sum`."""
    return hashlib.sha256(text.encode()).hexdigest()


_GENERATED = re.compile(
    r"^(\s*(?:tls\.crt|tls\.key|ca\.crt|caBundle|checksum/tls|allocation\.key): )\S+$",
    re.MULTILINE,
)


def normalise(text: str) -> str:
    """`text` with certificate material (and the allocation key) replaced by a placeholder.

    Helm generates a new CA, certificate and allocation key on every render (its `lookup`
    finds no Secret outside a cluster), so goldens compare everything but those bytes and the
    checksum of them that restarts the pods; the webhook tests check that they fit together.
    """
    return _GENERATED.sub(r"\1<certificate material>", text)


def expected_errors(queue_sample: Path) -> list[str]:
    """The `# expect: ...` lines atop a sample Queue: what the API server's refusal must say."""
    prefix = "# expect: "
    lines = queue_sample.read_text(encoding="utf-8").splitlines()
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
