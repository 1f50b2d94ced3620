"""What the pipelines' ``from_pretrained`` share: refusing a folder that is not a model folder of the right class or
that holds pickle weights, and turning whatever diffusers, transformers, huggingface_hub or safetensors raise for a
broken folder (or a hub id that cannot be reached) into a one-line ``ConfigError``, with the libraries' own log lines
and warnings silenced while they load, so that the error is the only line."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthgen.errors import ConfigError, SynthgenError
from synthgen.io.weights import refuse_pickle_weights


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_model_folder(path: Path, class_name: str, what: str, required: bool = False) -> None:
    """Refuse a folder without ``model_index.json`` ("not a <what> model folder"), a corrupt one, one holding
    another pipeline class than ``class_name``, or one with pickle weights (synthgen.io.weights). A path that does
    not exist passes (a hub id) unless ``required``."""
    index = path / "model_index.json"
    if (required or path.exists()) and not index.is_file():
        raise ConfigError(f"{path}: not a {what} model folder (no model_index.json)")
    if index.is_file():
        try:
            name = json.loads(index.read_text()).get("_class_name")
        except (json.JSONDecodeError, AttributeError):
            raise ConfigError(f"{index}: not valid JSON; the model folder is corrupt") from None
        if name != class_name:
            raise ConfigError(f"{path}: holds a '{name}' pipeline, not {class_name}")
    refuse_pickle_weights(path)


@contextmanager
def loading_errors(source, what: str) -> Iterator[None]:
    """Re-raise any error of the block but a SynthgenError as ``<source>: cannot load <what> (<first line>)``; the
    libraries' log lines, warnings and progress bars are silenced inside the block."""
    from synthgen.models.sd3_components import quiet
    from synthgen.models.sd_components import quiet_loading

    try:
        with quiet(), quiet_loading(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except SynthgenError:
        raise
    except Exception as exc:  # diffusers, transformers, huggingface_hub and safetensors raise many types
        raise ConfigError(f"{source}: cannot load {what} ({first_line(exc)[:200]})") from None


def recorded_model_id(given: str | None, default: Path) -> str:
    """The model id a run records: as the user gave it, or ``synthgen/weights/<name>`` for an embedded default, so
    that tile bytes do not depend on where synthgen is installed."""
    return given if given is not None else f"synthgen/weights/{default.name}"
