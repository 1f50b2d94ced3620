"""Loading synthgen tiles for training, one way per toolkit; every way yields the same sample dicts.

- Plain PyTorch: ``TileDataset(manifest, split=None)``, a map-style Dataset over a manifest (``synthgen.io.manifest``,
  the one tile reader), items ``{key, rgb, label, height, crs, transform, prompt, meta}`` (rgb float 3xHxW in
  [0, 1], label int64 HxW, height float 1xHxW; rasters a tile lacks are absent); ``collate`` batches them for a
  DataLoader.
- webdataset: ``wds.WebDataset(shards, shardshuffle=False).decode(wds_decode).map(wds_sample)`` streams the shards
  and yields the same dicts (the rasters decoded by synthgen's GeoTIFF reader, the rest from each tile's ``.json``).
- Hugging Face ``datasets``: ``load_dataset(dataset_folder, stage)``, from the configs of the folder's data card
  (``synthgen card``); no synthgen code is involved.
- torchgeo: ``torchgeo_dataset(tiles_folder, kind)``, a ``RasterDataset`` over loose tiles (``synthgen stac
  --extract``); ``&`` two of them (rgb and label) for image/mask samples.

docs/publish.md shows each with a dataset folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from affine import Affine

from synthgen.errors import ConfigError, RasterError, allowed
from synthgen.io.geotiff import RASTER_KINDS, decode_array
from synthgen.io.manifest import TileDataset, tensor_sample

__all__ = ["TileDataset", "collate", "torchgeo_dataset", "wds_decode", "wds_sample"]


def wds_decode(key: str, data: bytes):
    """A webdataset decoder for synthgen shards: ``<kind>.tif`` members to arrays (as ``iter_samples`` reads them),
    ``json`` to a dict; None (not handled) for anything else."""
    extension = key.rsplit("/", 1)[-1].lower().lstrip(".")  # webdataset passes ".rgb.tif"
    kind = extension.removesuffix(".tif")
    if extension.endswith(".tif") and kind in RASTER_KINDS:
        return decode_array(data, kind, key)
    if extension == "json":
        return json.loads(data)
    return None


def wds_sample(record: dict) -> dict:
    """A webdataset record decoded by ``wds_decode`` as the sample dict ``TileDataset`` yields for the same tile."""
    doc = record["json"]
    meta = doc.get("meta", {})
    sample = {
        "key": doc.get("key", record.get("__key__")),
        **{kind: record.get(f"{kind}.tif") for kind in RASTER_KINDS},
        "crs": doc["crs"],
        "transform": Affine(*doc["transform"][:6]),
        "prompt": doc.get("prompt", ""),
        "meta": {**meta, "split": meta.get("split", ""), "source": meta.get("source", ""), "scheme": doc["scheme"]},
    }
    return tensor_sample(sample)


def collate(samples: list[dict]) -> dict:
    """Batch sample dicts for a DataLoader (``collate_fn=collate``): tensors stacked where every sample has one of
    the same shape, every other value a list (like torchgeo's ``stack_samples``)."""
    import torch

    batch = {}
    for key in samples[0]:
        values = [s.get(key) for s in samples]
        same = all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values)
        batch[key] = torch.stack(values) if same else values
    return batch


def torchgeo_dataset(folder: str | Path, kind: str, **kwargs):
    """A torchgeo ``RasterDataset`` over the loose ``*.<kind>.tif`` tiles in ``folder`` (``rgb`` and ``height`` as
    ``image``, ``label`` as ``mask``); ``kwargs`` go to ``RasterDataset`` (crs, res, transforms, cache)."""
    from torchgeo.datasets import RasterDataset

    if kind not in RASTER_KINDS:
        raise ConfigError(f"raster kind '{kind}' is unknown (allowed: {allowed(RASTER_KINDS)})")
    folder = Path(folder)
    if not any(folder.glob(f"*.{kind}.tif")):
        raise RasterError(
            f"{folder}: no loose {kind} tiles (*.{kind}.tif): write them with synthgen stac DIR --extract"
        )
    attrs = {
        "__doc__": f"synthgen's loose {kind} tiles.",
        "filename_glob": f"*.{kind}.tif",
        "is_image": kind != "label",
    }
    return type(f"Synthgen{kind.title()}Tiles", (RasterDataset,), attrs)(paths=[str(folder)], **kwargs)
