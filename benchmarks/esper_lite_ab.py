"""An A/B inside esper-lite: N heuristic episodes natively and with an esper-ab gate.

Runs where esper-lite is importable (its ``src/`` on PYTHONPATH, a torch + torchvision that
match; see README journey 6)::

    PYTHONPATH=/path/to/esper-lite/src python benchmarks/esper_lite_ab.py --episodes 4 \\
        --gate esper_lite_kasmina [--stride 10] [--telemetry DIR]

Each episode is esper-lite's own ``run_heuristic_episode`` (strict gates, its default
``gradient_telemetry_stride`` of 10 unless ``--stride``) of the ``cifar_baseline`` CNN host
on synthetic 32x32 tensors with a learnable label signal, with a scripted policy that
germinates three blueprints at epochs 1-3 and then issues ADVANCE round-robin. Every
episode runs twice with the same seeds: natively, and with the gate installed.

It prints (1) the agreement of the gate with esper-lite's own G2 at every G2 check of the
gate run (for ``esper_lite_kasmina`` it must be 100%: the same decision, check by check)
and (2) per-blueprint G2 pass rates, native vs gate. ``--telemetry DIR`` writes both runs'
Nissa telemetry under ``DIR/native`` and ``DIR/gate``, ready for
``esper-ab ingest esper-lite DIR`` and ``esper-ab analyze --observational``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLUEPRINTS = ["CONV_LIGHT", "ATTENTION", "NORM", "DEPTHWISE", "BOTTLENECK", "CONV_SMALL",
              "CONV_HEAVY"]
SLOTS = ["r0c0", "r0c1", "r0c2"]


@dataclass
class Episode:
    """Every G2 check of one episode, with esper-lite's own verdict."""

    checks: list[dict[str, Any]] = field(default_factory=list)

    def seed_passes(self, key: str = "native_passed") -> dict[tuple[str, str], tuple[str, bool]]:
        """(slot, seed) -> (blueprint, passed G2 at some check)."""
        out: dict[tuple[str, str], tuple[str, bool]] = {}
        for c in self.checks:
            k = (c["slot"], c["seed"])
            out[k] = (c["blueprint"], out.get(k, ("", False))[1] or bool(c[key]))
        return out


def plan_of(i: int) -> dict[int, str]:
    return {1 + k: BLUEPRINTS[(i + k * 3) % len(BLUEPRINTS)] for k in range(3)}


def run_episode(i: int, *, plugin: Any = None, stride: int = 10, epochs: int = 25,
                batches: int = 4, telemetry: Path | None = None) -> Episode:
    """One heuristic episode (esper-lite's ``run_heuristic_episode``), natively when
    ``plugin`` is None, else with ``plugin`` installed in the model it creates."""
    import esper.tolaria as tolaria
    import torch
    from esper.nissa import DirectoryOutput, get_hub
    from esper.runtime import get_task_spec
    from esper.simic.training.helpers import run_heuristic_episode
    from esper.tamiyo.action_enums import build_action_enum
    from esper.tamiyo.decisions import TamiyoDecision
    from torch.utils.data import DataLoader, TensorDataset

    task_spec = get_task_spec("cifar_baseline")
    action = build_action_enum(task_spec.topology)
    plan = plan_of(i)
    ep = Episode()

    class ScriptedPolicy:
        def reset(self) -> None:
            pass

        def decide(self, signals: Any, active_seeds: Any) -> Any:
            epoch = signals.metrics.epoch
            if epoch in plan:
                return TamiyoDecision(action=getattr(action, "GERMINATE_" + plan[epoch]))
            seeds = [s for s in active_seeds if s.stage.name in ("GERMINATED", "TRAINING")]
            if seeds:
                s = seeds[epoch % len(seeds)]
                return TamiyoDecision(action=action.ADVANCE, target_seed_id=s.seed_id)
            return TamiyoDecision(action=action.WAIT)

    real_create = tolaria.create_model

    def create_model(**kwargs: Any) -> Any:
        model = real_create(**{**kwargs, "permissive_gates": False})
        for slot in model.seed_slots.values():
            slot.gates = _recording(slot.gates, ep, slot)
        if plugin is not None:
            plugin.install(model)
        return model

    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(16 * batches, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (16 * batches,), generator=g)
    x[:, 0] += (y.float() / 5.0)[:, None, None]          # a learnable label signal
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    test = DataLoader(TensorDataset(x[: 16 * 2], y[: 16 * 2]), batch_size=16, shuffle=False)
    hub = backend = None
    if telemetry is not None:
        hub, backend = get_hub(), DirectoryOutput(telemetry)
        hub.add_backend(backend)
    tolaria.create_model = create_model
    try:
        run_heuristic_episode(policy=ScriptedPolicy(), trainloader=train, testloader=test,
                              max_epochs=epochs, max_batches=batches, base_seed=100 + i,
                              device="cpu", task_spec=task_spec, slots=SLOTS,
                              gradient_telemetry_stride=stride)
    finally:
        tolaria.create_model = real_create
        if hub is not None:
            hub.flush()
            hub.remove_backend(backend)
            backend.close()
    return ep


def _recording(gates: Any, ep: Episode, slot: Any) -> Any:
    """esper-lite's gates, recording esper-lite's own G2 verdict at every check. Installed
    below the plug-in, so with a plug-in both the native and the amended verdict are seen."""
    base = type(gates)

    class Recording(base):  # type: ignore[misc, valid-type]
        def _check_g2(self, state: Any) -> Any:
            native = super()._check_g2(state)
            ep.checks.append({"slot": state.slot_id, "seed": state.seed_id,
                              "epoch": getattr(slot, "telemetry_inner_epoch", None),
                              "blueprint": state.blueprint_id,
                              "epochs": state.metrics.epochs_in_current_stage,
                              "native_passed": native.passed,
                              "native_ratio": state.metrics.seed_gradient_norm_ratio})
            return native

    rec = base.__new__(Recording)
    rec.__dict__.update(vars(gates))
    return rec


def run_ab(episodes: int, gate: str, *, stride: int = 10, epochs: int = 25, batches: int = 4,
           telemetry: Path | None = None, out: Any = sys.stdout) -> dict[str, Any]:
    from esper_ab.integrations.esper_lite import EsperLiteG2

    plugin = EsperLiteG2(gate)
    amended: list[bool] = []
    check = plugin.check_g2

    def recorded(state: Any, result: Any, model: Any = None) -> Any:
        res = check(state, result, model)
        amended.append(res.passed)
        return res

    plugin.check_g2 = recorded                        # type: ignore[method-assign]
    native_pass: dict[str, list[bool]] = defaultdict(list)
    gate_pass: dict[str, list[bool]] = defaultdict(list)
    agree = total = 0
    t0 = time.process_time()
    for i in range(episodes):
        nat = run_episode(i, stride=stride, epochs=epochs, batches=batches,
                          telemetry=telemetry / "native" if telemetry else None)
        start = len(amended)
        ours = run_episode(i, plugin=plugin, stride=stride, epochs=epochs, batches=batches,
                           telemetry=telemetry / "gate" if telemetry else None)
        for c, passed in zip(ours.checks, amended[start:], strict=True):
            c["passed"] = passed
            total += 1
            agree += c["native_passed"] == passed
        for src, key, dst in ((nat, "native_passed", native_pass), (ours, "passed", gate_pass)):
            for bp, passed in src.seed_passes(key).values():
                dst[bp].append(passed)
    cpu = time.process_time() - t0
    rows = {bp: (sum(native_pass[bp]), len(native_pass[bp]), sum(gate_pass.get(bp, [])),
                 len(gate_pass.get(bp, []))) for bp in sorted(native_pass)}
    print(f"esper-lite A/B: {episodes} heuristic episode(s), stride {stride}, {epochs} epochs, "
          f"gate {plugin.name}; {cpu:.0f} CPU s", file=out)
    pct = 100.0 * agree / total if total else float("nan")
    print(f"agreement with esper-lite's own G2, check by check: {agree}/{total} ({pct:.1f}%)",
          file=out)
    print(f"{'blueprint':<12} {'native':>10} {'gate':>10}", file=out)
    for bp, (kn, n, kg, m) in rows.items():
        print(f"{bp:<12} {kn:>4}/{n:<5} {kg:>4}/{m:<5}", file=out)
    return {"agree": agree, "total": total, "rows": rows, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--gate", default="esper_lite_kasmina",
                    help="a preset name, a gate YAML or a winner.yaml")
    ap.add_argument("--stride", type=int, default=10, help="gradient_telemetry_stride")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--telemetry", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        import esper.simic.training.helpers  # noqa: F401
    except ImportError as exc:
        print(f"esper-lite is not importable ({exc}): put its src/ on PYTHONPATH", file=sys.stderr)
        return 2
    res = run_ab(args.episodes, args.gate, stride=args.stride, epochs=args.epochs,
                 batches=args.batches, telemetry=args.telemetry)
    return 0 if res["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
