"""A private AIRFLOW_HOME for the tests, set before Airflow is first imported.

Airflow reads AIRFLOW_HOME once, when it is imported, and creates `logs/` there (by default in
`~/airflow`, where a developer's own `airflow.cfg` or `airflow_local_settings.py`, e.g. a pod
mutation hook, would change what the tests see). Import this module before anything that
imports Airflow; the directory is removed when the interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["AIRFLOW_HOME"]

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="aistack-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
