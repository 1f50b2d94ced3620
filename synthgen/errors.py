"""Errors that reach the user as one line: the bad value, where it was, and what is allowed."""

from __future__ import annotations


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
    """Format a collection of allowed values for an error message."""
    vals = sorted(values, key=str)
    if len(vals) > 20:
        return ", ".join(map(str, vals[:20])) + f", ... ({len(vals)} in all)"
    return ", ".join(map(str, vals))
