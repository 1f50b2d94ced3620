"""synthgen: synthetic remote-sensing training data with diffusion models."""

__version__ = "0.1.0"
