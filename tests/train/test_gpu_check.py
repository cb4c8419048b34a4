"""benchmarks/gpu_check.py in CPU mode (--quick): the stages and the evaluation checks run on the CPU fallbacks, the
chunked ranking equals the one-piece ranking, and every CUDA-only check is reported as skipped."""

import importlib.util
from pathlib import Path


def test_gpu_check_cpu_fallbacks(capsys, tmp_path):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--cpu", "--quick", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    steps = {r[0]: r for r in mod.ROWS}
    assert {"prepare", "train sasrec (1 epoch, fp32)", "evaluate gru4rec", "full ranking"} <= set(steps)
    assert steps["chunked ranking (16 items/chunk)"][3].endswith("ranks equal to one piece: 1.0000")
    assert any(s.startswith("full ranking on CUDA vs CPU: no CUDA") for s in mod.SKIPPED)
    assert "skipped: DDP over 2 GPUs" in out and "checks ran on cpu" in out
