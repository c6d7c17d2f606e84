"""A Kubernetes client as kubectl would make it: kubeconfig and context, or in-cluster."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.config.config_exception import ConfigException

__all__ = ["ConnectError", "connect"]


class ConnectError(RuntimeError):
    """No usable Kubernetes credentials; the message says where they were looked for."""


def connect(kubeconfig: Path | None, context: str | None) -> tuple[ApiClient, str]:
    """A client and the namespace of the chosen context ("default" when it names none).

    Looks where kubectl looks: `kubeconfig`, else $KUBECONFIG, else ~/.kube/config; inside a pod
    with none of those, the pod's service account.
    """
    path = kubeconfig or _default_kubeconfig()
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        namespace_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
        return ApiClient(), namespace
    if path is None:
        raise ConnectError(
            "no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
        )
    try:
        client: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context
        )
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(path)
        )
        chosen = next((c for c in contexts if c["name"] == context), active)
    except (ConfigException, OSError, ValueError) as error:
        raise ConnectError(f"kubeconfig {path}: {error}") from error
    namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    return client, namespace


def _default_kubeconfig() -> Path | None:
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return Path(listed.split(os.pathsep)[0])
    home = Path.home() / ".kube" / "config"
    return home if home.exists() else None
