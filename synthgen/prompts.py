"""Text prompts built from tile metadata: the composition prompt of a label map.

``composition_prompt`` turns a label map (or its class shares, or a manifest's ``class_hist``) into
``"aerial image; 40 % building, 25 % road, 20 % tree"``: classes sorted by share (largest first, ties by code),
shares of the labelled pixels rounded to 5 %, classes that round to 0 % left out, then optional user text after
another ``"; "``. Pure functions, no model: the ControlNet training and the ``synthgen rgb`` job use the same text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from synthgen.errors import ConfigError, allowed, shown
from synthgen.schema import ClassScheme

PROMPT_PREFIX = "aerial image"
SHARE_STEP_PERCENT = 5


def class_shares(composition, scheme: ClassScheme) -> dict[int, float]:
    """Share of each valid class code among the labelled pixels (nodata excluded); {} when nothing is labelled.

    ``composition``: a label array (2-D or more, scheme codes), a 1-D per-code pixel count (a manifest's
    ``class_hist``), or a mapping from class code or class name to a share or count.
    """
    valid = {c.code for c in scheme.valid_classes}
    if isinstance(composition, Mapping):
        by_name = {c.name: c.code for c in scheme.valid_classes}
        counts: dict[int, float] = {}
        for key, value in composition.items():
            code = by_name.get(key, key) if isinstance(key, str) else int(key)
            if code == scheme.nodata:
                continue
            if code not in valid:
                raise ConfigError(
                    f"class {shown(key)} is not in scheme '{scheme.name}' "
                    f"(allowed: {allowed(list(by_name) + sorted(valid))})"
                )
            counts[code] = counts.get(code, 0.0) + float(value)
    else:
        array = np.asarray(composition)
        if array.ndim >= 2:
            codes, pixel_counts = np.unique(array, return_counts=True)
            unknown = sorted(set(codes.tolist()) - valid - {scheme.nodata})
            if unknown:
                raise ConfigError(
                    f"label value(s) {allowed(unknown)} are not in scheme '{scheme.name}' "
                    f"(allowed: {allowed(scheme.codes)})"
                )
            counts = {int(c): float(n) for c, n in zip(codes, pixel_counts, strict=True) if int(c) in valid}
        elif isinstance(composition, Sequence | np.ndarray):
            counts = {code: float(n) for code, n in enumerate(array.tolist()) if code in valid}
        else:
            raise ConfigError(f"composition must be a label array, a class_hist or a mapping, got {type(composition)}")
    if any(v < 0 or not np.isfinite(v) for v in counts.values()):
        raise ConfigError(f"class shares must be finite and >= 0, got {counts}")
    total = sum(counts.values())
    return {code: n / total for code, n in counts.items() if n > 0} if total > 0 else {}


def composition_prompt(composition, scheme: ClassScheme, extra: str | None = None) -> str:
    """``"aerial image; 40 % building, 25 % road, ..."`` (+ ``"; <extra>"``) for a label map or its class shares.

    See the module docstring for the rounding rules; ``composition`` is anything ``class_shares`` takes.
    """
    shares = class_shares(composition, scheme)
    names = scheme.names
    rounded = [
        (int(np.floor(share * 100 / SHARE_STEP_PERCENT + 0.5)) * SHARE_STEP_PERCENT, code)
        for code, share in shares.items()
    ]
    parts = [f"{pct} % {names[code]}" for pct, code in sorted(rounded, key=lambda r: (-r[0], r[1])) if pct > 0]
    text = PROMPT_PREFIX + ("; " + ", ".join(parts) if parts else "")
    extra = (extra or "").strip()
    return f"{text}; {extra}" if extra else text


def composition_prompts(labels, scheme: ClassScheme, extra: str | None = None) -> list[str]:
    """One composition prompt per label map of a (B, H, W) batch (numpy or torch)."""
    array = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
    return [composition_prompt(label, scheme, extra) for label in array]


def prompt_vocabulary(scheme: ClassScheme) -> list[str]:
    """Texts covering every word a composition prompt of ``scheme`` can hold (for training a tokenizer)."""
    names = [c.name for c in scheme.valid_classes]
    shares = [f"{pct} % {name}" for pct in range(SHARE_STEP_PERCENT, 101, SHARE_STEP_PERCENT) for name in names]
    return [PROMPT_PREFIX, *shares, *(f"{PROMPT_PREFIX}; {s}" for s in shares)]
