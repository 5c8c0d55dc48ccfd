"""CLI command groups, one module per subsystem (see esper_ab.cli)."""
