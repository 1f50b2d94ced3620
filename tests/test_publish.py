"""Publishing a dataset folder: the STAC catalog (validated offline against the core and extension schemas, read back
by pystac, its asset hrefs opened by rasterio and odc-stac), the data card (a Hugging Face dataset card that
``datasets.load_dataset`` loads by folder), QGIS styles and GDAL category names beside loose label tiles, and the
four loaders (TileDataset, webdataset, HF datasets, torchgeo) yielding the same tiles. One tiny ``synthgen dataset``
run (land cover, SPADE, validation on the ingested scene fixture) with ``loose_tiles``; models built from configs."""

from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import shutil
import socket
import tarfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import torch
import yaml
from pystac.validation import JsonSchemaSTACValidator, set_validator, validate_dict
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config
from synthgen.data import TileDataset, collate, torchgeo_dataset, wds_decode, wds_sample
from synthgen.errors import ConfigError, ManifestError, RasterError
from synthgen.evaluation.summary import summarize_manifest
from synthgen.io.geotiff import synthetic_georef, write_raster_file
from synthgen.io.manifest import read_manifest
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from synthgen.schema import load_scheme
from tests.conftest import scene_config_values
from tests.test_landcover import _tiny_pipeline
from tests.test_spade import _tiny_generator

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
STAGES = ["landcover", "rgb-spade"]
OEM8 = load_scheme("oem8")
runner = CliRunner()


@pytest.fixture(scope="module")
def published(fixtures_dir, tmp_path_factory) -> dict:
    """``synthgen dataset`` over tiny models: 6 land-cover tiles, SPADE RGB for each, a UNet validated on the scene
    fixture; published with loose tiles."""
    tmp = tmp_path_factory.mktemp("publish")
    ingest = build_config(IngestConfig, scene_config_values(fixtures_dir, tmp))
    run_ingest(ingest)
    _tiny_pipeline().save_pretrained(tmp / "landcover")
    RGBSpadePipeline(_tiny_generator(), "oem8", False).save_pretrained(tmp / "spade")
    config = {
        "name": "tiny",
        "stages": [*STAGES, "validate"],
        "preview_n": 4,
        "loose_tiles": True,
        "landcover": {"model": str(tmp / "landcover"), "n": 6, "size": 32, "steps": 2, "tiles_per_shard": 4},
        "rgb_spade": {"model": str(tmp / "spade"), "tiles_per_shard": 4},
        "validate": {"profile": "tiny", "real": str(ingest.manifest_path), "arch": ["unet"]},
    }
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["dataset", "--config", str(tmp / "tiny.yaml"), "--out", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    return {"out": tmp / "out", "models": tmp, "output": result.output}


def _manifest(out: Path, stage: str) -> pd.DataFrame:
    return read_manifest(out / stage / "manifest.parquet")


def _stac_files(root: Path) -> list[Path]:
    return [root / "catalog.json", *sorted(root.glob("*/collection.json")), *sorted(root.glob("*/items/*.json"))]


def _gdalinfo(path: Path) -> str:
    """What ``gdalinfo PATH`` prints, from GDAL's own library (the one rasterio ships)."""
    lib = glob.glob(str(Path(rasterio.__file__).parent.parent / "rasterio.libs" / "libgdal*"))
    gdal = ctypes.CDLL(lib[0] if lib else "libgdal.so")
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype, gdal.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALInfo.restype, gdal.GDALInfo.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]
    gdal.GDALClose.argtypes, gdal.VSIFree.argtypes = [ctypes.c_void_p], [ctypes.c_void_p]
    handle = gdal.GDALOpen(str(path).encode(), 0)
    assert handle, path
    text = gdal.GDALInfo(handle, None)
    try:
        return ctypes.string_at(text).decode()
    finally:
        gdal.VSIFree(text)
        gdal.GDALClose(handle)


@pytest.fixture
def offline_validator(monkeypatch):
    """pystac's validator with the vendored extension schemas, and no network: a schema it lacks is an error."""
    pytest.importorskip("jsonschema", reason="pystac validates with jsonschema, a dev extra")

    def no_network(*args, **kwargs):
        raise OSError("no network in the tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    validator = JsonSchemaSTACValidator()
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        validator.schema_cache[schema["$id"].rstrip("#")] = schema
    set_validator(validator)
    yield validator
    set_validator(JsonSchemaSTACValidator())


def validate_folder(root: Path) -> set[str]:
    """Validate every STAC object of dataset folder ``root`` as written (with ``offline_validator`` active); returns
    the schemas used."""
    used = set()
    for path in _stac_files(root):
        used |= set(validate_dict(json.loads(path.read_text()), href=str(path)))
    return used


def test_a_dataset_run_ends_by_publishing_catalog_card_and_loose_tiles(published):
    out = published["out"]
    assert (out / "catalog.json").is_file() and (out / "README.md").is_file()
    for stage in STAGES:
        df = _manifest(out, stage)
        assert sorted(p.stem for p in (out / stage / "items").glob("*.json")) == sorted(df["key"])
        for members, digests in zip(df["members"], df["sha256"], strict=True):
            for name, digest in zip(members, digests, strict=True):
                if name.endswith(".tif"):  # the loose tile is the shard member, byte for byte
                    assert hashlib.sha256((out / stage / "tiles" / name).read_bytes()).hexdigest() == digest
        labels = sorted((out / stage / "tiles").glob("*.label.tif"))
        assert len(labels) == len(df) and all(p.with_suffix(".qml").is_file() for p in labels)
        assert all(p.with_name(p.name + ".aux.xml").is_file() for p in labels)
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_the_catalog_validates_offline_against_the_core_and_extension_schemas(published, offline_validator):
    used = validate_folder(published["out"])
    assert {json.loads(p.read_text())["$id"].rstrip("#") for p in SCHEMAS.glob("*.json")} <= used
    item = json.loads(next((published["out"] / "rgb-spade" / "items").glob("*.json")).read_text())
    for broken in (
        {**item, "properties": {k: v for k, v in item["properties"].items() if k != "label:type"}},
        {**item, "assets": {**item["assets"], "label": {**item["assets"]["label"], "file:checksum": "sha256"}}},
        {**item, "properties": {**item["properties"], "proj:shape": [32]}},
    ):
        with pytest.raises(pystac.STACValidationError):
            validate_dict(broken)


def test_pystac_reads_the_catalog_back_with_geometry_lineage_checksums_and_models(published):
    out, models = published["out"], published["models"]
    catalog = pystac.Catalog.from_file(out / "catalog.json")
    assert [c.id for c in catalog.get_children()] == STAGES
    rgb = _manifest(out, "rgb-spade").set_index("key")
    items = {i.id: i for i in catalog.get_child("rgb-spade").get_items()}
    assert sorted(items) == sorted(rgb.index) and len(list(catalog.get_child("landcover").get_items())) == 6
    for key, item in items.items():
        row = rgb.loc[key]
        parent = item.get_single_link("derived_from").resolve_stac_object(root=catalog).target
        assert parent.id == row["parent_keys"][0] and parent.collection_id == "landcover"
        model = Path(item.get_single_link("via").href)
        assert model == (models / "spade" / "model_index.json").resolve() and model.is_file()
        props = item.properties
        assert props["synthgen:synthetic_georef"] is True and props["synthgen:georef"].startswith("synthetic")
        assert props["proj:transform"] == list(row["transform"]) and props["proj:code"] == "EPSG:3857"
        west, south, east, north = rasterio.warp.transform_bounds("EPSG:3857", "EPSG:4326", *props["proj:bbox"])
        assert item.bbox == pytest.approx([west, south, east, north], abs=1e-8)
        counts = {c["name"]: c["count"] for c in props["label:overviews"][0]["counts"]}
        assert counts == {
            c.name: int(row["class_hist"][c.code]) for c in OEM8.valid_classes if row["class_hist"][c.code]
        }
        label = item.assets["label"].to_dict()
        hexes = {c["value"]: (c["description"], c["color_hint"]) for c in label["classification:classes"]}
        assert hexes == {c.code: (c.name, "{:02X}{:02X}{:02X}".format(*c.color)) for c in OEM8.classes}
        digests = dict(zip(row["members"], row["sha256"], strict=True))
        for kind, asset in item.assets.items():
            href = asset.get_absolute_href()
            assert asset.extra_fields["file:checksum"] == "1220" + digests[f"{key}.{kind}.tif"]
            assert hashlib.sha256(Path(href).read_bytes()).hexdigest() == digests[f"{key}.{kind}.tif"]


def test_vsitar_hrefs_open_with_rasterio_and_odc_stac_after_the_folder_moved(published, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(published["out"], moved, ignore=shutil.ignore_patterns("tiles", "models"))
    result = runner.invoke(app, ["stac", str(moved)])
    assert result.exit_code == 0 and "items: landcover 6, rgb-spade 6" in result.output, result.output
    catalog = pystac.Catalog.from_file(moved / "catalog.json")
    tiles = {s["key"]: s for s in TileDataset(moved / "rgb-spade" / "manifest.parquet")}
    items = list(catalog.get_child("rgb-spade").get_items())
    for item in items:
        for kind, asset in item.assets.items():
            assert asset.href.startswith(f"/vsitar/{moved}/rgb-spade/shards/") and asset.href.endswith(f".{kind}.tif")
            with rasterio.open(asset.href) as src:  # GDAL's path into the tar, as it is
                array = src.read()
                assert src.crs == "EPSG:3857" and list(src.transform)[:6] == item.properties["proj:transform"]
            want = tiles[item.id][kind]
            want = (want * 255).round().byte() if kind == "rgb" else want
            assert np.array_equal(array.squeeze(), want.numpy().squeeze(), equal_nan=True), (item.id, kind)
    odc_stac = pytest.importorskip("odc.stac", reason="odc-stac is a dev extra")
    cube = odc_stac.load(items, bands=["label"], groupby="id", chunks=None)
    by_time = sorted(items, key=lambda i: (i.datetime, i.id))
    assert cube["label"].shape[0] == len(items) and set(np.unique(cube["label"].values)) <= set(OEM8.codes)
    assert int((cube["label"].values > 0).sum()) == sum(int((tiles[i.id]["label"] > 0).sum()) for i in by_time)


def test_loose_label_tiles_carry_a_qgis_style_and_gdal_category_names(published, tmp_path):
    label = sorted((published["out"] / "rgb-spade" / "tiles").glob("*.label.tif"))[0]
    root = ET.parse(label.with_suffix(".qml")).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert root.tag == "qgis" and renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = [(int(e.get("value")), e.get("color"), e.get("label")) for e in renderer.iter("paletteEntry")]
    assert entries == [(c.code, "#{:02x}{:02x}{:02x}".format(*c.color), c.name) for c in OEM8.valid_classes]
    info = _gdalinfo(label)
    assert f"{label}.aux.xml" in info and "ColorInterp=Palette" in info
    categories = info.split("Categories:")[1].split("Metadata:")[0]
    assert [line.strip() for line in categories.strip().splitlines()] == [f"{c.code}: {c.name}" for c in OEM8.classes]
    with rasterio.open(label) as src:  # the sidecars change nothing GDAL reads from the file itself
        assert src.colormap(1)[8] == (*OEM8.classes[8].color, 255) and src.nodata == 0
    loose = tmp_path / "one.label.tif"  # every loose label raster synthgen writes gets them
    write_raster_file(loose, "label", np.full((16, 16), 3, np.uint8), synthetic_georef(0, 16, 1.0), OEM8)
    assert loose.with_suffix(".qml").is_file() and "3: developed space" in _gdalinfo(loose)


def test_the_card_is_a_hugging_face_dataset_card_that_loads_by_folder(published, tmp_path, monkeypatch):
    out = published["out"]
    text = (out / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other" and header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["image-segmentation", "depth-estimation"]
    configs = {c["config_name"]: c for c in header["configs"]}
    assert list(configs) == STAGES and configs["rgb-spade"].get("default") is True
    for stage, c in configs.items():
        assert sorted(out.glob(c["data_files"][0]["path"])) == sorted((out / stage / "shards").glob("*.tar"))
    for stage in STAGES:
        df = _manifest(out, stage)
        assert f"`{df['weights_hash'][0][:16]}…`" in text and f"![{stage}](previews/{stage}.png)" in text
        assert (out / "previews" / f"{stage}.png").is_file()
    shares = summarize_manifest(out / "rgb-spade" / "manifest.parquet")["classes"]["oem8"]["fractions"]
    assert f"| building | {100 * shares['building']:.1f} % | {100 * shares['building']:.1f} % |" in text
    validation = json.loads((out / "validate" / "stage.json").read_text())
    assert validation["table"] and all(line in text for line in validation["table"])
    assert "not rank the sets" in text and "The georeference is synthetic" in text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets", reason="datasets is a dev extra")
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))  # the default config
    tiles = {s["key"]: s for s in TileDataset(out / "rgb-spade" / "manifest.parquet")}
    assert len(rows) == 6
    for row in rows:
        tile = tiles[row["json"]["key"]]
        assert np.array_equal(np.asarray(row["label.tif"]), tile["label"].numpy())
        assert np.array_equal(np.asarray(row["rgb.tif"]), (tile["rgb"] * 255).round().byte().permute(1, 2, 0).numpy())
    assert len(datasets.load_dataset(str(out), "landcover", split="train", cache_dir=str(tmp_path / "hf"))) == 6


def test_a_licence_given_once_is_kept_by_card_and_stac(published, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(published["out"], folder, ignore=shutil.ignore_patterns("tiles", "models"))
    assert runner.invoke(app, ["card", str(folder), "--license", "cc-by-4.0"]).exit_code == 0
    assert runner.invoke(app, ["card", str(folder)]).exit_code == 0
    assert runner.invoke(app, ["stac", str(folder)]).exit_code == 0
    assert yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])["license"] == "cc-by-4.0"
    assert json.loads((folder / "landcover" / "collection.json").read_text())["license"] == "cc-by-4.0"


def test_the_four_loaders_yield_the_same_tiles(published):
    import webdataset as wds

    out = published["out"]
    manifest = out / "rgb-spade" / "manifest.parquet"
    tiles = TileDataset(manifest)
    shards = sorted(glob.glob(str(out / "rgb-spade" / "shards" / "*.tar")))
    streamed = list(wds.WebDataset(shards, shardshuffle=False).decode(wds_decode).map(wds_sample))
    assert [s["key"] for s in streamed] == list(tiles.df["key"])
    for i, sample in enumerate(streamed):
        want = tiles[i]
        assert {k: v for k, v in sample.items() if not k.startswith("__")}.keys() == want.keys()
        for key, value in want.items():
            same = (
                torch.equal(value.nan_to_num(), sample[key].nan_to_num())
                if torch.is_tensor(value)
                else value == sample[key]
            )
            assert same, key
    batch = next(iter(torch.utils.data.DataLoader(tiles, batch_size=4, collate_fn=collate)))
    assert batch["rgb"].shape == (4, 3, 32, 32) and batch["label"].dtype == torch.int64 and len(batch["crs"]) == 4
    with pytest.raises(ManifestError, match="no tiles in split 'train'"):
        TileDataset(manifest, split="train")
    pytest.importorskip("torchgeo", reason="torchgeo is a dev extra")
    loose = out / "rgb-spade" / "tiles"
    geo = torchgeo_dataset(loose, "rgb") & torchgeo_dataset(loose, "label")
    assert len(geo) == 6
    for i in range(len(tiles)):
        tile = tiles[i]
        x0, y0 = tile["transform"].c, tile["transform"].f
        sample = geo[x0 : x0 + 32, y0 - 32 : y0]  # the tile's own bounds in its CRS
        assert torch.equal(sample["mask"], tile["label"]) and torch.equal(sample["image"], tile["rgb"] * 255)
        assert sample["crs"] == "EPSG:3857"


def test_extract_refuses_a_tampered_member_and_leaves_the_folder_as_it_was(published, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(published["out"], folder, ignore=shutil.ignore_patterns("models"))
    shard = sorted((folder / "landcover" / "shards").glob("*.tar"))[-1]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".label.tif"))
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size - 1] ^= 0xFF
    shard.write_bytes(bytes(data))
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "shards" not in p.parts}
    result = runner.invoke(app, ["stac", str(folder), "--extract"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"member '{member.name}' does not match its sha256" in result.output
    assert before == {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "shards" not in p.parts}


def test_loader_and_publish_errors_say_what_is_wrong(published, tmp_path):
    with pytest.raises(ConfigError, match=r"raster kind 'ndvi' is unknown \(allowed: height, label, rgb\)"):
        torchgeo_dataset(published["out"] / "rgb-spade" / "tiles", "ndvi")
    with pytest.raises(RasterError, match="no loose label tiles .* synthgen stac DIR --extract"):
        torchgeo_dataset(published["out"] / "rgb-spade" / "shards", "label")
    for args, message in (
        (["stac", str(tmp_path / "nope")], "nope: dataset folder not found"),
        (["card", str(tmp_path)], "no stage manifests (<stage>/manifest.parquet)"),
        (["stac", str(published["out"] / "rgb-spade")], "not a dataset folder of synthgen dataset"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output, args
