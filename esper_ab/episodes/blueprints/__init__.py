"""Seed blueprints: the catalog of DOMAIN.md §3 for the CNN and the transformer, plus a
``placebo`` (zero effect, same lifecycle).

Every seed maps the slot activation ``h`` to ``s`` of the same shape; ``s - h`` is what a
blend adds (``y = h + alpha (s - h)``). ``param_count_formula`` is the documented count,
checked against the modules by the contract tests.
"""

from esper_ab.episodes.blueprints._registry import (
    PLACEBO,
    BlueprintSpec,
    blueprint_spec,
    build_seed,
    list_blueprints,
    param_count_formula,
)

__all__ = [
    "PLACEBO",
    "BlueprintSpec",
    "blueprint_spec",
    "build_seed",
    "list_blueprints",
    "param_count_formula",
]
