"""Seed blueprints: open catalogs of seeds, each declaring the slots it fits. The built-in
``cnn`` and ``transformer`` catalogs hold DOMAIN.md §3's seeds; every catalog gets the
``placebo`` (zero effect, same lifecycle) for free.

Every seed maps the slot activation ``h`` to ``s`` of the same shape; ``s - h`` is what a
blend adds (``y = h + alpha (s - h)``). ``param_count_formula`` is the documented count,
checked against the modules by the contract tests.
"""

from esper_ab.episodes.blueprints._registry import (
    PLACEBO,
    Blueprint,
    BlueprintCatalog,
    BlueprintSpec,
    blueprint_spec,
    build_seed,
    get_catalog,
    list_blueprints,
    list_catalogs,
    param_count_formula,
    register_catalog,
)

__all__ = [
    "PLACEBO",
    "Blueprint",
    "BlueprintCatalog",
    "BlueprintSpec",
    "blueprint_spec",
    "build_seed",
    "get_catalog",
    "list_blueprints",
    "list_catalogs",
    "param_count_formula",
    "register_catalog",
]
