"""
The Hypothesis profile follows $CI (see tests/conftest.py): deterministic in
CI, random elsewhere; and no Hypothesis test undoes it with settings of its own.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import is_hypothesis_test, settings

TESTS = Path(__file__).parent
EXPECTED = "RELAY_TEST_EXPECTED_HYPOTHESIS_PROFILE"


def _explicit_profile(config: pytest.Config) -> bool:
    return bool(os.environ.get("HYPOTHESIS_PROFILE")) or bool(
        config.getoption("hypothesis_profile", None)
    )


def hypothesis_tests() -> list[tuple[str, Any]]:
    """Every Hypothesis test function (and method) of the test modules."""
    found: list[tuple[str, Any]] = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name or "hypothesis" not in path.read_text():
            continue
        # The name pytest imports it under (rootdir-relative, no package).
        module = importlib.import_module(path.stem)
        for name, value in vars(module).items():
            candidates = [(name, value)]
            if inspect.isclass(value):
                candidates = [(f"{name}.{n}", v) for n, v in vars(value).items()]
            for qualname, candidate in candidates:
                if callable(candidate) and is_hypothesis_test(candidate):
                    found.append((f"{path.name}::{qualname}", candidate))
    return found


def test_the_profile_follows_ci(request: pytest.FixtureRequest) -> None:
    if _explicit_profile(request.config):
        pytest.skip("a Hypothesis profile was chosen by name")
    expected = os.environ.get(EXPECTED) or ("ci" if os.environ.get("CI") else "dev")
    current = settings.default
    assert current is not None
    assert settings.get_current_profile_name() == expected
    if expected == "ci":
        assert current.derandomize is True
        assert current.database is None
        assert current.deadline is None
        assert current.print_blob is True
    else:
        assert current.derandomize is False
        assert current.database is not None


def test_no_hypothesis_test_defeats_the_profile() -> None:
    found = hypothesis_tests()
    names = {name.partition("::")[0] for name, _ in found}
    # The search finds them (else this test would pass having checked nothing).
    assert {"test_fuzz.py", "test_wire.py"} <= names, names
    current = settings.default
    assert current is not None
    for name, test in found:
        own = test._hypothesis_internal_use_settings
        assert own.derandomize == current.derandomize, name
        assert own.database == current.database, name
        assert getattr(test, "_hypothesis_internal_use_seed", None) is None, f"{name}: @seed"
        assert getattr(test, "_hypothesis_internal_use_reproduce_failure", None) is None, name


@pytest.mark.parametrize(
    ("ci", "profile"),
    [("true", "ci"), ("1", "ci"), ("", "dev"), (None, "dev")],
    ids=["CI=true", "CI=1", "CI-empty", "CI-unset"],
)
def test_a_run_picks_its_profile_from_ci(ci: str | None, profile: str) -> None:
    """The two checks above, in a fresh pytest run with CI set one way or another."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    if ci is not None:
        env["CI"] = ci
    env[EXPECTED] = profile
    # Hypothesis would take this for a CI run by itself: $CI alone decides.
    env["GITLAB_CI"] = "true"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(Path(__file__)),
            "-k",
            "follows_ci or defeats",
        ],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout, result.stdout[-3000:]
