"""Publishing a dataset folder, the last step of ``synthgen dataset``: its STAC catalog (``dataset.stac``), then its
data card (``dataset.card``), which names the catalog."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from synthgen.dataset.card import write_card
from synthgen.dataset.stac import write_catalog


def publish_dataset(
    root: Path, extract: bool = False, license: str | None = None, log: Callable[[str], None] | None = None
) -> dict:
    """Write the STAC catalog (with ``extract``, loose tiles too) and the data card of dataset folder ``root``;
    returns the catalog's summary with the card's path."""
    catalog = write_catalog(root, extract=extract, license=license)
    card = write_card(root, license)
    if log:
        items = sum(catalog["collections"].values())
        loose = ", tiles extracted to <stage>/tiles/" if extract else ""
        log(
            f"publish: {catalog['catalog']} ({items} items in {len(catalog['collections'])} collections{loose}), {card}"
        )
    return {**catalog, "card": str(card)}
