"""The public API's types, checked by mypy (strict, with unused ignores reported).

Each `assert_type` pins what an author's editor and type checker see; each call marked
`type: ignore[...]` must stay an error: if the API's types loosened, the ignore would become
unused and mypy (warn_unused_ignores, part of strict) would fail this file. pytest runs it too,
so the calls that are allowed really work.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import pytest

import aistack_flows as af


def test_what_the_declarations_return() -> None:
    assert_type(af.gpus(2), dict[str, str])
    assert_type(af.gpus("{{inputs.parameters.gpus}}", queue="q", gang=2), dict[str, str])
    assert_type(af.gpu_slice(memory_gib=8, compute_percent=25), dict[str, str])
    request = af.GpuRequest(gpus=1)
    assert_type(request.is_slice, bool)
    assert_type(af.pod_metadata(request, queue="q"), dict[str, dict[str, str]])
    assert_type(af.checkpoint_dir(), Path | None)
    assert_type(af.attempt(), int)


def test_what_the_type_checker_refuses() -> None:
    with pytest.raises(af.RequestError):
        af.gpus(1, kind="serve")  # type: ignore[arg-type]
    with pytest.raises(af.RequestError):
        af.gpus(1, topology="galaxy")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        af.gpu_slice(memory_gib=8)  # type: ignore[call-arg]
    with pytest.raises(af.RequestError):
        af.gpus(1, colour="red")  # type: ignore[call-arg]
    with pytest.raises(af.RequestError):
        af.gpus(1, preemptible="maybe")  # type: ignore[arg-type]


def test_errors_are_value_errors_that_list_their_problems() -> None:
    with pytest.raises(ValueError, match="gpus") as refused:
        af.gpus(0)
    assert isinstance(refused.value, af.RequestError)
    assert_type(refused.value.problems[0], af.Problem)
