"""Did a training run converge? The validation-loss curve's trend over the last fifth of the steps.

A least-squares line through the curve's points in the last fifth gives the change across that fifth, relative to
the mean loss there. A drop larger than the tolerance means the loss was still falling: the model had not reached
its plateau and a comparison of training sets made with it ranks optimisation, not data. A rise (over-fitting) or a
flat line is a plateau: more steps at this learning rate would not make the model better.
"""

from __future__ import annotations

import numpy as np

LAST_PART = 0.2
MIN_POINTS = 3


def convergence(curve: list[list[float]], steps: int, tolerance: float) -> dict:
    """The trend of ``curve`` (``[step, loss]`` pairs of a ``steps``-long run) over its last fifth: the relative
    change, whether that is a plateau (a drop of at most ``tolerance``), and the lowest loss and its step."""
    points = np.asarray(curve, dtype=float).reshape(-1, 2)
    best = int(points[:, 1].argmin()) if len(points) else None
    result = {
        "tolerance": tolerance,
        "best_step": int(points[best, 0]) if best is not None else None,
        "best_loss": round(float(points[best, 1]), 6) if best is not None else None,
        "final_loss": round(float(points[-1, 1]), 6) if len(points) else None,
    }
    tail = points[points[:, 0] >= (1 - LAST_PART) * steps]
    if len(tail) < MIN_POINTS:
        return {**result, "last_fifth_change": None, "plateau": None}
    slope = np.polyfit(tail[:, 0], tail[:, 1], 1)[0]
    change = float(slope * LAST_PART * steps / tail[:, 1].mean())
    return {**result, "last_fifth_change": round(change, 4), "plateau": bool(change >= -tolerance)}
