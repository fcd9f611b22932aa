"""One progress-bar policy for every long call: shown once a call has run for a second."""

from __future__ import annotations

from typing import Any

__all__ = ["bar_options"]

#: Seconds a call runs before its bar appears (short calls stay quiet).
DELAY_S = 1.0


def bar_options(progress: bool | None) -> dict[str, Any]:
    """tqdm options: ``progress=None`` shows the bar for calls longer than a second,
    True shows it at once, False never."""
    return {"disable": progress is False, "delay": 0.0 if progress else DELAY_S}
