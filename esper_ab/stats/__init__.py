"""Statistics for gate A/B tests: per-blueprint fairness, significance, A/A and power.

Pipeline: a decisions table (:func:`validate_decisions`) → :class:`GroupMetrics` (strategy ×
blueprint) → disparities with cluster-bootstrap CIs over replicates → within-strategy and
paired strategy-vs-baseline tests (:class:`TestResult`, Holm / BH adjusted) → matched
comparison → :class:`Verdict` under a :class:`SelectionRule`. :func:`analyze` runs all of it.
The replicate is the independent unit throughout. Uses numpy, scipy, statsmodels and pandas
only.
"""

from esper_ab.stats._aa import AAResult, aa_test, default_aa_design
from esper_ab.stats._analysis import analyze, select_winner
from esper_ab.stats._clustered import cochran_q, mcnemar
from esper_ab.stats._counts import DISPARITY_METRICS, STRATEGY_METRICS
from esper_ab.stats._disparities import (
    equal_opportunity_gap,
    equalized_odds_gap,
    pass_rate_gap,
    pass_rate_ratio,
)
from esper_ab.stats._groups import GroupMetrics, statistic_samples
from esper_ab.stats._matched import MatchedComparison, matched_threshold, rethreshold
from esper_ab.stats._observational import (
    NOT_COMPUTABLE,
    ObservationalAnalysis,
    analyze_observational,
    clustered_pass_rate,
    load_observational_csv,
    validate_observational,
    within_run_permutation,
)
from esper_ab.stats._plan import ReplicatePlan, VerdictPower, plan_replicates, verdict_power
from esper_ab.stats._power import (
    PowerEstimate,
    SimulatedPower,
    pilot_sd_per_replicate,
    power,
    power_from_pilot,
    simulate_power,
)
from esper_ab.stats._report import Analysis
from esper_ab.stats._results import TestResult, adjust_tests, benjamini_hochberg, holm
from esper_ab.stats._schema import REQUIRED_COLUMNS, load_decisions_csv, validate_decisions
from esper_ab.stats._sequential import (
    SequentialResult,
    e_process,
    holm_anytime,
    replicate_differences,
    sequential_test,
)
from esper_ab.stats._simulate import SimulationDesign, StrategySpec, simulate_decisions
from esper_ab.stats._verdict import (
    NO_WINNER,
    Candidate,
    SelectionRule,
    Verdict,
    degenerate_reason,
)

__all__ = [
    "AAResult",
    "Analysis",
    "Candidate",
    "DISPARITY_METRICS",
    "GroupMetrics",
    "MatchedComparison",
    "NOT_COMPUTABLE",
    "NO_WINNER",
    "ObservationalAnalysis",
    "PowerEstimate",
    "REQUIRED_COLUMNS",
    "ReplicatePlan",
    "STRATEGY_METRICS",
    "SelectionRule",
    "SequentialResult",
    "SimulatedPower",
    "SimulationDesign",
    "StrategySpec",
    "TestResult",
    "Verdict",
    "VerdictPower",
    "aa_test",
    "adjust_tests",
    "analyze",
    "analyze_observational",
    "benjamini_hochberg",
    "clustered_pass_rate",
    "cochran_q",
    "default_aa_design",
    "e_process",
    "equal_opportunity_gap",
    "equalized_odds_gap",
    "holm",
    "holm_anytime",
    "load_decisions_csv",
    "load_observational_csv",
    "matched_threshold",
    "mcnemar",
    "pass_rate_gap",
    "pass_rate_ratio",
    "pilot_sd_per_replicate",
    "power",
    "plan_replicates",
    "power_from_pilot",
    "replicate_differences",
    "rethreshold",
    "select_winner",
    "simulate_decisions",
    "sequential_test",
    "degenerate_reason",
    "simulate_power",
    "statistic_samples",
    "validate_decisions",
    "verdict_power",
    "validate_observational",
    "within_run_permutation",
]
