"""The docs' benchmark figures are what bench/report.py renders from bench/results/*.json (no Spark, no databases):
a benchmark re-run without `./drc docs-figures` fails here, and so does a broken marker pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.machine import spread, timed_runs

ROOT = Path(report.__file__).resolve().parent.parent


@pytest.mark.parametrize("doc", report.docs_with_blocks(ROOT))
def test_doc_blocks_are_what_the_results_files_give(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert report.marker_errors(text) == [], f"{doc}: malformed bench markers"
    regenerated, problems = report.update(text, doc)
    assert problems == []
    assert regenerated == text, f"{doc} is out of date with bench/results/: run ./drc docs-figures"


def test_every_block_is_in_its_doc_once_and_names_its_results_file():
    for name, block in report.BLOCKS.items():
        text = (ROOT / block.doc).read_text(encoding="utf-8")
        assert text.count(f"<!-- bench:{name} -->") == 1 and text.count(f"<!-- /bench:{name} -->") == 1, name
        assert (ROOT / "bench" / "results" / f"{block.results}.json").exists()
        assert f"`bench/results/{block.results}.json`" in report.render(name)


def test_check_finds_a_stale_block_and_bad_markers(tmp_path):
    good = "intro\n<!-- bench:api -->\nold table\n<!-- /bench:api -->\nafter\n"
    new, problems = report.update(good, "docs/api.md")
    assert problems == [] and new != good and new.startswith("intro\n") and new.endswith("after\n")
    assert report.update(new, "docs/api.md") == (new, [])
    assert report.marker_errors("<!-- bench:api -->\n") == ["bench:api is never closed"]
    assert report.marker_errors("<!-- bench:api -->\n<!-- /bench:quality -->")[0].endswith("closes bench:api")
    assert "opens inside" in report.marker_errors("<!-- bench:api -->\n<!-- bench:quality -->")[0]
    assert "not a block" in report.marker_errors("<!-- bench:nope -->\n<!-- /bench:nope -->")[0]

    docs = tmp_path / "docs"
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results").symlink_to(ROOT / "bench" / "results")
    docs.mkdir()
    for doc in {b.doc for b in report.BLOCKS.values()}:
        (tmp_path / doc).write_text((ROOT / doc).read_text(encoding="utf-8"), encoding="utf-8")
    assert report.run(check=True, root=tmp_path) == 0
    api = tmp_path / "docs" / "api.md"
    api.write_text(api.read_text(encoding="utf-8").replace("431.5", "999.9"), encoding="utf-8")
    assert report.run(check=True, root=tmp_path) == 1
    assert report.run(check=False, root=tmp_path) == 0
    assert report.run(check=True, root=tmp_path) == 0


def test_one_run_and_a_spread_render_differently():
    assert report.measured(65.0) == "65.0 s"
    s = spread([3.0, 1.0, 2.0])
    assert s == {"runs": 3, "median": 2.0, "min": 1.0, "max": 3.0, "values": [3.0, 1.0, 2.0]}
    assert report.measured(s) == "2.0 s (1.0–3.0, 3 runs)"
    assert report.runs_note({"seconds": 65.0}) == "1 run"
    assert "3 runs" in report.runs_note({"seconds": s})
    calls = []
    timed = timed_runs(lambda: calls.append(1), runs=4)
    assert len(calls) == 4 and timed["runs"] == 4 and timed["min"] <= timed["median"] <= timed["max"]
    with pytest.raises(ValueError):
        timed_runs(lambda: None, runs=0)


def test_a_rerun_with_a_spread_still_renders():
    """A results file whose timings became spreads (bench.machine.timed_runs) renders without code changes."""
    results = report.load("quality")
    results["seconds"] = spread([61.0, 65.0, 70.0], 1)
    text = report.render_quality(results)
    assert "65.0 s (61.0–70.0, 3 runs)" in text and "1 run;" not in text
