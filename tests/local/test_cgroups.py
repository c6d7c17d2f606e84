"""Cgroups against a fake cgroupfs of plain files, and detection on this machine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from aistack_flows.local._cgroups import Cgroups, Unsupported

OWN = "/user.slice/user-1000.slice/runner.scope"


def fake_cgroupfs(
    tmp_path: Path,
    *,
    own: str = OWN,
    controllers: str = "cpu io memory pids",
    procs: Sequence[int] = (101, 202),
) -> tuple[Path, Path]:
    """A cgroup v2 root with the runner's cgroup `own` in it; (root, the /proc/self/cgroup file)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    base = root / own.lstrip("/").removesuffix("/aistack-runner")
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text(f"{controllers}\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in procs))
    proc_self_cgroup = tmp_path / "proc-self-cgroup"
    proc_self_cgroup.write_text(f"1:name=systemd:/\n0::{own}\n")
    return root, proc_self_cgroup


def base_of(root: Path) -> Path:
    return root / OWN.lstrip("/")


def test_detect_moves_the_runners_cgroup_into_a_leaf_and_enables_the_controllers(
    tmp_path: Path,
) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path)

    found = Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup)

    base = base_of(root)
    assert found == Cgroups(base)
    assert (base / "aistack-runner" / "cgroup.procs").read_text().split() == ["101", "202"]
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory\n"


def test_detect_again_finds_everything_in_place(tmp_path: Path) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path)
    assert isinstance(Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup), Cgroups)
    base = base_of(root)
    # What the kernel shows once the controllers are on, and the runner now in its leaf.
    (base / "cgroup.subtree_control").write_text("cpu memory\n")
    (base / "cgroup.procs").write_text("")
    proc_self_cgroup.write_text(f"0::{OWN}/aistack-runner\n")

    assert Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup) == Cgroups(base)
    assert (base / "aistack-runner" / "cgroup.procs").read_text().split() == ["101", "202"]


def test_a_runner_started_in_its_leaf_works_one_level_up(tmp_path: Path) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path, own=f"{OWN}/aistack-runner", procs=())

    assert Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup) == Cgroups(base_of(root))


def test_cgroup_v1_is_unsupported(tmp_path: Path) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path)
    (root / "cgroup.controllers").unlink()

    found = Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup)

    assert found == Unsupported(
        "CPU and memory limits are not enforced: this machine mounts cgroup v1 at "
        f"{root} (no cgroup.controllers); steps run without them"
    )


def test_a_process_without_a_cgroup_v2_is_unsupported(tmp_path: Path) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path)
    proc_self_cgroup.write_text("4:memory:/x\n1:name=systemd:/\n")

    found = Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup)

    assert isinstance(found, Unsupported)
    assert "no '0::' line" in found.reason


@pytest.mark.parametrize(
    ("controllers", "missing"),
    [
        ("pids", "the cpu and memory controllers are not available"),
        ("cpu pids", "the memory controller is not available"),
    ],
)
def test_missing_controllers_are_unsupported(
    tmp_path: Path, controllers: str, missing: str
) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path, controllers=controllers)

    found = Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup)

    assert isinstance(found, Unsupported)
    assert f"{missing} in {base_of(root)} (available: " in found.reason


@pytest.mark.parametrize("unwritable", ["cgroup.subtree_control", "aistack-runner/cgroup.procs"])
def test_a_cgroup_not_delegated_is_unsupported(tmp_path: Path, unwritable: str) -> None:
    root, proc_self_cgroup = fake_cgroupfs(tmp_path)
    target = base_of(root) / unwritable
    # A directory cannot be written whoever runs the test (chmod would not stop root).
    target.unlink(missing_ok=True)
    target.mkdir(parents=True)

    found = Cgroups.detect(root, proc_self_cgroup=proc_self_cgroup)

    assert isinstance(found, Unsupported)
    assert f"cgroup v2 is not delegated to this user (cannot write {target}: " in found.reason
    assert found.reason.endswith("; steps run without them")


def test_create_writes_the_limits(tmp_path: Path) -> None:
    path = Cgroups(tmp_path).create("train", cpu_milli=1500, memory_mib=512)

    assert path == tmp_path / "aistack-step-train"
    assert (path / "cpu.max").read_text() == "150000 100000\n"
    assert (path / "memory.max").read_text() == f"{512 * 2**20}\n"
    assert not (path / "memory.swap.max").exists()


def test_create_without_limits_writes_max(tmp_path: Path) -> None:
    path = Cgroups(tmp_path).create("a", cpu_milli=0, memory_mib=0)

    assert (path / "cpu.max").read_text() == "max 100000\n"
    assert (path / "memory.max").read_text() == "max\n"


def test_a_tiny_cpu_limit_is_the_kernels_smallest_quota(tmp_path: Path) -> None:
    path = Cgroups(tmp_path).create("a", cpu_milli=1, memory_mib=0)

    assert (path / "cpu.max").read_text() == "1000 100000\n"


@pytest.mark.parametrize(("memory_mib", "swap"), [(64, "0\n"), (0, "max\n")])
def test_swap_is_closed_under_a_memory_limit(tmp_path: Path, memory_mib: int, swap: str) -> None:
    path = tmp_path / "aistack-step-a"
    path.mkdir()
    (path / "memory.swap.max").write_text("max\n")  # as the kernel makes it, with swap accounting

    assert Cgroups(tmp_path).create("a", cpu_milli=0, memory_mib=memory_mib) == path
    assert (path / "memory.swap.max").read_text() == swap


@pytest.mark.parametrize("name", ["", "a/b"])
def test_create_refuses_a_name_that_is_not_one_path_segment(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="non-empty path segment"):
        Cgroups(tmp_path).create(name, cpu_milli=100, memory_mib=0)


def test_remove_takes_an_empty_cgroup_and_leaves_a_busy_one(tmp_path: Path) -> None:
    empty = tmp_path / "aistack-step-done"
    empty.mkdir()
    busy = Cgroups(tmp_path).create("busy", cpu_milli=100, memory_mib=0)

    Cgroups.remove(empty)
    Cgroups.remove(busy)
    Cgroups.remove(tmp_path / "aistack-step-never-made")

    assert not empty.exists()
    assert busy.exists()


def test_remove_raises_for_what_is_not_a_cgroup(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")

    with pytest.raises(NotADirectoryError):
        Cgroups.remove(file)


def test_detect_on_this_machine() -> None:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        # detect() would move this very test process into a leaf cgroup.
        pytest.skip("this machine mounts cgroup v2; detect() would reconfigure the test's cgroup")

    found = Cgroups.detect()

    assert isinstance(found, Unsupported)
    assert "cgroup v1 at /sys/fs/cgroup" in found.reason
