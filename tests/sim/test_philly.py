"""The Philly loader: valid files load in submission order; every bad field names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_service.sim._philly import UNLISTED_VC, TraceError, load_philly

VCS = "vc,node num\na,2\nb,1\n"
JOBS_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"


def write_trace(folder: Path, jobs: str, vcs: str = VCS) -> Path:
    (folder / "philly_vc.csv").write_text(vcs, encoding="utf-8")
    (folder / "philly_jobs_2017-09_10.csv").write_text(JOBS_HEADER + jobs, encoding="utf-8")
    return folder


def test_loads_jobs_in_submission_order_relative_to_the_first(tmp_path: Path) -> None:
    folder = write_trace(
        tmp_path,
        "2017-10-01 00:01:00,60.0,2,120.0,b\n"
        "2017-10-01 00:00:00,30.0,1,30.0,a\n"
        "2017-10-01 00:02:00,10.0,16,160.0,zz\n",
    )
    trace = load_philly(folder)
    assert [(j.name, j.vc, j.submitted_seconds, j.gpus) for j in trace.jobs] == [
        ("job-00003", "a", 0.0, 1),
        ("job-00002", "b", 60.0, 2),
        ("job-00004", UNLISTED_VC, 120.0, 16),
    ]
    assert trace.unlisted_jobs == 1
    assert trace.vc_nodes == {"a": 2, "b": 1, UNLISTED_VC: 0}
    assert load_philly(folder, limit_jobs=1).jobs == trace.jobs[:1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2017-10-01,30.0,1,30.0,a", "timestamp must be YYYY-MM-DD HH:MM:SS"),
        ("2017-10-01 00:00:00,-3,1,30.0,a", "duration must be a finite number > 0"),
        ("2017-10-01 00:00:00,30.0,0,30.0,a", "num_gpus must be >= 1"),
        ("2017-10-01 00:00:00,30.0,x,30.0,a", "num_gpus must be an integer"),
        ("2017-10-01 00:00:00,30.0,2,30.0,a", "gpu_time 30 is not duration x num_gpus (60)"),
        ("2017-10-01 00:00:00,30.0,1,30.0,", "cluster (the VC) must not be empty"),
        ("2017-10-01 00:00:00,30.0,1,30.0", "expected 5 fields, got 4"),
    ],
)
def test_bad_job_fields_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    folder = write_trace(tmp_path, f"2017-10-01 00:00:00,30.0,1,30.0,a\n{line}\n")
    with pytest.raises(TraceError) as error:
        load_philly(folder)
    assert str(error.value).startswith(f"{folder / 'philly_jobs_2017-09_10.csv'}:3: {message}")


@pytest.mark.parametrize(
    ("vcs", "message"),
    [
        ("vc,nodes\na,1\n", ":1: expected the header 'vc,node num', found 'vc,nodes'"),
        ("vc,node num\na,1\na,2\n", ":3: vc 'a' is listed twice"),
        ("vc,node num\na,0\n", ":2: node num must be >= 1, got 0"),
        ("vc,node num\n", ": lists no virtual cluster"),
    ],
)
def test_bad_vc_files_are_rejected(tmp_path: Path, vcs: str, message: str) -> None:
    folder = write_trace(tmp_path, "", vcs)
    with pytest.raises(TraceError) as error:
        load_philly(folder)
    assert str(error.value) == f"{folder / 'philly_vc.csv'}{message}"


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"philly_vc\.csv: cannot read"):
        load_philly(tmp_path)
