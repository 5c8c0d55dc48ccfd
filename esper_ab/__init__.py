"""esper-ab."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from esper_ab.gate import Gate

__all__ = ["load_gate"]


def load_gate(spec: str | os.PathLike[str]) -> Gate:
    """A validated G2 gate from a preset name (``esper_lite_kasmina``), a plain gate file or
    an exported ``winner.yaml`` (hash-checked); see ``esper_ab.export``."""
    from esper_ab.export import load_gate as _load_gate

    return _load_gate(spec)
