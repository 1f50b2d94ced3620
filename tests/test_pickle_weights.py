"""Model folders load safetensors only (synthgen/io/weights.py): a folder whose weights are pickle files is refused
with one line and nothing on stderr from the libraries, before anything unpickles a byte of it; a folder holding
both loads its safetensors and never opens the pickle."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthgen.errors import ConfigError
from synthgen.io.weights import pickle_weights, refuse_pickle_weights
from synthgen.models.sd3_components import load_sd3_pipeline
from synthgen.models.sd_components import load_base_components
from synthgen.pipelines.landcover import LandCoverPipeline
from synthgen.validation.label_recovery import load_segmentation_model
from tests.test_landcover import _tiny_pipeline

REPO = Path(__file__).resolve().parents[1]


class _Marker:
    """Unpickling this writes the file named ``path``: proof that a pickle was opened."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "unpickled"))


@pytest.fixture(scope="module")
def lc_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lc") / "model"
    _tiny_pipeline().save_pretrained(folder)
    return folder


def _as_pickle(model: Path, folder: Path, keep_safetensors: bool = False) -> Path:
    """A copy of ``model`` with each safetensors file also (or only) saved as a pickle ``.bin``."""
    shutil.copytree(model, folder)
    for path in folder.rglob("*.safetensors"):
        torch.save(load_file(path), path.with_suffix(".bin"))
        if not keep_safetensors:
            path.unlink()
    return folder


def test_cli_refuses_pickle_weights_in_one_line_and_never_unpickles(lc_model, tmp_path):
    model = _as_pickle(lc_model, tmp_path / "pickled")
    marker = tmp_path / "unpickled.txt"
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"x": _Marker(marker)}))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "synthgen", "landcover", "--model", str(model), "--n", "1", "--size", "16",
         "--steps", "1", "--out", str(out), "--manifest", str(tmp_path / "m.parquet")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {model / 'autoencoder' / 'diffusion_pytorch_model.bin'} (and 1 more): ")
    assert "pickle weights are refused" in lines[0]
    assert not marker.exists()
    assert not out.exists() and not (tmp_path / "m.parquet").exists()


def test_folder_with_safetensors_beside_a_pickle_loads_the_safetensors(lc_model, tmp_path):
    model = _as_pickle(lc_model, tmp_path / "both", keep_safetensors=True)
    marker = tmp_path / "unpickled.txt"
    for path in model.rglob("*.bin"):
        path.write_bytes(pickle.dumps({"x": _Marker(marker)}))
    pipe = LandCoverPipeline.from_pretrained(model)
    reference = LandCoverPipeline.from_pretrained(lc_model)
    for name, value in reference.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], value), name
    assert not marker.exists()


@pytest.mark.parametrize("name", ["w.bin", "w.pt", "w.PTH", "sub/w.ckpt", "w.pkl", "w.pickle"])
def test_every_pickle_suffix_is_found_unless_safetensors_lie_beside_it(tmp_path, name):
    path = tmp_path / "m" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert pickle_weights(tmp_path / "m") == [path]
    with pytest.raises(ConfigError, match=f"{path.name}: pickle weights are refused"):
        refuse_pickle_weights(tmp_path / "m")
    (path.parent / "w.safetensors").write_bytes(b"x")
    assert pickle_weights(tmp_path / "m") == []


def test_hub_ids_and_plain_files_have_no_pickle_weights(tmp_path):
    assert pickle_weights("someone/some-model") == []
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert pickle_weights(tmp_path) == []


def _pickled_folder(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "pickled"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}" if name.endswith(".json") else "")
    return folder


def test_sd3_sd_base_and_segmentation_loaders_refuse_pickle_weights(tmp_path):
    sd3 = _pickled_folder(tmp_path / "sd3", "model_index.json", "transformer/diffusion_pytorch_model.bin")
    with pytest.raises(ConfigError, match="transformer/diffusion_pytorch_model.bin: pickle weights are refused"):
        load_sd3_pipeline(sd3)
    base = _pickled_folder(tmp_path / "sd", "model_index.json", "unet/diffusion_pytorch_model.bin")
    with pytest.raises(ConfigError, match="unet/diffusion_pytorch_model.bin: pickle weights are refused"):
        load_base_components(base)
    seg = _pickled_folder(tmp_path / "seg", "config.json", "diffusion_pytorch_model.bin")
    with pytest.raises(ConfigError, match="seg/pickled/diffusion_pytorch_model.bin: pickle weights are refused"):
        load_segmentation_model(seg)
