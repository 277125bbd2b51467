"""The README's numbers are the newest committed benchmark results, rendered by code: none typed in."""

from pathlib import Path

from tests.conftest import load_benchmark_script

ROOT = Path(__file__).parents[2]


def _renderer():
    return load_benchmark_script("readme_results")


def test_readme_results_block_is_rendered_from_the_newest_results():
    renderer = _renderer()
    readme = (ROOT / "README.md").read_text()
    block = readme.split(renderer.BEGIN, 1)[1].split(renderer.END, 1)[0].strip()
    assert block == renderer.render_newest().strip()


def test_frontier_table_is_rendered_from_the_committed_results():
    frontier = load_benchmark_script("frontier")
    committed = (ROOT / "benchmarks" / "results" / "frontier.md").read_text(encoding="utf-8")
    assert committed == frontier.render()
    # The goal check reads the numbers, not the wording: a row short of any one target does not meet it.
    row = {"speedup": 8.0, "accuracy_delta_pt": -0.5, "size_ratio": 10.7}
    assert frontier.meets(row)
    assert not frontier.meets({**row, "accuracy_delta_pt": -1.46})
    assert not frontier.meets({**row, "size_ratio": 9.9})


def test_readme_lm_block_is_rendered_from_the_newest_lm_results():
    renderer = load_benchmark_script("readme_lm_results")
    readme = (ROOT / "README.md").read_text()
    block = readme.split(renderer.BEGIN, 1)[1].split(renderer.END, 1)[0].strip()
    assert block == renderer.render().strip()
    # The block reads the causal-LM result, not a classifier one: its headline numbers are in it.
    path, summary = renderer.newest(renderer.is_lm_result)
    h = summary["headline"]
    assert f"**{h['perplexity_ratio']:.2f}×**" in block and path.with_suffix(".md").name in block
