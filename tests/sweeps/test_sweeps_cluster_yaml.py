"""cluster.yaml passes Ray's own cluster-config schema, installs the project, holds no secret."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_passes_rays_schema():
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    _validate(cfg)
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["GPU"] == 0        # CPU head
    assert any(t["resources"].get("GPU", 0) >= 1 for n, t in types.items()
               if n != cfg["head_node_type"])                            # GPU workers
    setup = " ".join(cfg["setup_commands"])
    assert "pip install -q torch==2.13.0" in setup and "pip install -q -e ~/esper-ab" in setup
    assert all("RAY_AUTH_MODE=token" in c for c in
               cfg["head_start_ray_commands"][1:] + cfg["worker_start_ray_commands"][1:])


def test_the_schema_check_can_fail():
    from jsonschema import ValidationError

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cfg["available_node_types"]["head_cpu"]["bogus"] = 1
    with pytest.raises(ValidationError):
        _validate(cfg)


def test_no_secrets_only_placeholders():
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)                    # AWS access key ids
    assert not re.search(r"(?i)(secret|password)\s*:", text)
    for placeholder in ("<REGION>", "<AMI_ID>", "<SUBNET_ID>", "<KEY_NAME>"):
        assert placeholder in text


def test_dashboard_on_loopback_token_file_private_and_exposure_documented():
    text = (REPO / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert any("chmod 600 ~/.ray/auth_token" in c for c in cfg["setup_commands"])
    for port in ("8265", "6379", "8076", "10001", "/metrics"):
        assert port in text                                 # each exposure is stated
    assert "ray dashboard cluster.yaml" in text
