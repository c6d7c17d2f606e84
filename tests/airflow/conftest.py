"""Airflow tests run against the real provider (the `airflow` extra), in a private AIRFLOW_HOME."""

from tests.airflow import home  # noqa: F401 (sets AIRFLOW_HOME before Airflow is imported)
