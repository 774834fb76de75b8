"""``python -m service.benchmark`` (issue 5's load benchmark) on a small load: it starts its own
redis-server and uvicorn, and prints p50/p99 of POST and GET and the jobs/s."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_prints_percentiles_and_jobs_per_second() -> None:
    command = [sys.executable, "-m", "service.benchmark", "--clients", "4", "--requests", "3"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    number = r"\d+(\.\d+)?"
    for name in (re.escape("POST /datasets"), re.escape("GET /datasets/{id}")):
        row = rf"^{name} +12 +{number} +{number} +{number}$"
        assert re.search(row, result.stderr, re.MULTILINE), result.stderr
    assert re.search(rf"^jobs/s \(datasets queued per second\): {number}$", result.stderr, re.MULTILINE)
