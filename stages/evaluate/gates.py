"""`--fail-if` gates for CI: `metric OP threshold`, checked against a report's metrics (or a folder's summary).

A gate FAILS when its comparison is true; a metric that was not measured, or is NaN, fails its gate too:
CI must not pass blind. Failed gates exit 3 (v2m.errors.GateFailed).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from v2m.errors import GateFailed, V2MError
from v2m.stages.evaluate.report import METRICS, RENAMED


@dataclass(frozen=True)
class Gate:
    """`metric OP threshold`: the gate FAILS when the comparison is true (`beat_f1<0.8` fails below 0.8)."""

    text: str
    metric: str
    statistic: str | None  # folder mode: mean (default), median or worst
    op: str
    threshold: float


_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.(mean|median|worst))?\s*(<=|>=|<|>)\s*([-+0-9.eE]+|nan|inf)\s*$")


def parse_gates(spec: str | None) -> list[Gate]:
    """Parse `--fail-if "beat_f1<0.8,nll_delta>0.01"`; unknown metric names are one line listing the known ones."""
    gates = []
    for part in filter(str.strip, (spec or "").split(",")):
        match = _GATE.match(part)
        if not match:
            raise V2MError(f"--fail-if: cannot read '{part.strip()}'",
                           "write gates as METRIC<VALUE or METRIC>VALUE (also <=, >=), comma-separated, e.g. beat_f1<0.8")
        name, statistic, op, value = match.groups()
        if name in RENAMED:
            raise V2MError(f"--fail-if: '{name}' was renamed", f"it is now {RENAMED[name]}")
        if name not in METRICS:
            raise V2MError(f"--fail-if: unknown metric '{name}'", f"known metrics: {', '.join(sorted(METRICS))}")
        gates.append(Gate(part.strip(), name, statistic, op, float(value)))
    return gates


def apply_gates(gates: list[Gate], metrics: dict, summary: dict | None = None) -> list[dict]:
    """Each gate's value and verdict. A metric that was not measured, or is NaN, fails its gate (CI must not pass blind)."""
    results = []
    for gate in gates:
        if summary is not None:
            value = summary.get(gate.statistic or "mean", {}).get(gate.metric)
        else:
            if gate.statistic:
                raise V2MError(f"--fail-if: '{gate.text}' uses .{gate.statistic}, which only folders have")
            value = metrics.get(gate.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            failed, why = True, "not measured" if value is None else "NaN"
        else:
            failed = {"<": value < gate.threshold, "<=": value <= gate.threshold,
                      ">": value > gate.threshold, ">=": value >= gate.threshold}[gate.op]
            why = f"{gate.metric}{'.' + gate.statistic if gate.statistic else ''} = {value:.4g}"
        results.append({"gate": gate.text, "value": value, "failed": bool(failed), "detail": why})
    return results


def raise_if_failed(gate_results: list[dict]) -> None:
    failed = [g for g in gate_results if g["failed"]]
    if failed:
        names = "; ".join(f"{g['gate']} ({g['detail']})" for g in failed)
        raise GateFailed(f"gate failed: {names}", f"{len(failed)} of {len(gate_results)} gates failed")
