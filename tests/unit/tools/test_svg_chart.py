"""tools/svg_chart.py: nice ticks and scales, and the line and bar charts as parsed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from svg_chart import (
    MET,
    MISSED,
    NO_TARGET,
    SVG_NS,
    Bar,
    Scale,
    bar_chart,
    line_chart,
    nice_step,
    nice_ticks,
    tick_label,
)

NS = {"svg": SVG_NS}


def parse(svg: str) -> ET.Element:
    """The chart's root element (fails the test on malformed XML)."""
    root = ET.fromstring(svg)  # noqa: S314 (a chart this test just drew)
    assert root.tag == f"{{{SVG_NS}}}svg"
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    return root


def texts(element: ET.Element, group: str) -> list[str]:
    """The texts of the ``<g class=group>`` elements under ``element``."""
    return [
        t.text or ""
        for g in element.iter(f"{{{SVG_NS}}}g")
        if g.get("class") == group
        for t in g.iter(f"{{{SVG_NS}}}text")
    ]


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    """Each polyline's points."""
    return [
        [(float(x), float(y)) for x, y in (p.split(",") for p in line.get("points", "").split())]
        for line in root.iter(f"{{{SVG_NS}}}polyline")
    ]


def test_ticks_step_by_one_two_or_five_times_a_power_of_ten_and_cover_the_range() -> None:
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.13, 0.97) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 1234) == [0, 500, 1000, 1500]
    assert nice_step(0.03) == pytest.approx(0.01)


def test_ticks_of_whole_numbers_never_fall_between_them() -> None:
    assert nice_ticks(1, 2, integer=True) == [1, 2]
    assert nice_ticks(1, 2) == [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]


def test_a_range_of_one_value_is_widened_around_it_or_above_zero() -> None:
    ticks = nice_ticks(5, 5)
    assert ticks[0] < 5 < ticks[-1]
    assert nice_ticks(0, 0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # zero counts: no negative axis


def test_a_scale_maps_its_domain_onto_its_range_and_a_point_domain_to_the_middle() -> None:
    down = Scale(0, 100, 300, 100)  # y grows downwards in SVG
    assert (down(0), down(50), down(100)) == (300, 200, 100)
    assert Scale(7, 7, 0, 10)(7) == 5


def test_tick_labels_show_the_decimals_their_step_needs_and_no_negative_zero() -> None:
    assert tick_label(1500, 500) == "1,500"
    assert tick_label(0.2, 0.2) == "0.2"
    assert tick_label(0.05, 0.01) == "0.05"
    assert tick_label(-1e-13, 0.5) == "0.0"


def test_a_line_chart_has_a_line_and_a_legend_entry_per_series_with_its_points() -> None:
    series = {"ours": [[1, 640], [2, 1010], [4, 1700]], "plain Celery": [[1, 600], [2, 950]]}
    root = parse(line_chart("Drain rate", series, x_label="processes", y_label="tasks/s"))
    assert len(polylines(root)) == 2
    assert len(list(root.iter(f"{{{SVG_NS}}}circle"))) == 5
    assert texts(root, "legend") == ["ours", "plain Celery"]
    assert texts(root, "x-ticks") == ["1", "2", "3", "4"]
    assert texts(root, "y-ticks") == ["0", "500", "1,000", "1,500", "2,000"]
    labels = [t.text for t in root.iter(f"{{{SVG_NS}}}text")]
    assert "processes" in labels and "tasks/s" in labels and "Drain rate" in labels


def test_a_line_chart_places_each_point_by_its_axes_scales() -> None:
    root = parse(line_chart("t", {"a": [[0, 0], [10, 100]]}, x_label="x", y_label="y"))
    (start, end) = polylines(root)[0]
    assert start[0] < end[0]  # x to the right
    assert start[1] > end[1]  # y upwards
    assert end[1] == 40.0  # the top tick (100) is the plot's top margin


def test_a_series_of_one_point_draws_its_marker_without_dividing_by_zero() -> None:
    root = parse(line_chart("t", {"only": [[3, 42]]}, x_label="x", y_label="y"))
    assert len(list(root.iter(f"{{{SVG_NS}}}circle"))) == 1


def test_all_equal_values_still_get_an_axis_with_ticks() -> None:
    series = {"flat": [[1, 5], [2, 5], [3, 5]]}
    root = parse(line_chart("t", series, x_label="x", y_label="y", include_zero=False))
    ticks = [float(t) for t in texts(root, "y-ticks")]
    assert ticks[0] < 5 < ticks[-1]
    assert len({y for _, y in polylines(root)[0]}) == 1


def test_an_empty_series_is_in_the_legend_as_no_data_and_draws_no_line() -> None:
    root = parse(line_chart("t", {"ours": [[1, 2]], "theirs": []}, x_label="x", y_label="y"))
    assert texts(root, "legend") == ["ours", "theirs (no data)"]
    assert len(polylines(root)) == 1


def test_a_chart_without_any_point_says_so() -> None:
    root = parse(line_chart("t", {"ours": []}, x_label="x", y_label="y"))
    assert "no data" in [t.text for t in root.iter(f"{{{SVG_NS}}}text")]
    assert polylines(root) == []


def test_bars_are_coloured_by_their_target_and_marked_at_it_with_a_line_at_parity() -> None:
    bars = [
        Bar("beat: tick", 0.6, target=1.0, met=True),
        Bar("fetch: <drain> & more", 0.93, target=0.95, met=False),
        Bar("topology vs networkx", 0.3),
    ]
    root = parse(bar_chart("Ratios", bars, x_label="ours / anchor"))
    groups = [g for g in root.iter(f"{{{SVG_NS}}}g") if g.get("class") == "bar"]
    assert [g.get("data-label") for g in groups] == [b.label for b in bars]
    fills = [g.find("svg:rect", NS).get("fill") for g in groups]  # type: ignore[union-attr]
    assert fills == [MET, MISSED, NO_TARGET]
    targets = [line for line in root.iter(f"{{{SVG_NS}}}line") if line.get("class") == "target"]
    assert len(targets) == 2
    reference = next(x for x in root.iter(f"{{{SVG_NS}}}line") if x.get("class") == "reference")
    parity = float(reference.get("x1", ""))
    assert float(targets[0].get("x1", "")) == parity  # beat's target is 1.0
    assert float(targets[1].get("x1", "")) < parity  # the fetch's is 0.95
    assert texts(root, "legend")[:2] == ["target met", "target not met"]


def test_a_bar_chart_scales_its_axis_past_the_longest_bar_and_shortens_long_labels() -> None:
    label = "x" * 80
    root = parse(bar_chart("Ratios", [Bar(label, 2.4)], x_label="ratio"))
    assert float(texts(root, "x-ticks")[-1]) > 2.4
    shown = texts(root, "bar")[0]
    assert len(shown) < len(label) and shown.endswith("\u2026")


def test_a_bar_chart_without_bars_says_so() -> None:
    root = parse(bar_chart("Ratios", [], x_label="ratio"))
    assert "no data" in [t.text for t in root.iter(f"{{{SVG_NS}}}text")]
