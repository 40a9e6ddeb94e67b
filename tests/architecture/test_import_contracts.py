"""The import contracts in ``pyproject.toml`` (run by ``make lint``) hold on the tree as
it is, and fail the build when a module adds a forbidden import: each case copies the
project's Python files, adds one back-edge, and runs ``lint-imports`` on the copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("myspinbot", "apps", "gpu_tasks", "testkit", "tests", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_project(to: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", to / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(
            REPO / package,
            to / package,
            ignore=lambda folder, names: (
                [n for n in names if not n.endswith(".py") and not (Path(folder) / n).is_dir()]
                + [n for n in names if n in ("__pycache__", "node_modules", "static")]
            ),
        )


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", "pyproject.toml"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    _copy_project(tmp_path)
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        # What a graph is may not depend on running jobs.
        (
            "apps/graphs/back_edge.py",
            "from apps.jobs.models import Job\n",
            "Rooms import only downward",
        ),
        # The shared ground may not reach up into an app.
        (
            "myspinbot/queues.py",
            "from apps.graphs import planner\n",
            "Rooms import only downward",
        ),
        # A new module of myspinbot must say whether it is wiring or shared ground.
        (
            "myspinbot/helpers.py",
            "import json\n",
            "declared as wiring or shared ground",
        ),
        # A plug-in reads its NodeContext, never a model.
        (
            "apps/capabilities/services/debug_echo/peek.py",
            "from apps.jobs.models import Profile\n",
            "Plug-ins see only their NodeContext",
        ),
        # The web process never imports torch, however indirectly.
        (
            "apps/jobs/gpu_peek.py",
            "import gpu_tasks.device\n",
            "never import torch or gpu_tasks",
        ),
        # Production code never leans on dev-only helpers.
        (
            "apps/jobs/fixtures.py",
            "from testkit import random_models\n",
            "never imports the dev-only helpers",
        ),
        # Benchmarks share helpers with the tests only through testkit.
        (
            "bench/shared.py",
            "from tests.support import media\n",
            "share helpers only through testkit",
        ),
    ],
)
def test_a_forbidden_import_breaks_the_build(
    tmp_path: Path, module: str, source: str, contract: str
) -> None:
    _copy_project(tmp_path)
    path = tmp_path / module
    path.write_text((path.read_text() if path.exists() else "") + source)
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken, result.stdout
    assert module[:-3].replace("/", ".") in broken, result.stdout
