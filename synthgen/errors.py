"""Errors that reach the user as one line: the bad value, where it was, and what is allowed."""

from __future__ import annotations

import reprlib

MAX_SHOWN = 80


class SynthgenError(Exception):
    """Base class for every error synthgen reports to a user; its message is one line."""

    exit_code = 2


class ConfigError(SynthgenError):
    """A configuration value or a command-line option is invalid."""


class SchemeError(SynthgenError):
    """A class scheme is unknown or malformed, or a label holds a value the scheme does not define."""


class RasterError(SynthgenError):
    """A raster is missing, unreadable, or does not match its partner (size, CRS, grid)."""


class ManifestError(SynthgenError):
    """A manifest is missing, has missing columns, or points at shards that do not match it."""


class ShardError(SynthgenError):
    """A shard is missing, truncated, or a member's content does not match its recorded hash."""


class TileError(SynthgenError):
    """A generated tile is broken (NaN in a raster): it is refused, never written."""


class MetadataError(SynthgenError):
    """A sites table, climate cube or normals table is missing, malformed, or holds values out of range."""


class PromptError(SynthgenError):
    """A prompt template is malformed, names a field outside the whitelist, or gives an empty prompt."""


class WriterDiedError(SynthgenError):
    """A tile writer process died under a job (killed, out of memory): the job stops and can be resumed."""

    def __init__(self, cause: Exception):
        super().__init__(f"a tile writer process died ({cause}); rerun the command to resume")


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, with integers too long to print said by their size."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3000:  # past ~900 digits; Python refuses to print past 4300
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, MAX_SHOWN, MAX_SHOWN, MAX_SHOWN
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = _SHORT.maxdeque = 6


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def shown(value, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters: a value read from a file may be huge (a
    YAML alias bomb is gigabytes), so containers and strings are cut while they are formatted, never repr'd whole.
    Every message that shows a value given by a user or read from a file goes through this."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # a value whose repr fails: say what it is
        text = f"<a {type(value).__name__}>"
    return _cut(" ".join(line.strip() for line in text.splitlines()), limit)


class FolderBusyError(SynthgenError):
    """Another running job holds the output folder's lock: the message says who (pid, command, start time)."""


class JobInterrupted(SynthgenError):
    """A job stopped by SIGINT or SIGTERM: its finished shards are kept and a rerun of the same command resumes it.
    The exit code is the shell's for the signal (128 + its number)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignal(BaseException):  # noqa: N818 (a stop request, not an error)
    """SIGTERM during a job, raised in the main thread like SIGINT's KeyboardInterrupt (a BaseException, so no
    ``except Exception`` swallows it); the engine turns it into a JobInterrupted."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def allowed(values) -> str:
    """Format a collection of allowed values for an error message (each cut to ``MAX_SHOWN`` characters)."""
    vals = sorted(values, key=str)
    text = [_cut(str(v), MAX_SHOWN) for v in vals[:20]]
    if len(vals) > 20:
        return ", ".join(text) + f", ... ({len(vals)} in all)"
    return ", ".join(text)
