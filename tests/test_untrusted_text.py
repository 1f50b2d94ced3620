"""Text synthgen does not trust: path templates (only ``{name}`` is filled in, nothing is evaluated), YAML files
(aliases and nesting bounded before any value is built) and the values error messages show (cut by
``errors.shown``)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config, fill_path, read_yaml_mapping
from synthgen.errors import MAX_SHOWN, ConfigError, shown
from synthgen.jobs.landcover import LandCoverGenerateConfig
from synthgen.safe_yaml import MAX_VALUES, load_yaml
from tests.test_bad_input import alias_bomb
from tests.test_landcover import _tiny_pipeline

runner = CliRunner()


# ---------------------------------------------------------------------------------------------- path templates


def test_only_name_is_filled_in(tmp_path):
    assert fill_path("data/{name}/x-{name}", "--out", name="lc") == fill_path("data/lc/x-lc", "--out", name="lc")
    assert str(fill_path("reports/rgb-{method}.json", "--out", method="spade")) == "reports/rgb-spade.json"
    for template in ("data{v2}", "run{1}", "o{name.__class__.__mro__}", "{name!r}", "{name:>9999999999}", "{{name}}",
                     "a}", "{", "{method}"):  # fmt: skip
        with pytest.raises(ConfigError, match=r"--out '.*': braces in a path may only hold \{name\} \(filled in\)"):
            fill_path(template, "--out", name="lc")


def test_a_config_refuses_a_template_when_it_is_built():
    with pytest.raises(ConfigError, match=r"--manifest 'm\{0\}.parquet'"):
        build_config(LandCoverGenerateConfig, {"n": 1, "manifest": "m{0}.parquet"})
    cfg = build_config(LandCoverGenerateConfig, {"n": 1, "name": "x", "out": "d/{name}"})
    assert str(cfg.out_dir) == "d/x" and str(cfg.manifest_path) == "manifests/x.parquet"


@pytest.mark.parametrize("out", ["o{name.__class__.__mro__}", "data{v2}", "run{1}"])
def test_a_refused_template_creates_nothing(tmp_path, monkeypatch, out):
    model = tmp_path / "model"
    _tiny_pipeline().save_pretrained(model)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["landcover", "--n", "1", "--model", str(model), "--size", "16", "--steps", "1",
                                 "--out", out])  # fmt: skip
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert list(work.iterdir()) == [], "not even an empty folder"


# ---------------------------------------------------------------------------------------------- YAML


def test_an_alias_bomb_is_refused_before_it_expands():
    text = alias_bomb(levels=12)  # 9**12 strings if expanded
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match=f"aliases expand it past {MAX_VALUES} values"):
        load_yaml(text)
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(text) < 1000 and seconds < 5 and peak < 20_000_000, (seconds, peak)


def test_aliases_that_stay_small_are_read():
    text = "base: &b {lr: 0.1, steps: [1, 2, 3]}\nfirst: *b\nsecond: {<<: *b, lr: 0.2}\n"
    data = load_yaml(text)
    assert data["first"] == {"lr": 0.1, "steps": [1, 2, 3]} and data["second"]["lr"] == 0.2
    assert load_yaml("a: [" + ", ".join(["1"] * (MAX_VALUES - 10)) + "]")["a"][-1] == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: &x [1, *x]\n", "an alias refers to a value that holds it"),
        ("a: &x {b: *x}\n", "an alias refers to a value that holds it"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "values nest deeper than 64 levels"),
        ("a: " + "[" * 20_000 + "]" * 20_000 + "\n", "values nest deeper than 64 levels"),
        ("a: 1" + "0" * 5000 + "\n", "a value cannot be read"),
        ("a: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    ],
)
def test_bad_yaml_is_one_yaml_error(text, message):
    with pytest.raises(yaml.YAMLError, match=message):
        load_yaml(text)


def test_a_config_file_with_a_bomb_is_one_short_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(alias_bomb("tile_size"))
    with pytest.raises(ConfigError) as info:
        read_yaml_mapping(path)
    assert "aliases expand it past" in str(info.value) and len(str(info.value)) < 300


# ---------------------------------------------------------------------------------------------- values in messages


def test_shown_is_short_and_one_line_for_anything():
    nested: list = ["lol"] * 9
    for _ in range(12):  # 9**13 strings if formatted whole
        nested = [nested] * 9
    start = time.perf_counter()
    values = [nested, "x" * 10_000_000, np.arange(10**6), 10**5000, {"k" * 1000: list(range(1000))}, b"\0" * 10**6]
    for value in values:
        text = shown(value)
        assert len(text) <= MAX_SHOWN and "\n" not in text, text
    assert time.perf_counter() - start < 2
    assert shown("hot") == "'hot'" and shown(1e300) == "1e+300" and shown(True) == "True"


def test_a_wrongly_typed_bomb_in_a_config_is_cut(tmp_path):
    nested: list = ["lol"] * 9
    for _ in range(12):
        nested = [nested] * 9
    with pytest.raises(ConfigError) as info:
        build_config(LandCoverGenerateConfig, {"n": 1, "size": nested})
    assert "config 'size': expected int, got [[[[" in str(info.value) and len(str(info.value)) < 200


def test_the_cli_prints_one_bounded_line(tmp_path):
    result = runner.invoke(app, ["landcover", "--n", "1", "--scheme", "s" * 50_000, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and len(result.output) < 1100, result.output
