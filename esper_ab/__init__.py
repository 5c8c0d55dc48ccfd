"""esper-ab."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from esper_ab.gate import Gate

__all__ = ["load_gate"]


def load_gate(path: str) -> Gate:
    """A validated G2 gate from an exported ``winner.yaml`` (see ``esper_ab.export``)."""
    from esper_ab.export import load_gate as _load_gate

    return _load_gate(path)
