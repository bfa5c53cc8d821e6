"""examples/quantize_and_eval.sh with a debug model: a table, exit 0 when gates hold, 3 when one fails."""

import os
import subprocess
import sys
from pathlib import Path

from tests.quant.helpers import saved_tiny_model

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "quantize_and_eval.sh"


def run_script(tmp_path, model, corpus, **env):
    bindir = Path(sys.executable).parent
    environment = {**os.environ, "V2M": str(bindir / "v2m"), "PYTHON": sys.executable, "GROUP": "32",
                   "CALIB_SAMPLES": "4", "MAX_TOKENS": "512", "SPEED": "--no-speed", **env}
    return subprocess.run(["bash", str(SCRIPT), str(model), str(corpus), str(tmp_path / "out")],
                          capture_output=True, text=True, env=environment, timeout=300)


def test_script_gates_and_table(tmp_path):
    model, corpus = saved_tiny_model(tmp_path)
    ok = run_script(tmp_path, model, corpus, ROWS="w8a8-smoothquant w4-gptq")
    assert ok.returncode == 0, ok.stderr[-2000:]
    lines = ok.stdout.strip().splitlines()
    assert lines[0].startswith("| scheme / method | size ratio") and len(lines) == 4
    assert lines[2].startswith("| w8a8-smoothquant |") and lines[3].startswith("| w4-gptq |")
    assert all(line.endswith("| pass |") for line in lines[2:])
    assert "gate nll_delta>0.01: passed" in ok.stderr or "passed" in ok.stderr

    failed = run_script(tmp_path, model, corpus, ROWS="w8-rtn", GATE_SCALE="-100")  # nll_delta > -1 always holds
    assert failed.returncode == 3, failed.stderr[-2000:]
    assert "| w8-rtn |" in failed.stdout and "FAIL nll_delta>-1" in failed.stdout
