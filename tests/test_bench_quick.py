"""`python -m bench --quick`: the bench still runs end to end and checks every aggregate.

No timing is asserted: the figures depend on the machine. What is pinned is that every
figure is produced for every variant it applies to, and that every variant's aggregates
matched the expected ones.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest

from bench.report import VARIANTS
from bench.run import FIGURES
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

AGENTFLEET_ONLY = {"agents_per_s_2w"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The results of one quick bench run, written to a private folder."""
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLEET_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads((out / "latest.json").read_text())
    results["_markdown"] = (out / "latest.md").read_text()
    results["_stdout"] = done.stdout
    return results


@pytest.mark.timeout(300)
@pytest.mark.parametrize("figure", [f.key for f in FIGURES])
def test_every_figure_has_a_median_and_p95_for_every_variant(
    quick_results: dict[str, Any], figure: str
) -> None:
    """Each figure of the table is measured for every variant it applies to."""
    wanted = {"agentfleet"} if figure in AGENTFLEET_ONLY else set(VARIANTS)

    row = quick_results["values"][figure]

    assert set(row) == wanted
    for stat in row.values():
        assert stat["n"] >= 1
        assert math.isfinite(stat["median"]) and math.isfinite(stat["p95"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_aggregate_of_every_variant_matched_the_expected_one(
    quick_results: dict[str, Any], variant: str
) -> None:
    """Every variant produced aggregates, and each had the expected successes and failures."""
    checks = quick_results["checks"]

    passed, failed = checks["passed"].get(variant, 0), checks["failed"].get(variant, 0)

    assert passed > 0
    assert failed == 0


@pytest.mark.timeout(300)
def test_the_table_names_every_target_and_the_machine(quick_results: dict[str, Any]) -> None:
    """The markdown for the README carries the figures, the targets and the machine."""
    targets = quick_results["targets"]

    markdown = quick_results["_markdown"]

    assert len(targets) == 8
    assert all(t["target"] in markdown for t in targets)
    assert f"{quick_results['machine']['nproc']} x" in markdown
    assert "Celery" in markdown and "Redis" in markdown
    assert "af/chord" in quick_results["_stdout"]
