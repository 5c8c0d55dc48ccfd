"""Integrations with real clients of esper-ab, and plots for the tables they yield.

Nothing in this package imports a client at import time: ``import esper_ab`` and
``import esper_ab.integrations.esper_lite`` work where esper-lite is not installed.
"""

from esper_ab.integrations._plots import (
    PLOT_FILES,
    observational_figures,
    write_observational_plots,
)

__all__ = ["PLOT_FILES", "observational_figures", "write_observational_plots"]
