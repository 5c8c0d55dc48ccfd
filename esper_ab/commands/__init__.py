"""CLI command groups, one module per subsystem (see esper_ab.cli); ``_options`` holds the
options they share."""

from esper_ab.commands._options import HelpFormatter

__all__ = ["HelpFormatter"]
