"""synthgen validate / report / adapt end to end on tiny manifests (ingested fixtures and seeded tiles with height):
cross-test + mixing + report re-rendering, exact resume, the height task, self-training adaptation, the paper
study with what exists, and every bad input as one line with exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config, load_config
from synthgen.errors import ConfigError
from synthgen.io.manifest import read_manifest
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.training.training_run import finished
from synthgen.validation.config import ValidateConfig
from synthgen.validation.crosstest import plan_runs, prepare
from synthgen.validation.train import run_dir, train_model
from tests.conftest import scene_config_values
from tests.test_validate_data import write_empty_manifest, write_tiles

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def data(fixtures_dir, tmp_path_factory) -> dict:
    """Ingested scene fixture (oem8 and isprs schemes, 32 px, no height) and seeded tiles with labels + height."""
    root = tmp_path_factory.mktemp("validate")
    run_ingest(build_config(IngestConfig, scene_config_values(fixtures_dir, root)))
    isprs = {**scene_config_values(fixtures_dir, root), "name": "scene_isprs", "target_scheme": "isprs"}
    run_ingest(build_config(IngestConfig, isprs))
    return {
        "root": root,
        "scene": root / "manifests" / "scene.parquet",
        "isprs": root / "manifests" / "scene_isprs.parquet",
        "synth": write_tiles(root, "synth", n=8, seed=1),
        "shifted": write_tiles(root, "shifted", n=8, seed=2, shift=40),
        "rgb_only": write_tiles(root, "rgbonly", n=4, label=False, height=False),
        "empty": write_empty_manifest(root),
    }


def _mious(report: dict) -> dict:
    return {r["name"]: {t: v["miou"] for t, v in r["tests"].items()} for r in report["runs"]}


def test_cross_test_with_mixing_then_report_rerenders(data, tmp_path):
    out = tmp_path / "out"
    args = ["validate", "--config", "tiny", "--out", out, "--real-fraction", "0.5,1"]
    args += ["--train", f"real={data['scene']}", "--train", f"synth={data['synth']}"]
    args += ["--test", f"real={data['scene']}", "--test", f"isprs={data['isprs']}"]
    stdout = ok(invoke(*args))
    assert "| training set | architecture | real | isprs |" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "validate" and report["seed"] == 0 and report["scheme"]["name"] == "oem8"
    assert report["config"]["encoder"] == "tu-mobilenetv3_small_050" and report["versions"]["torch"]
    assert report["sets"]["test"]["isprs"]["schemes"] == ["isprs"]  # mapped into oem8 for scoring
    assert report["sets"]["train"]["real"]["parts"][0]["split"] == "train"
    assert report["sets"]["test"]["real"]["parts"][0]["split"] == "val"
    runs = {r["name"]: r for r in report["runs"]}
    cross = [r for r in report["runs"] if r["kind"] == "crosstest"]
    assert [(r["train"], r["arch"]) for r in cross] == [
        (t, a) for t in ("real", "synth") for a in ("unet", "unetplusplus", "deeplabv3plus")
    ]
    for run in cross:
        assert run["training"]["steps"] == 2 and run["training"]["images_per_s"] > 0
        assert len(run["training"]["loss"]) == 2
        for name, test in run["tests"].items():
            assert 0 <= test["miou"] <= 1 and 0 <= test["overall_accuracy"] <= 1 and 0 <= test["f1"] <= 1
            assert test["images_per_s"] > 0 and test["tiles"] == report["sets"]["test"][name]["tiles"]
            assert set(test["iou_per_class"]) == set(report["scheme"]["classes"].values())
            assert Path(test["overlay"]).is_file()
    mixing = [r for r in report["runs"] if r["kind"] == "mixing"]
    assert len(mixing) == 2 * 2 * 3
    half = runs["mix0.5-real+synthetic-unet"]
    assert half["real_tiles"] == 9 and half["train_tiles"] == 9 + 6 and half["synthetic"] == ["synth"]
    assert runs["mix0.5-real-unet"]["train_tiles"] == 9
    assert runs["mix1-real-unet"]["tests"] == runs["real-unet"]["tests"]  # the same model, trained once
    for name in ("crosstest_miou.png", "per_class_iou.png", "mixing.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    markdown = (out / "report.md").read_text()
    table = markdown.split("## mIoU")[1].split("##")[0]
    assert table.count("\n| real |") == 3 and table.count("\n| synth |") == 3
    assert "## Mixing" in markdown and "| 0.5 | 9 | unet |" in markdown

    # synthgen report re-renders the tables and plots from the JSON alone
    ok(invoke("report", out / "report.json", "--out", tmp_path / "again"))
    again = (tmp_path / "again" / "report.md").read_text()
    assert again.split("## Sets")[0] == markdown.split("## Sets")[0]
    assert (tmp_path / "again" / "plots" / "mixing.png").is_file()

    # the same command again reuses every finished run: the same numbers, no training
    ok(invoke(*args))
    rerun = json.loads((out / "report.json").read_text())
    assert _mious(rerun) == _mious(report)
    assert [r["training"]["seconds"] for r in rerun["runs"]] == [r["training"]["seconds"] for r in report["runs"]]


@pytest.mark.parametrize("weights_ema", [0.0, 0.9])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(data, tmp_path, weights_ema):
    def config(out: Path) -> ValidateConfig:
        overrides = {"train": [f"real={data['scene']}"], "test": [f"real={data['scene']}"], "arch": ["unet"]}
        overrides |= {"weights_ema": weights_ema, "monitor_every": 1, "monitor_tiles": 2}
        return load_config(
            ValidateConfig, "tiny", "validate", {**overrides, "steps": 3, "checkpoint_every": 1, "out": str(out)}
        )

    whole = config(tmp_path / "a")
    study = prepare(whole)
    spec = plan_runs(whole, study)[0]
    model_a, metrics_a = train_model(whole, spec, study.classes, monitor=study.test["real"])
    assert len(metrics_a["val_loss"]) == 3

    cut = config(tmp_path / "b")
    train_model(cut, spec, study.classes, monitor=study.test["real"])
    folder = run_dir(cut, spec, "oem8")
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    shutil.rmtree(folder / "checkpoint-3")  # as if killed after step 2
    shutil.rmtree(folder / "model")
    (folder / "metrics.json").unlink()
    assert not finished(folder)
    model_b, metrics_b = train_model(cut, spec, study.classes, monitor=study.test["real"])
    assert metrics_b["loss"] == metrics_a["loss"] and metrics_b["val_loss"] == metrics_a["val_loss"]
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_height_task_then_adapt_with_mean_teacher(data, tmp_path):
    out = tmp_path / "height"
    ok(
        invoke(
            "validate", "--config", "tiny", "--out", out, "--arch", "unet", "--task", "seg,height",
            "--train", f"synth={data['synth']}", "--test", f"synth={data['synth']}",
        )
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    height = report["runs"][0]["tests"]["synth"]["height"]
    assert height["pixels"] == 2 * 32 * 32 and height["mae"] >= 0 and height["rmse"] >= height["mae"]
    assert 0 <= height["delta1"] <= 1
    assert "## Height: MAE (m) / RMSE (m) / δ<1.25" in (out / "report.md").read_text()

    out = tmp_path / "adapt"
    stdout = ok(
        invoke(
            "adapt", "--config", "tiny", "--out", out, "--threshold", "0.2",
            "--source", f"synth={data['synth']}", "--target", f"shifted={data['shifted']}:train",
            "--test", f"shifted={data['shifted']}", "--test", f"real={data['scene']}",
        )
    )  # fmt: skip
    assert "| architecture | test set | source only | adapted | gain | pseudo-label coverage |" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "adapt" and report["config"]["task"] == ["seg", "height"]  # multi-task: height exists
    assert report["config"]["pseudo_threshold"] == 0.2
    kinds = [(r["kind"], r["arch"]) for r in report["runs"]]
    assert kinds == [("source_only", "unet"), ("adapted", "unet")]
    adapted = report["runs"][1]
    assert adapted["training"]["steps"] == 2 and len(adapted["training"]["coverage"]) == 2
    assert 0 <= adapted["training"]["pseudo_label_coverage"] <= 1
    assert adapted["tests"]["shifted"]["height"]["pixels"] > 0  # scored on height where the test set has it
    assert "height" not in adapted["tests"]["real"] and adapted["tests"]["real"]["miou"] is not None
    assert report["sets"]["target"]["shifted"]["parts"][0]["split"] == "train"
    assert "Self-training adaptation" in (out / "report.md").read_text()


PAPER_SETS = {"real", "controlnet_real", "spade_real", "controlnet_synthetic", "spade_synthetic"}


def _paper(data, out: Path, *extra: str) -> str:
    return ok(
        invoke(
            "validate", "--paper", "--config", "tiny", "--out", out, "--arch", "unet",
            "--set", f"paper_real={data['scene']}", "--set", "paper_train_tiles=2", "--set", "paper_val_tiles=2",
            *extra,
        )
    )  # fmt: skip


def test_paper_study_builds_all_five_sets_with_the_embedded_defaults(data, tmp_path):
    out = tmp_path / "paper"
    _paper(data, out, "--set", "paper_filter=0.0")
    report = json.loads((out / "report.json").read_text())
    filtered = {f"{s}_synthetic_{k}" for s in ("spade", "controlnet") for k in ("filtered", "random")}
    assert set(report["sets"]["train"]) == PAPER_SETS | filtered and PAPER_SETS == set(report["sets"]["test"])
    assert report["missing"] == []
    assert {run["train"] for run in report["runs"]} == PAPER_SETS | filtered
    assert all(set(run["tests"]) == PAPER_SETS for run in report["runs"])  # the full cross-test
    (work,) = (out / "paper_data").glob("generators-*")  # named by the embedded weights it was generated with
    assert set(json.loads((work / "generators.json").read_text())) == {
        "landcover", "rgb_controlnet", "rgb_spade", "label_filter"
    }  # fmt: skip
    for name in ("spade_synthetic", "controlnet_synthetic"):  # the embedded filter model scored every tile
        scored = read_manifest(work / f"paper_{name}_scored_train.parquet")
        kept = sum(json.loads(m)["label_agreement"] is not None for m in scored["meta"])
        sizes = {k: report["sets"]["train"][f"{name}_{k}"]["tiles"] for k in ("filtered", "random")}
        assert sizes == {"filtered": kept, "random": kept}
    assert "## Missing" not in (out / "report.md").read_text()


def test_new_generator_weights_give_new_paper_sets(tmp_path, monkeypatch):
    from synthgen.validation import paper

    weights = tmp_path / "weights"
    monkeypatch.setattr(paper, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(paper, "DEFAULT_FILTER_MODEL", weights / "label_filter")
    (weights / "landcover" / "unet").mkdir(parents=True)
    (weights / "landcover" / "model_index.json").write_text("{}")
    (weights / "landcover" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"old")
    before, hashes = paper.generators_fingerprint()
    assert set(hashes) == {"landcover"}
    (weights / "landcover" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"new")
    assert paper.generators_fingerprint()[0] != before
    (weights / "landcover" / "preview.png").write_bytes(b"a picture is not the model")
    (weights / "landcover" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"old")
    assert paper.generators_fingerprint()[0] == before


def test_paper_study_without_generators_runs_with_real_and_names_what_is_missing(data, tmp_path, monkeypatch):
    from synthgen.validation import paper

    monkeypatch.setattr(paper, "WEIGHTS_DIR", tmp_path / "no_weights")  # a checkout before `make weights`
    out = tmp_path / "paper"
    stdout = _paper(data, out)
    report = json.loads((out / "report.json").read_text())
    missing = {m["set"]: m["reason"] for m in report["missing"]}
    assert set(report["sets"]["train"]) == {"real"}
    assert set(missing) == PAPER_SETS - {"real"}
    assert all("no embedded weights" in reason and "make weights-" in reason for reason in missing.values())
    for name in missing:
        assert f"missing {name}: " in stdout
    assert "## Missing" in (out / "report.md").read_text()


def _custom_scheme(tmp_path: Path) -> Path:
    path = tmp_path / "forest.yaml"
    classes = [{"code": 0, "name": "nodata"}, {"code": 1, "name": "forest"}]
    path.write_text(yaml.safe_dump({"name": "forest", "nodata": 0, "classes": classes}))
    return path


BAD_INPUTS = {
    "missing manifest": (["--train", "a={root}/nope.parquet", "--test", "b={scene}"], "manifest not found"),
    "empty manifest": (["--train", "a={empty}", "--test", "b={scene}"], "holds no tiles"),
    "test set without labels": (["--train", "a={scene}", "--test", "b={rgb_only}:all"], "no tile has a label"),
    "unknown architecture": (
        ["--train", "a={scene}", "--test", "b={scene}", "--arch", "unet,segformer"],
        "unknown architecture 'segformer' (allowed: deeplabv3plus, unet, unetplusplus)",
    ),
    "unknown encoder": (
        ["--train", "a={scene}", "--test", "b={scene}", "--encoder", "resnet19"],
        "unknown encoder 'resnet19'",
    ),
    "irreconcilable schemes": (
        ["--train", "a={scene}", "--test", "b={scene}", "--scheme", "{forest}"],
        "class schemes cannot be reconciled",
    ),
    "height task without height": (
        ["--train", "a={scene}", "--test", "b={scene}", "--task", "seg,height"],
        "no tile has height",
    ),
    "unknown task": (["--train", "a={scene}", "--test", "b={scene}", "--task", "depth"], "task 'depth'"),
    "crop larger than tiles": (["--train", "a={scene}", "--test", "b={scene}", "--set", "crop=64"], "crop"),
    "malformed set": (["--train", "real", "--test", "b={scene}"], "expected NAME=<manifest>"),
    "absent split": (["--train", "a={synth}:test", "--test", "b={scene}"], "no tiles in split 'test'"),
    "missing weights file": (
        ["--train", "a={scene}", "--test", "b={scene}", "--encoder-weights", "{root}/none.pth"],
        "encoder_weights",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, data, tmp_path):
    args, message = BAD_INPUTS[case]
    values = {k: v for k, v in data.items() if k != "root"} | {"root": data["root"], "forest": _custom_scheme(tmp_path)}
    args = [a.format(**values) for a in args]
    result = invoke("validate", "--config", "tiny", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_report_and_adapt_bad_input(data, tmp_path):
    result = invoke("report", tmp_path / "nope.json")
    assert result.exit_code == 2 and "report not found" in result.output
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    result = invoke("report", tmp_path / "bad.json")
    assert result.exit_code == 2 and "not a synthgen validation report" in result.output
    result = invoke(
        "adapt", "--config", "tiny", "--out", tmp_path / "o", "--source", f"s={data['scene']}",
        "--target", f"t={data['rgb_only']}:all", "--test", f"r={data['scene']}", "--task", "seg,height",
    )  # fmt: skip
    assert result.exit_code == 2 and "no tile has height" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_seeds_monitoring_and_mix_sets_report_mean_and_spread(data, tmp_path):
    out = tmp_path / "seeds"
    args = ["validate", "--config", "tiny", "--out", out, "--arch", "unet", "--seeds", "0,1", "--steps", "12"]
    args += ["--train", f"real={data['scene']}", "--train", f"synth={data['synth']}", "--train", f"two={data['synth']}"]
    args += ["--test", f"real={data['scene']}", "--real-fraction", "0.5", "--set", "mix_sets=synth"]
    args += [
        "--set",
        "monitor_every=1",
        "--set",
        "monitor_tiles=2",
        "--set",
        "lr_schedule=constant",
        "--set",
        "weights_ema=0.9",
    ]
    stdout = ok(invoke(*args))
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["runs"]]
    assert names[:3] == ["real-unet-s0", "synth-unet-s0", "two-unet-s0"] and "mix0.5-real+synth-unet-s1" in names
    assert not any("two" in n for n in names if n.startswith("mix"))  # only the mix_sets are mixed in
    assert {r["seed"] for r in report["runs"]} == {0, 1}
    s0, s1 = (next(r for r in report["runs"] if r["name"] == f"real-unet-s{s}") for s in (0, 1))
    assert s0["training"]["folder"] != s1["training"]["folder"]  # one model per seed
    for run in (s0, s1):
        curve = run["training"]["val_loss"]
        assert [step for step, _ in curve] == list(range(1, 13)) and all(loss > 0 for _, loss in curve)
        assert run["training"]["convergence"]["plateau"] in (True, False)
    real = next(g for g in report["summary"] if g["kind"] == "crosstest" and g["train"] == "real")
    assert real["seeds"] == [0, 1] and real["monitored"] == 2
    miou = real["tests"]["real"]["miou"]
    values = [s0["tests"]["real"]["miou"], s1["tests"]["real"]["miou"]]
    assert miou["n"] == 2 and miou["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
    assert miou["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5, abs=1e-4)
    markdown = (out / "report.md").read_text()
    assert f"| real | unet | 2 | {miou['mean']:.3f} ± {miou['sd']:.3f} |" in stdout
    assert "## Convergence" in markdown and "## Per-class IoU on 'real'" in markdown and "| 0.5 | " in markdown
    assert report["config"]["lr_schedule"] == "constant"

    # scripts/fidelity.py (make fidelity) summarises such a report: targets it cannot judge are None, never guessed
    script = Path(__file__).resolve().parents[1] / "scripts" / "fidelity.py"
    args = [sys.executable, script, out / "report.json", "--out", tmp_path / "f.json", "--plot", tmp_path / "f.png"]
    subprocess.run([str(a) for a in args], check=True, capture_output=True)
    summary = json.loads((tmp_path / "f.json").read_text())
    folders = {r["training"]["folder"] for r in report["runs"]}
    assert summary["seeds"] == [0, 1] and summary["models"] == len(folders) and summary["runs"] == 10
    assert summary["targets"]["spade"]["generated labels / real"] == {"ratio": None, "target": 1.0, "met": None}
    assert summary["class_iou"]["real"].keys() == {"road", "tree", "building"}
    assert (tmp_path / "f.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("losses", "plateau"),
    [([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], False), ([1.0, 0.6, 0.5] + [0.45] * 7, True),
     ([1.0, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.42, 0.45, 0.5], True), ([1.0, 0.5], None)],
)  # fmt: skip
def test_convergence_is_the_trend_of_the_last_fifth(losses, plateau):
    from synthgen.validation.convergence import convergence

    curve = [[10 * (i + 1), loss] for i, loss in enumerate(losses)]
    result = convergence(curve, 10 * len(losses) if len(losses) > 2 else 100, 0.02)
    assert result["plateau"] is plateau
    assert result["best_loss"] == min(losses)


def test_a_set_value_is_kept_when_the_option_of_the_same_key_is_left_out():
    from synthgen.cli.validate import _validation_config

    cfg = _validation_config("fidelity", {"real_fraction": None, "seeds": None}, ["real_fraction=", "seeds=4,5"])
    assert cfg.real_fraction == [] and cfg.seeds == [4, 5]
    assert _validation_config("fidelity", {"seeds": "1"}, ["seeds=4,5"]).seeds == [1]  # the option wins


@pytest.mark.parametrize("text", ["null", "None", "~", ""])
def test_set_null_gives_none_where_none_is_allowed(text):
    from synthgen.cli.validate import _validation_config

    assert _validation_config("fidelity", {}, [f"paper_filter={text}"]).paper_filter is None  # the profile says 0.3
    assert _validation_config("fidelity", {}, [f"paper_train_tiles={text}", "paper_val_tiles=8"]).paper_val_tiles == 8
    with pytest.raises(ConfigError, match="config 'steps': expected int, got 'null'"):
        _validation_config("fidelity", {}, ["steps=null"])  # not where None is not allowed


def test_adapt_over_seeds_reports_mean_and_spread(data, tmp_path):
    out = tmp_path / "adapt-seeds"
    stdout = ok(
        invoke(
            "adapt", "--config", "tiny", "--out", out, "--threshold", "0.2", "--seeds", "0,1", "--task", "seg",
            "--source", f"synth={data['synth']}", "--target", f"shifted={data['shifted']}:train",
            "--test", f"shifted={data['shifted']}",
        )
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert [(r["kind"], r["seed"]) for r in report["runs"]] == [
        ("source_only", 0), ("adapted", 0), ("source_only", 1), ("adapted", 1)
    ]  # fmt: skip
    folders = {r["training"]["folder"] for r in report["runs"]}
    assert len(folders) == 4  # one source-only and one adapted model per seed
    groups = {g["kind"]: g for g in report["summary"]}
    values = [r["tests"]["shifted"]["miou"] for r in report["runs"] if r["kind"] == "adapted"]
    assert groups["adapted"]["seeds"] == [0, 1]
    assert groups["adapted"]["tests"]["shifted"]["miou"]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
    assert " ± " in stdout.split("| unet | shifted |")[1].splitlines()[0]
