"""The benchmark scripts run (on a tiny budget) and write their result files."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_data_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_data.py"), "--quick", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert "| breakout |" in next(tmp_path.glob("*.md")).read_text()
    text = json.dumps(result)
    assert "ratio" in text and "bytes_per_frame" in text


def test_bench_train_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    table = next(tmp_path.glob("*.md")).read_text()
    assert "| default:" in table and "MFU" in table
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    stage2 = result["stage2"]  # one stage-2 config after the stage-1 ones
    assert "## Stage-2 training" in table and "| stage2:" in table
    assert stage2["steps_per_s"] > 0 and stage2["frames_per_s"] > 0 and 0 < stage2["mfu"] <= 1


def test_bench_control_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_control.py"), "--quick", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [p["method"] for p in result["planner"]] == ["cem", "mppi"]
    assert result["imagination"]["imagined_steps_per_s"] > 0 and result["imagination"]["ratio"] > 0
    assert "ms/action" in next(tmp_path.glob("*.md")).read_text()


def test_bench_agent_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_agent.py"), "--quick", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert result["num_envs"] == 8 and set(result["ms_per_call_by_depth"]) == {"1", "2"} and result["ms_per_call_mean"] > 0
    assert result["updates_per_s"] > 0 and result["hours_per_budget"] > 0
    assert "ms per call" in next(tmp_path.glob("*.md")).read_text()
