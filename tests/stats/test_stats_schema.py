"""The decisions-table contract: validation, normalization, CSV loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esper_ab.errors import DataError, EsperABError
from esper_ab.stats import REQUIRED_COLUMNS, load_decisions_csv, validate_decisions


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "replicate": [0, 0, 1, 1, 0, 0, 1, 1],
        "blueprint": ["a", "b", "a", "b"] * 2,
        "strategy": ["base"] * 4 + ["new"] * 4,
        "passed": [True, False, True, True, False, False, True, False],
        "pass_epoch": [10, None, 12, 11, None, None, 13, None],
        "statistic": [0.5, np.nan, 0.7, 0.2, 0.1, 0.0, 0.9, np.nan],
        "value": [1.0, -0.5, 0.3, 2.0, 1.0, -0.5, 0.3, 2.0],
        "valuable": [True, False, False, True, True, False, False, True],
    })


def test_valid_table_is_normalized_and_keeps_missing_statistics():
    out = validate_decisions(_table())
    assert out["passed"].dtype == bool and out["valuable"].dtype == bool
    assert out["statistic"].dtype == np.float64
    # Unmeasured stays NaN (never coerced to 0); a measured 0.0 stays 0.0.
    assert out["statistic"].isna().sum() == 2
    assert (out["statistic"] == 0.0).sum() == 1
    assert list(out.columns[:8]) == list(REQUIRED_COLUMNS)
    assert "seed" in out.columns
    assert len(out) == 8


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_column_is_named(column):
    with pytest.raises(DataError, match=column):
        validate_decisions(_table().drop(columns=[column]))


@pytest.mark.parametrize(
    ("column", "bad", "needle"),
    [
        ("passed", "maybe", "boolean"),
        ("valuable", 2, "boolean"),
        ("value", "high", "numeric"),
        ("value", None, "empty"),
        ("statistic", "x", "numeric"),
        ("pass_epoch", 1.5, "integer"),
        ("pass_epoch", -1, "integer"),
        ("blueprint", None, "empty"),
        ("strategy", "  ", "empty name"),
        ("replicate", None, "empty"),
    ],
)
def test_wrong_types_name_the_column_and_the_fix(column, bad, needle):
    df = _table().astype({column: object})
    df.loc[3, column] = bad
    with pytest.raises(DataError, match=column) as info:
        validate_decisions(df)
    msg = str(info.value)
    assert needle in msg and ":" in msg and "\n" not in msg


def test_bool_columns_accept_01_and_text():
    df = _table()
    df["passed"] = df["passed"].astype(int)
    df["valuable"] = df["valuable"].map({True: "True", False: "false"})
    out = validate_decisions(df)
    assert out["passed"].tolist() == validate_decisions(_table())["passed"].tolist()
    assert out["valuable"].tolist() == validate_decisions(_table())["valuable"].tolist()


def test_empty_group_and_empty_table_are_errors():
    df = _table()
    df = df[~((df["strategy"] == "new") & (df["blueprint"] == "b"))]
    with pytest.raises(DataError, match="empty group.*'new'.*'b'"):
        validate_decisions(df)
    with pytest.raises(DataError, match="no rows"):
        validate_decisions(_table().iloc[:0])
    with pytest.raises(DataError, match="DataFrame"):
        validate_decisions({"replicate": [0]})


def test_duplicate_seed_ids_are_errors():
    df = _table().assign(seed=0)
    df = pd.concat([df, df.iloc[:1]])
    with pytest.raises(DataError, match="seed"):
        validate_decisions(df)


def test_errors_derive_from_project_error():
    assert issubclass(DataError, EsperABError)


def test_csv_roundtrip_keeps_empty_cells_as_nan(tmp_path):
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    out = load_decisions_csv(path)
    pd.testing.assert_frame_equal(out, validate_decisions(_table()), check_dtype=False)
    with pytest.raises(DataError, match="does not exist"):
        load_decisions_csv(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="not a readable CSV"):
        load_decisions_csv(tmp_path / "empty.csv")


# --- issue 25 item 6: no silent data changes ---------------------------------------------

@pytest.mark.parametrize(("column", "old", "new"), [
    ("blueprint", "a", "a "), ("blueprint", "a", "A"), ("strategy", "new", " new"),
    ("strategy", "new", "NEW")])
def test_names_that_differ_only_by_whitespace_or_case_are_refused(column, old, new):
    t = _table()
    rows = (t[column] == old).to_numpy().nonzero()[0]
    t.loc[rows[:1], column] = new  # one row spells it differently
    with pytest.raises(DataError) as err:
        validate_decisions(t)
    msg = str(err.value)
    assert msg.startswith(f"column '{column}'") and repr(old) in msg and repr(new) in msg
    assert "differ only by whitespace or case" in msg and "seed" not in msg


def test_a_lone_padded_name_is_normalized_with_a_warning():
    t = _table()
    t["strategy"] = t["strategy"].replace("new", "new ")
    with pytest.warns(UserWarning, match="surrounding whitespace removed from 'new '"):
        out = validate_decisions(t)
    assert set(out["strategy"]) == {"base", "new"}


def test_messages_print_plain_numbers_not_numpy_reprs():
    t = _table()
    t["pass_epoch"] = t["pass_epoch"].astype(float)
    t.loc[2, "pass_epoch"] = -3.0
    with pytest.raises(DataError) as err:
        validate_decisions(t)
    assert "np." not in str(err.value) and "-3.0" in str(err.value)
    t = _table()
    t["replicate"] = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)
    t["seed"] = ["s"] * 8  # repeats a seed within a group
    t.loc[1, "blueprint"] = "a"
    with pytest.raises(DataError) as err:
        validate_decisions(t)
    assert "np." not in str(err.value) and "replicate 0" in str(err.value)
    from esper_ab.errors import bad_value
    assert str(bad_value("n", np.int64(0), "fix")) == "n=0 is invalid: fix"


def test_replicates_a_candidate_lacks_are_named_in_the_verdict():
    from esper_ab.stats import SimulationDesign, StrategySpec, analyze, simulate_decisions
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=8, seeds_per_cell=3, strategies=(
        StrategySpec("baseline", (0.5, 0.5)), StrategySpec("cand", (0.5, 0.5))))
    df = simulate_decisions(design, seed=1)
    df = df[~((df.strategy == "cand") & (df.replicate.isin([2, 5])))]
    a = analyze(df, n_boot=50, n_perm=50)
    assert dict(a.verdict.missing_replicates) == {"cand": ("2", "5")}
    assert a.to_dict()["verdict"]["missing_replicates"] == {"cand": ["2", "5"]}
    assert any("missing: cand has no seed in replicate(s) 2, 5" in line
               for line in a.verdict.summary_lines())
