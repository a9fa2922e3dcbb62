"""`ctac sweep`: the grid, the cache (points computed vs served from it), the table, the plots,
errors naming the bad key, and the same points on a local Ray instance."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from ctac.cli import main as cli_main
from ctac.errors import CtacError
from ctac.sweep import load_spec, run_sweep
from ctac.sweep_plots import pareto_front

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "models"

SPEC = """
[sweep]
attention = "cta"

[fixed]
cta_policy = "always"

[[models]]
name = "gpt2"
path = "{models}/gpt2_ts_eager.onnx"
shapes = {{ input_ids = "1x16", attention_mask = "1x16" }}

[[models]]
path = "{models}/bert_ts_eager.onnx"
shapes = {{ input_ids = [1, 16], attention_mask = [1, 16] }}

[grid]
timing_cluster_ratio = [{ratios}]
pe_array = [{{ rows = 16, cols = 16 }}, {{ rows = 32, cols = 32 }}]
"""


def write_spec(folder: Path, ratios: str = "0.5, 1.0", text: str | None = None) -> Path:
    path = folder / "spec.toml"
    path.write_text(text if text is not None else SPEC.format(models=MODELS, ratios=ratios))
    return path


def test_example_spec_is_a_3x3x2_grid() -> None:
    points, sweep = load_spec(REPO / "examples" / "sweep.toml")
    assert len(points) == 18
    assert {p.model_name for p in points} == {"bert", "gpt2"}
    assert {p.options["tau"] for p in points} == {0.3, 0.5, 0.7}
    assert {p.hw_overrides["pe_array.rows"] for p in points} == {16, 32, 64}
    assert len({p.key for p in points}) == 18
    assert sweep["attention"] == "cta"


def test_sweep_table_plots_and_cache(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "out"
    first = run_sweep(spec, out, jobs=2, cache=cache, progress=False)
    assert (first.computed, first.cached, first.failed) == (8, 0, 0)
    table = first.table
    assert len(table) == 8
    for column in ("model", "model_sha256", "shapes", "attention", "timing_only",
                   "timing_cluster_ratio", "pe_array.rows", "pe_array.cols", "cycles",
                   "seconds", "energy_pj", "dram_bytes", "hardware_sha256", "ctac_version"):  # fmt: skip
        assert column in table.columns, column
    assert set(table["model"]) == {"gpt2", "bert_ts_eager"}
    assert table["timing_only"].all()
    # a smaller PE array is slower; fewer clusters per token is cheaper
    gpt2 = table[table["model"] == "gpt2"].set_index(["timing_cluster_ratio", "pe_array.rows"])
    assert gpt2.loc[(1.0, 16), "cycles"] > gpt2.loc[(1.0, 32), "cycles"]
    bert = table[table["model"] == "bert_ts_eager"].set_index(
        ["timing_cluster_ratio", "pe_array.rows"]
    )
    assert bert.loc[(0.5, 32), "cycles"] < bert.loc[(1.0, 32), "cycles"]
    assert len(set(table["hardware_sha256"])) == 2
    for kind in ("csv", "cycles", "energy_pj"):
        assert first.files[kind].is_file() and first.files[kind].stat().st_size > 0
    assert "max_abs_err" not in first.files  # timing only: no numerics to check
    assert len(list(cache.glob("*.json"))) == 8

    again = run_sweep(spec, out, jobs=2, cache=cache, progress=False)
    assert (again.computed, again.cached) == (0, 8)
    assert again.up_to_date  # same rows: the table and plots are not rewritten
    assert list(again.table["cycles"]) == list(table["cycles"])

    # one more value on an axis: only its points are computed
    grown = run_sweep(write_spec(tmp_path, "0.25, 0.5, 1.0"), out, jobs=1, cache=cache,
                      progress=False)  # fmt: skip
    assert (grown.computed, grown.cached) == (4, 8)
    assert not grown.up_to_date and len(grown.table) == 12


def test_cli_sweep_and_svg(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, "1.0")
    argv = ["sweep", str(spec), "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c"),
            "--jobs", "1", "--format", "svg", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    assert "4 points: 4 computed, 0 from the cache" in capsys.readouterr().out
    assert (tmp_path / "o" / "cycles.svg").read_text().lstrip().startswith("<?xml")
    assert cli_main(argv) == 0
    assert "4 points: 0 computed, 4 from the cache" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("pe_array = [", "pe_aray = ["), "unknown key 'pe_aray.rows'"),
        (lambda s: s.replace("timing_cluster_ratio = [1.0]", "tau = []"), "grid.tau is empty"),
        (lambda s: s[: s.index("[grid]")] + "[grid]\n", "[grid] is empty"),
        (lambda s: s.replace('attention = "cta"', 'attention = "cta"\nnumerix = true'),
         "unknown key 'sweep.numerix'"),
        (lambda s: s.replace("cta_policy", "cta_polcy"), "unknown key 'cta_polcy'"),
        (lambda s: s.replace("gpt2_ts_eager.onnx", "gpt3.onnx"), "is not a file"),
        (lambda s: s.replace("rows = 16,", "rows = 16.5,"), "pe_array.rows: must be an integer"),
        (lambda s: s.replace("timing_cluster_ratio = [1.0]", "sequence = [32, 0]"),
         "models[0]: sequence must be a positive integer, got 0"),
        (lambda s: s.replace('attention = "cta"', 'attention = "cta"\nplot_x = "tau"'),
         "sweep.plot_x 'tau' is not a key of [grid] or [[points]]"),
    ],
)  # fmt: skip
def test_bad_spec_is_one_error_naming_the_key(tmp_path: Path, capsys, edit, message) -> None:
    spec = write_spec(tmp_path, text=edit(SPEC.format(models=MODELS, ratios="1.0")))
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["sweep", str(spec), "--out", str(out), "--cache", str(cache), "--no-progress"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists() and not cache.exists()


def test_points_list_and_modes_sharing_a_key(tmp_path: Path) -> None:
    text = SPEC.format(models=MODELS, ratios="1.0")
    text = text[: text.index("[grid]")] + (
        '[[points]]\nattention = "exact"\ntau = 0.3\n'
        '[[points]]\nattention = "exact"\ntau = 0.6\n'
        '[[points]]\ntau = 0.3\n"pe_array.rows" = 16\n'
    )
    points, _ = load_spec(write_spec(tmp_path, text=text))
    assert len(points) == 6
    gpt2 = [p for p in points if p.model_name == "gpt2"]
    assert [p.attention for p in gpt2] == ["exact", "exact", "cta"]
    assert gpt2[0].options == {} and gpt2[0].key == gpt2[1].key  # exact ignores tau
    assert gpt2[2].options == {"cta_policy": "always", "tau": 0.3}
    assert gpt2[2].hw_overrides == {"pe_array.rows": 16}
    both = text + "[grid]\ntau = [0.3]\n"
    with pytest.raises(CtacError, match="not both"):
        load_spec(write_spec(tmp_path, text=both))


SEQUENCE_SPEC = """
[sweep]
plot_x = "sequence"

[[models]]
name = "gpt2"
path = "{models}/gpt2_ts_eager.onnx"
shapes = {{ input_ids = "1x16", attention_mask = "1x16" }}

[grid]
sequence = [{lengths}]
"""


def test_sequence_axis_compiles_and_caches_per_length(tmp_path: Path) -> None:
    import re

    import pandas as pd

    spec = write_spec(tmp_path, text=SEQUENCE_SPEC.format(models=MODELS, lengths="16, 32"))
    points, _ = load_spec(spec)
    assert [p.shapes["input_ids"] for p in points] == [[1, 16], [1, 32]]
    assert [p.shapes["attention_mask"] for p in points] == [[1, 16], [1, 32]]
    assert points[0].key != points[1].key  # each length its own cache entry
    cache, out = tmp_path / "cache", tmp_path / "out"
    first = run_sweep(spec, out, jobs=1, cache=cache, progress=False, image_format="svg")
    assert (first.computed, first.cached, first.failed) == (2, 0, 0)
    table = first.table.set_index("sequence")
    assert table.loc[32, "shapes"] == "input_ids=1x32,attention_mask=1x32"
    assert table.loc[32, "cycles"] > table.loc[16, "cycles"]  # compiled at each length
    assert list(pd.read_csv(first.files["csv"])["sequence"]) == [16, 32]
    svg = first.files["cycles"].read_text()
    text = " ".join(re.findall(r"<!-- (.*?) -->", svg))
    assert "sequence (tokens)" in text and "cycles vs sequence" in text
    assert len(list(cache.glob("*.json"))) == 2

    again = run_sweep(spec, out, jobs=1, cache=cache, progress=False, image_format="svg")
    assert (again.computed, again.cached) == (0, 2) and again.up_to_date

    # a third length: only it is compiled; 129 tokens > GPT-2's 128 positions fails that point
    longer = write_spec(tmp_path, text=SEQUENCE_SPEC.format(models=MODELS, lengths="16, 32, 129"))
    grown = run_sweep(longer, out, jobs=1, cache=cache, progress=False)
    assert (grown.computed, grown.cached, grown.failed) == (1, 2, 1)
    assert "129 tokens > the model's 128 positions" in grown.rows[2]["error"]


def test_sequence_needs_shapes_it_can_set(tmp_path: Path) -> None:
    text = SEQUENCE_SPEC.format(models=MODELS, lengths="16")
    no_shapes = text.replace('shapes = { input_ids = "1x16", attention_mask = "1x16" }', "")
    with pytest.raises(CtacError, match="models\\[0\\]: sequence = 16 needs the model's shapes"):
        load_spec(write_spec(tmp_path, text=no_shapes))
    image = text.replace('input_ids = "1x16", attention_mask = "1x16"', 'pixels = "1x3x8x8"')
    with pytest.raises(CtacError, match="pixels \\(1x3x8x8\\) has none"):
        load_spec(write_spec(tmp_path, text=image))
    # without the key, the column holds the models' own length
    plain = text.replace("sequence = [16]", "tau = [0.5]").replace('plot_x = "sequence"', "")
    points, _ = load_spec(write_spec(tmp_path, text=plain))
    assert points[0].sequence == 16


def test_pareto_front() -> None:
    costs = [10, 8, 12, 8, 5]
    errors = [0.1, 0.3, 0.05, 0.2, 0.9]
    assert pareto_front(costs, errors) == [4, 3, 0, 2]


@pytest.mark.ray
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_sweep_on_local_ray(tmp_path: Path) -> None:
    import ray

    spec = write_spec(tmp_path)
    local = run_sweep(spec, tmp_path / "local", jobs=1, cache=tmp_path / "c1", progress=False)
    try:
        remote = run_sweep(spec, tmp_path / "ray", jobs=2, cache=tmp_path / "c2", use_ray=True,
                           progress=False)  # fmt: skip
    finally:
        ray.shutdown()
    assert (remote.computed, remote.cached, remote.failed) == (8, 0, 0)
    assert list(remote.table["cycles"]) == list(local.table["cycles"])
    assert list(remote.table["energy_pj"]) == list(local.table["energy_pj"])
    assert (tmp_path / "ray" / "results.csv").is_file()


def test_only_worker_processes_run_on_one_interpreter_lane(monkeypatch) -> None:
    """Several workers take a core each, so they run one lane (CTAC_THREADS=1); a sweep run in
    the caller's process leaves its environment (and two lanes) alone."""
    from ctac import sweep

    monkeypatch.delenv("CTAC_THREADS", raising=False)
    monkeypatch.setattr(sweep, "compute_point", lambda point: os.environ.get("CTAC_THREADS"))
    seen = []
    sweep._run_local(["a point"], 1, lambda point, result: seen.append(result))
    assert seen == [None] and "CTAC_THREADS" not in os.environ
    assert sweep.compute_point_in_worker("a point") == "1"
