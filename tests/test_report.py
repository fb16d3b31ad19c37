"""The HTML reports: tables that fit the page, one unit per table, and adapt's report as tables and pictures."""

from __future__ import annotations

from spikevimformer.analysis.visualize import training_curves
from spikevimformer.report import write_adapt_report, write_report

ADAPT = {"config": {"ortho": "/data/area.tif", "minutes": 8.0, "lr": 1e-4},
         "before": {"R@1": 40.0, "R@5": 70.0, "AP": 45.0, "queries": 96, "gallery": 48},
         "after": {"R@1": 52.5, "R@5": 80.0, "AP": 55.0, "queries": 96, "gallery": 48},
         "localization": {"queries": 40, "fix_rate": 0.86, "camera_median_error_m": 1.34},
         "steps": 5, "training_locations": 60, "tiles": 48, "seconds": {"render": 10.0, "fine-tune": 480.0},
         "commands": ["spikevimformer localize PHOTO.jpg --index out/index"]}  # fmt: skip


def test_adapt_report_has_tables_in_one_unit_a_scrolling_frame_and_the_curves(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n1,2.0\n2,1.5\n")
    html = write_adapt_report(tmp_path / "report.html", ADAPT, training_curves(log, tmp_path / "c.png"),
                              few_steps=20).read_text()  # fmt: skip
    assert "<pre>R@1" not in html and "<td>after</td><td>52.50</td>" in html
    assert "<td>change</td><td>12.50</td>" in html  # points, not a fraction
    assert "<td>lr</td><td>0.0001</td>" in html  # settings as given, not rounded to 0.00
    assert "86.0\u00a0%" in html and "0.86" not in html  # the localization fractions as percentages
    assert html.count("<table>") == html.count('<div style="overflow-x:auto"><table>')  # wide tables scroll
    assert "data:image/png;base64," in html and "too few steps" in html and "<td>total</td><td>490.00</td>" in html
    enough = write_adapt_report(tmp_path / "r2.html", {**ADAPT, "steps": 300}, few_steps=20).read_text()
    assert "too few steps" not in enough and "data:image/png" not in enough


def test_the_demo_report_names_the_sdm_scale(tmp_path):
    loc = {"queries": 5, "gallery": 7, "SDM@5": 0.93, "sdm": "s=1e-3/m, GTA-UAV"}
    payload = {"config": {"seed": 0, "image_size": 64}, "localization": loc}
    html = write_report(tmp_path / "report.html", payload).read_text()
    assert "<th>SDM@5 (s=1e-3/m, GTA-UAV)</th>" in html and "93.0\u00a0%" in html
