"""The search-space schema: valid spaces load, bad ones fail with one line and exit 2."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sweep_helpers import space

from esper_ab.cli import main
from esper_ab.errors import ConfigError
from esper_ab.study.spec import Range, load_sweep_spec, parse_sweep_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_spaces_validate(path):
    if path.stem == "esper_lite_cnn":   # its workload is esper-lite's own network
        pytest.importorskip("esper.kasmina.host", reason="needs esper-lite on the path")
    spec = load_sweep_spec(path)
    assert spec.name == path.stem
    if spec.name == "multiobjective":
        assert spec.sampler.kind == "nsga2" and spec.multi_objective


def test_the_four_required_spaces_ship():
    names = {p.stem for p in (REPO / "search_spaces").glob("*.yaml")}
    assert {"smoke", "g2_fairness_cnn", "g2_fairness_transformer", "multiobjective"} <= names


def test_defaults_are_filled_and_replicates_normalized():
    spec = parse_sweep_spec(space(replicates=4))
    assert spec.replicates == [0, 1, 2, 3]
    assert spec.experiment_name == "t_sweep"
    assert spec.objectives[0].direction == "max"           # balanced accuracy
    assert parse_sweep_spec(space(replicates=[3, 7])).replicates == [3, 7]
    assert spec.spec_hash() == parse_sweep_spec(space(replicates=4)).spec_hash()
    assert spec.spec_hash() != parse_sweep_spec(space(replicates=5)).spec_hash()


def test_objective_direction_defaults_follow_the_metric():
    spec = parse_sweep_spec(space(objectives=[{"metric": "equalized_odds_gap"},
                                              {"metric": "mcc"}]))
    assert [o.direction for o in spec.objectives] == ["min", "max"]
    assert spec.multi_objective


@pytest.mark.parametrize("bad, fragment", [
    ({"name": "has space"}, "name="),
    ({"replicates": 1}, "at least 2"),
    ({"replicates": [1, 1]}, "distinct"),
    ({"strategies": [{"name": "nope"}]}, "unknown strategy 'nope'"),
    ({"strategies": [{"name": "exponent", "params": {"a": {"low": 0, "high": 9}}}]},
     "valid domain [0.0, 2.0]"),
    ({"strategies": [{"name": "exponent", "params": {"b": 1}}]}, "no parameter 'b'"),
    ({"strategies": [{"name": "first_order_value",
                      "params": {"mode": {"choices": ["raw", "sine"]}}}]}, "'sine'"),
    ({"strategies": [{"name": "baseline"}, {"name": "baseline"}]}, "repeat a name"),
    ({"scheduler": {"kind": "asha"},
      "objectives": [{"metric": "mcc"}, {"metric": "tpr"}]}, "single objective"),
    ({"resources": {"gpu": 1.5}}, "fraction"),
    ({"num_samples": 0}, "num_samples=0"),
    ({"workloads": [{"name": "synthetic-cnn", "slots": ["nowhere"]}]}, "no slot 'nowhere'"),
    ({"workloads": [{"name": "mnist"}]}, "unknown workload 'mnist'"),
    ({"baseline": "esper_max"}, "unknown gate preset"),
    ({"traces": {"source": "directory"}}, "needs path"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_fields_name_the_field_and_the_fix(bad, fragment):
    with pytest.raises(ConfigError) as info:
        parse_sweep_spec(space(**bad))
    msg = str(info.value)
    assert fragment in msg
    assert "\n" not in msg


def test_range_grid_points_are_exact():
    assert Range(low=0, high=1, grid_points=3).grid() == [0.0, 0.5, 1.0]
    assert Range(low=0.01, high=1, log=True, grid_points=3).grid() == pytest.approx(
        [0.01, 0.1, 1.0])
    assert Range(low=1, high=10, step=4).grid() == [1, 5, 9]
    with pytest.raises(ValueError):
        Range(low=0, high=1, log=True)


def test_smoke_override_shrinks_the_sweep():
    spec = parse_sweep_spec(space(replicates=6, num_samples=20, max_concurrent=4))
    small = spec.with_overrides(smoke_test=True)
    assert (small.num_samples, small.max_concurrent, small.replicates) == (3, 2, [0, 1])
    assert spec.with_overrides(num_samples=7).num_samples == 7
    with pytest.raises(ConfigError):
        spec.with_overrides(num_samples=0)


def test_load_reports_yaml_syntax_with_its_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nworkloads: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_sweep_spec(p)
    with pytest.raises(ConfigError, match="is not a file"):
        load_sweep_spec(tmp_path / "missing.yaml")


# -- exit code 2 and exactly one stderr line, for generated malformed spaces ----------------
_VALID = space()
_FIELDS = ["name", "replicates", "num_samples", "max_concurrent", "strategies", "workloads",
           "objectives", "sampler", "resources", "scheduler", "gate", "traces", "selection"]
junk = st.one_of(st.none(), st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                      st.integers(), max_size=2))


@st.composite
def malformed_yaml(draw) -> str:
    kind = draw(st.sampled_from(["garbage", "field", "drop", "extra"]))
    if kind == "garbage":          # any text: never a valid space
        return draw(st.text(max_size=60))
    data = copy.deepcopy(_VALID)
    if kind == "field":            # a field replaced by junk of the wrong kind
        key = draw(st.sampled_from(_FIELDS))
        data[key] = draw(junk.filter(lambda v, key=key: not (key == "name" and isinstance(
            v, str) and v.replace("_", "a").isalnum() and v[:1].isalnum())))
    elif kind == "drop":           # a required field missing
        del data[draw(st.sampled_from(["name", "workloads", "strategies"]))]
    else:                          # an unknown key somewhere
        data[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in _VALID
                                                         and k not in _FIELDS
                                                         and k != "experiment"))] = 1
    return yaml.safe_dump(data)


def _valid(text: str) -> bool:
    try:
        parse_sweep_spec(yaml.safe_load(text))
        return True
    except Exception:  # noqa: BLE001 - anything else is "malformed"
        return False


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=malformed_yaml())
def test_malformed_spaces_exit_2_with_one_line(tmp_path_factory, capsys, text):
    path = tmp_path_factory.mktemp("bad") / "space.yaml"
    path.write_text(text, encoding="utf-8")
    if _valid(text):               # a mutation that happens to be valid proves nothing
        return
    rc = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("esper-ab: error: ")
    assert "Traceback" not in err


def test_valid_space_validates(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(space()))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok -- sweep 't_sweep'" in out and "exponent.a" in out
