"""``--write-benchmarks``: dated sections go under BENCHMARKS.md's final "Latest runs" heading, the top stays put."""

from __future__ import annotations

from pathlib import Path

from trainer import bench, benchmarks_file
from trainer.evaluation import report

ROOT = Path(__file__).resolve().parents[1]

SUMMARY = "# Benchmarks\n\nIntro.\n\n## Shipped encoder\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n## History\n\n- one\n"


def test_sections_go_under_latest_runs_newest_last_and_the_summary_stays(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(SUMMARY)
    bench.append_benchmarks(path, "## Speed, memory and latency (2026-12-03 10:00 UTC)\n\n| x |\n")
    report.append_benchmarks(path, "## Evaluation 2026-12-03 10:30: `encoder.tflite`\n\n- command: `kws-eval all`\n")
    bench.append_benchmarks(path, "## Speed, memory and latency (2026-12-04 10:00 UTC)\n")
    text = path.read_text()
    assert text.startswith(SUMMARY.rstrip("\n"))
    assert text.count(benchmarks_file.LATEST_RUNS) == 1
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Shipped encoder",
        "## History",
        "## Latest runs",
        "## Speed, memory and latency (2026-12-03 10:00 UTC)",
        "## Evaluation 2026-12-03 10:30: `encoder.tflite`",
        "## Speed, memory and latency (2026-12-04 10:00 UTC)",
    ]
    assert "\n\n\n" not in text and text.endswith("UTC)\n")


def test_a_missing_file_is_created_with_its_title_and_the_heading(tmp_path):
    for writer in (bench.append_benchmarks, report.append_benchmarks):
        path = tmp_path / f"{writer.__module__}.md"
        writer(path, "## Evaluation 2026-12-03 10:30\n")
        lines = path.read_text().splitlines()
        assert lines[0] == "# Benchmarks"
        assert lines.index("## Latest runs") < lines.index("## Evaluation 2026-12-03 10:30")


def test_the_repository_file_starts_with_the_shipped_summary_and_ends_with_latest_runs():
    headings = [line for line in (ROOT / "BENCHMARKS.md").read_text().splitlines() if line.startswith("## ")]
    top = [
        "## Contents",
        "## Shipped encoder",
        "## Real-talk false alarms",
        "## Keyword store under power cuts",
        "## History",
        "## Latest runs",
    ]
    assert headings[: len(top)] == top  # anything after "Latest runs" is a dated section a writer appended


def test_history_links_every_experiment_page():
    text = (ROOT / "BENCHMARKS.md").read_text()
    pages = sorted((ROOT / "docs/experiments").glob("*.md"))
    assert pages
    for page in pages:
        if page.name != "README.md":
            assert f"](docs/experiments/{page.name})" in text, page.name
