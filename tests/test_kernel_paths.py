"""Issue 11: `make test` reruns the numerics-sensitive tests under other CPU kernel paths, so a result
that holds only for this machine's BLAS/ATen kernels fails here, not on a user's machine. This checks
that the Makefile's alternative environment really changes the kernels' floating-point results."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import hashlib, numpy as np, torch
torch.manual_seed(0)
a = torch.randn(300, 1024, dtype=torch.float64); b = torch.randn(1024, 200, dtype=torch.float64)
x = torch.randn(500, 777)
rng = np.random.default_rng(0); c = rng.normal(size=(300, 1024)); d = rng.normal(size=(1024, 200))
h = lambda t: hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest()[:16]
print(h((a @ b).numpy()), h(x.sum(1).numpy()), h(c @ d))
"""


def alt_kernel_env() -> dict[str, str]:
    m = re.search(r"^ALT_KERNELS\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "the Makefile defines ALT_KERNELS"
    return dict(kv.split("=", 1) for kv in m.group(1).split())


def _probe(extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in alt_kernel_env()}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **extra}, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_alternative_kernel_path_changes_float_results():
    alt = alt_kernel_env()
    assert {"ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE"} <= set(alt)
    (_, aten_sum, numpy_mm), (_, aten_sum2, numpy_mm2) = _probe({}), _probe(alt)
    assert aten_sum != aten_sum2, "ATen's vectorized reductions did not change"
    assert numpy_mm != numpy_mm2, "numpy's OpenBLAS GEMM kernel did not change"
    # torch's MKL GEMM changes with MKL_CBWR on the machines we tried (AMD EPYC AVX2; Intel AVX-512)


def test_makefile_reruns_numerics_tests_under_it():
    text = (ROOT / "Makefile").read_text()
    test_rule = text[text.index("\ntest:"):].split("\n\n")[0]
    assert "$(ALT_KERNELS)" in test_rule and "$(NUMERICS_TESTS)" in test_rule
    files = re.search(r"^NUMERICS_TESTS\s*:?=\s*(.+)$", text, re.M).group(1).split()
    assert all((ROOT / f).is_file() for f in files) and "tests/test_fidelity.py" in files
