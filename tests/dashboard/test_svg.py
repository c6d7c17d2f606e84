"""The server-drawn charts: geometry from numbers, every shape titled, nothing unescaped."""

from __future__ import annotations

from scheduler_service.dashboard._svg import Marker, Segment, bar, columns
from tests.dashboard.html import parse


def test_a_bar_lays_its_segments_end_to_end_to_scale() -> None:
    svg = parse(
        bar(
            [Segment(2, "used", "2 in quota"), Segment(1, "borrowed", "1 borrowed")],
            scale=8,
            markers=[Marker(4, "quota", "quota 4")],
            width=160,
        )
    )

    rects = svg.find_all("rect")
    assert [(r.attrs["class"], r.attrs.get("x"), r.attrs["width"]) for r in rects] == [
        ("bar-bg", None, "160"),
        ("seg-used", "0", "40"),
        ("seg-borrowed", "40", "20"),
    ]
    (line,) = svg.find_all("line")
    assert (line.attrs["x1"], line.one("title").text) == ("80", "quota 4")


def test_a_bar_cuts_what_runs_past_its_scale_and_skips_nothing_at_zero() -> None:
    svg = parse(bar([Segment(0, "used", "none"), Segment(12, "waiting", "12")], scale=8, width=80))

    assert [r.attrs["width"] for r in svg.find_all("rect")] == ["80", "80"]
    assert parse(bar([Segment(1, "used", "x")], scale=0)).find_all("rect")[1:] == []


def test_titles_and_labels_are_escaped() -> None:
    text = bar([Segment(1, "used", "<script>alert(1)</script>")], scale=1, label='"><b>')

    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert '"><b>' not in text


def test_columns_stack_each_period_and_round_the_axis_up() -> None:
    svg = parse(
        columns(["Mon", "Tue"], [("team-a", [3.0, 1.0]), ("team-b", [4.0, 0.0])], unit="GPU-h")
    )

    parts = [(r.attrs["class"], r.one("title").text) for r in svg.find_all("rect")]
    assert parts == [
        ("col-0", "Mon: team-a 3.00 GPU-h"),
        ("col-1", "Mon: team-b 4.00 GPU-h"),
        ("col-0", "Tue: team-a 1.00 GPU-h"),
    ]
    ticks = [t.text for t in svg.find_all("text") if t.attrs.get("text-anchor") == "end"]
    assert ticks == ["0", "2.5", "5", "7.5", "10"]
