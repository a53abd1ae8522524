"""The demo's sections run end to end on the tiny model (test sizes) and write a complete report."""

import torch

from flowsteer.demo import SECTIONS, DemoSettings, run_demo


def test_demo_sections_write_a_report_with_figures(tiny, tmp_path):
    chunks = torch.randint(3, 259, (160, 24), generator=torch.Generator().manual_seed(0))
    report = run_demo(tmp_path, tiny, SECTIONS, DemoSettings.quick(chunks)).read_text()
    for title in ("## SAEs for a band of layers", "## A feature's flow graph", "## Steering with the graph's features",
                  "## Refusal bypass", "## Timings"):
        assert title in report
    assert "| 2/res |" in report and "![flow graph](flow.png)" in report
    assert (tmp_path / "flow.png").read_bytes().startswith(b"\x89PNG")
    assert "<script>" in (tmp_path / "flow.html").read_text()
