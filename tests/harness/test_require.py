"""tests/require.py and the NXRUN_REQUIRE_NO_SKIPS hook of tests/conftest.py: with the variables
CI sets, a skip for a missing server, and any skip of a test that is not gpu-marked, fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

TESTS = Path(__file__).parents[1]

SUITE = '''
import pytest
from require import missing

def test_runs():
    pass

def test_plain_skip():
    pytest.skip("not today")

def test_needs_s3():
    missing("S3", "no weed")

@pytest.mark.gpu
def test_on_the_gpu():
    pytest.skip("needs a CUDA device")

@pytest.mark.xfail(reason="a known bug")
def test_known_bug():
    assert False
'''

SKIPPED_MODULE = 'import pytest\npytest.importorskip("no_such_module_for_nxrun_tests")\n'


def _outcomes(root: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """Start the suite in `root` (the runs go on side by side); its process and junit report."""
    report = root / f"report-{name}.xml"
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                f"--junit-xml={report}"], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, report


def _read(process: subprocess.Popen, report: Path) -> tuple[int, dict[str, str], str]:
    output, _ = process.communicate(timeout=120)
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    assert outcomes, output
    return process.returncode, outcomes, output


def test_skips_fail_only_where_a_requirement_says_so(tmp_path: Path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    shutil.copy(TESTS / "require.py", tmp_path / "require.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "test_skipped_module.py").write_text(SKIPPED_MODULE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NXRUN_REQUIRE_")}
    runs = {name: _outcomes(tmp_path, name, {**base, **extra}) for name, extra in [
        ("developer", {}), ("s3", {"NXRUN_REQUIRE_S3": "1"}), ("ci", {"NXRUN_REQUIRE_S3": "1",
                                                                      "NXRUN_REQUIRE_NO_SKIPS": "1"}),
        ("off", {"NXRUN_REQUIRE_S3": "0", "NXRUN_REQUIRE_NO_SKIPS": "0"})]}
    results = {name: _read(*run) for name, run in runs.items()}

    developer = {"test_runs": "passed", "test_plain_skip": "skipped", "test_needs_s3": "skipped",
                 "test_on_the_gpu": "skipped", "test_known_bug": "skipped", "test_skipped_module": "skipped"}
    assert results["developer"][:2] == (0, developer)
    assert results["off"][:2] == (0, developer)
    assert results["s3"][:2] == (1, {**developer, "test_needs_s3": "failure"})
    assert "NXRUN_REQUIRE_S3=1 is set" in results["s3"][2] and "no weed" in results["s3"][2]
    # under CI's settings only the gpu-marked test and the expected failure may skip; a module
    # skipped whole is reported and fails the session, and the other modules still run
    returncode, outcomes, output = results["ci"]
    assert (returncode, outcomes) == (1, {**developer, "test_needs_s3": "failure", "test_plain_skip": "failure"})
    assert "FAILED (module skipped) test_skipped_module.py" in output
