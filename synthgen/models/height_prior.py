"""A height prior: a plausible height map (metres above ground) from a label map alone.

The labelled real data has no height, yet every synthetic tile needs one. ``HeightPrior`` draws heights
class by class from distributions fitted to real lidar heights (``synthgen.training.height_prior_fit``):

- building: one roof height per connected component (log-normal, clipped); with probability
  ``roof_pitch_probability`` a component no wider than ``2 * roof_pitch_max_half_width_m`` gets a gable roof
  whose ridge runs along its longer axis, rising ``roof_pitch_ratio`` metres per metre from the eaves
  (the component's mean height stays the drawn height);
- tree: crowns at random centres inside tree areas (about one per crown disk), each with a log-normal top
  height and a paraboloid profile that falls to ``tree_crown_edge_ratio`` of the top at the crown radius;
  every tree pixel belongs to its nearest crown;
- low vegetation (rangeland, agriculture): one log-normal level per connected patch plus pixel noise,
  clipped to ``[0, low_vegetation_height_max]``;
- ground classes (bareland, developed space, road, water): half-normal noise of ``ground_noise_sigma``;
- nodata: NaN.

Class codes default to the ``oem8`` scheme. All randomness comes from the ``numpy.random.Generator`` passed
in, so the same seed gives the same heights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from diffusers.configuration_utils import ConfigMixin, register_to_config
from scipy import ndimage as ndi

from synthgen.errors import ConfigError, SchemeError, allowed

_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


class HeightPrior(ConfigMixin):
    """Label map -> height map (float32 metres above ground, NaN where the label is nodata).

    The constructor arguments are the fitted parameters; ``fit_height_prior`` estimates them from real
    lidar heights, and ``save_pretrained`` / ``from_pretrained`` store them as ``height_prior.json``.
    Log-normal parameters ``mu``/``sigma`` are the mean and standard deviation of the natural log of the
    height in metres.
    """

    config_name = "height_prior.json"

    @register_to_config
    def __init__(
        self,
        building_height_mu: float = 1.93,
        building_height_sigma: float = 0.35,
        building_height_min: float = 2.5,
        building_height_max: float = 40.0,
        roof_pitch_probability: float = 0.6,
        roof_pitch_ratio: float = 0.5,
        roof_pitch_max_half_width_m: float = 9.0,
        tree_height_mu: float = 2.2,
        tree_height_sigma: float = 0.4,
        tree_height_min: float = 2.0,
        tree_height_max: float = 35.0,
        tree_crown_radius_m: float = 4.0,
        tree_crown_radius_jitter: float = 0.25,
        tree_crown_edge_ratio: float = 0.4,
        low_vegetation_height_mu: float = -1.0,
        low_vegetation_height_sigma: float = 0.5,
        low_vegetation_height_max: float = 1.0,
        ground_noise_sigma: float = 0.05,
        building_class: int = 8,
        tree_class: int = 5,
        low_vegetation_classes: list[int] | None = None,
        ground_classes: list[int] | None = None,
        nodata_class: int = 0,
        gsd: float = 2.0,
    ):
        low = [2, 7] if low_vegetation_classes is None else [int(c) for c in low_vegetation_classes]
        ground = [1, 3, 4, 6] if ground_classes is None else [int(c) for c in ground_classes]
        self.register_to_config(low_vegetation_classes=low, ground_classes=ground)
        for name in (
            "building_height_sigma",
            "tree_height_sigma",
            "low_vegetation_height_sigma",
            "ground_noise_sigma",
            "tree_crown_radius_jitter",
            "roof_pitch_ratio",
            "roof_pitch_max_half_width_m",
        ):
            value = getattr(self.config, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"height prior: {name}={value} must be a finite number >= 0")
        for name in ("tree_crown_radius_m", "gsd", "low_vegetation_height_max"):
            value = getattr(self.config, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"height prior: {name}={value} must be a finite number > 0")
        if not 0.0 <= roof_pitch_probability <= 1.0:
            raise ConfigError(f"height prior: roof_pitch_probability={roof_pitch_probability} must be in [0, 1]")
        if not 0.0 <= tree_crown_edge_ratio <= 1.0:
            raise ConfigError(f"height prior: tree_crown_edge_ratio={tree_crown_edge_ratio} must be in [0, 1]")
        if not 0.0 < building_height_min <= building_height_max:
            raise ConfigError(
                f"height prior: building height range [{building_height_min}, {building_height_max}] "
                "must satisfy 0 < min <= max"
            )
        if not 0.0 < tree_height_min <= tree_height_max:
            raise ConfigError(
                f"height prior: tree height range [{tree_height_min}, {tree_height_max}] must satisfy 0 < min <= max"
            )
        codes = [building_class, tree_class, nodata_class, *low, *ground]
        if len(set(codes)) != len(codes):
            raise ConfigError(f"height prior: each class code may play one role only, got {codes}")

    @property
    def known_codes(self) -> list[int]:
        """Every label code this prior assigns a height to (nodata included)."""
        c = self.config
        return sorted([c.building_class, c.tree_class, c.nodata_class, *c.low_vegetation_classes, *c.ground_classes])

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the parameters to ``save_directory/height_prior.json``."""
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_path: str | Path) -> HeightPrior:
        """Load a prior written by ``save_pretrained`` from a folder."""
        return cls.from_config(cls.load_config(pretrained_path))

    def __call__(self, labels: np.ndarray, gsd: float, generator: np.random.Generator) -> np.ndarray:
        """Draw a height map for ``labels`` (H, W) or (B, H, W) of integer class codes at ``gsd`` metres.

        Returns float32 metres above ground of the same shape, NaN where the label is nodata. Tiles of a
        batch are drawn one after another from ``generator``.
        """
        labels = self._check_inputs(labels, gsd, generator)
        if labels.ndim == 2:
            return self._one_tile(labels, float(gsd), generator)
        if labels.shape[0] == 0:
            return np.zeros(labels.shape, np.float32)
        return np.stack([self._one_tile(tile, float(gsd), generator) for tile in labels])

    def _check_inputs(self, labels: np.ndarray, gsd: float, generator: np.random.Generator) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim not in (2, 3):
            raise ConfigError(f"height prior: labels must be (H, W) or (B, H, W), got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"height prior: labels must hold integer class codes, got dtype {labels.dtype}")
        if not (np.isfinite(gsd) and gsd > 0):
            raise ConfigError(f"height prior: gsd={gsd} must be a finite number of metres > 0")
        if not isinstance(generator, np.random.Generator):
            raise ConfigError(
                f"height prior: generator must be a numpy.random.Generator, got {type(generator).__name__}"
            )
        unknown = sorted(set(np.unique(labels).tolist()) - set(self.known_codes))
        if unknown:
            raise SchemeError(
                f"height prior: label value(s) {allowed(unknown)} have no height rule "
                f"(allowed: {allowed(self.known_codes)})"
            )
        return labels

    def _one_tile(self, labels: np.ndarray, gsd: float, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        height = np.zeros(labels.shape, np.float64)

        ground = np.isin(labels, c.ground_classes)
        height[ground] = np.abs(rng.normal(0.0, c.ground_noise_sigma, int(ground.sum())))

        for code in c.low_vegetation_classes:
            self._low_vegetation(labels == code, height, rng)

        self._trees(labels == c.tree_class, height, gsd, rng)
        self._buildings(labels == c.building_class, height, gsd, rng)

        height[labels == c.nodata_class] = np.nan
        return height.astype(np.float32)

    def _low_vegetation(self, mask: np.ndarray, height: np.ndarray, rng: np.random.Generator) -> None:
        c = self.config
        comp, n = ndi.label(mask, structure=_FOUR_CONNECTED)
        if n == 0:
            return
        level = rng.lognormal(c.low_vegetation_height_mu, c.low_vegetation_height_sigma, n)
        values = level[comp[mask] - 1] + rng.normal(0.0, c.ground_noise_sigma, int(mask.sum()))
        height[mask] = np.clip(values, 0.0, c.low_vegetation_height_max)

    def _trees(self, mask: np.ndarray, height: np.ndarray, gsd: float, rng: np.random.Generator) -> None:
        c = self.config
        n_pixels = int(mask.sum())
        if n_pixels == 0:
            return
        radius_px = c.tree_crown_radius_m / gsd
        density = min(1.0, 1.0 / (np.pi * radius_px**2))
        ys, xs = np.nonzero(mask)
        is_centre = rng.random(n_pixels) < density

        comp, n = ndi.label(mask, structure=_FOUR_CONNECTED)
        pixel_comp = comp[ys, xs]
        has_centre = np.bincount(pixel_comp[is_centre], minlength=n + 1)[1:] > 0
        if not has_centre.all():
            key = rng.random(n_pixels)
            order = np.lexsort((key, pixel_comp))
            last_of_comp = order[np.r_[pixel_comp[order][1:] != pixel_comp[order][:-1], True]]
            lacking = ~has_centre[pixel_comp[last_of_comp] - 1]
            is_centre[last_of_comp[lacking]] = True

        n_crowns = int(is_centre.sum())
        top = np.clip(
            rng.lognormal(c.tree_height_mu, c.tree_height_sigma, n_crowns),
            c.tree_height_min,
            c.tree_height_max,
        )
        jitter = rng.uniform(1.0 - c.tree_crown_radius_jitter, 1.0 + c.tree_crown_radius_jitter, n_crowns)
        radius = np.maximum(radius_px * jitter, 0.5)

        crown_id = np.full(mask.shape, -1, np.int64)
        crown_id[ys[is_centre], xs[is_centre]] = np.arange(n_crowns)
        dist, (iy, ix) = ndi.distance_transform_edt(crown_id < 0, return_indices=True)
        nearest = crown_id[iy[ys, xs], ix[ys, xs]]
        u = np.minimum(dist[ys, xs] / radius[nearest], 1.0)
        height[ys, xs] = top[nearest] * (1.0 - (1.0 - c.tree_crown_edge_ratio) * u**2)

    def _buildings(self, mask: np.ndarray, height: np.ndarray, gsd: float, rng: np.random.Generator) -> None:
        c = self.config
        comp, n = ndi.label(mask, structure=_FOUR_CONNECTED)
        if n == 0:
            return
        roof = np.clip(
            rng.lognormal(c.building_height_mu, c.building_height_sigma, n),
            c.building_height_min,
            c.building_height_max,
        )
        pitch_draw = rng.random(n) < c.roof_pitch_probability

        ys, xs = np.nonzero(mask)
        k = comp[ys, xs] - 1
        values = roof[k]
        if c.roof_pitch_ratio > 0 and pitch_draw.any():
            count = np.bincount(k, minlength=n).astype(np.float64)
            x = xs * gsd
            y = ys * gsd
            mx = np.bincount(k, x, n) / count
            my = np.bincount(k, y, n) / count
            dx = x - mx[k]
            dy = y - my[k]
            cxx = np.bincount(k, dx * dx, n)
            cyy = np.bincount(k, dy * dy, n)
            cxy = np.bincount(k, dx * dy, n)
            theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
            across = np.abs(-np.sin(theta)[k] * dx + np.cos(theta)[k] * dy)
            half_width = ndi.maximum(across, k, np.arange(n)) + 0.5 * gsd
            pitched = pitch_draw & (half_width <= c.roof_pitch_max_half_width_m)
            rise = c.roof_pitch_ratio * (half_width[k] - across)
            mean_rise = np.bincount(k, rise, n) / count
            values = np.maximum(np.where(pitched[k], values + rise - mean_rise[k], values), 0.0)
        height[ys, xs] = values
