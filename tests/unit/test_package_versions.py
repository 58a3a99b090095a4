"""`pkg:NAME` inputs: the installed version, found by distribution name or by the name it is imported by."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrun.runtime import Runtime


def _install_fake(site: Path, dist: str, version: str, module: str) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(module + "\n")
    (site / module).mkdir()
    (site / module / "__init__.py").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_package_named_by_its_import_name_enters_with_its_distribution_version(site):
    _install_fake(site, "fake-nvml-dist", "12.5.1", "fakenvml")
    runtime = Runtime({}, str(site))
    assert runtime.package_version("fake-nvml-dist") == "12.5.1"
    # before: "not-installed", so an upgrade of the library never changed the ETag of a task naming it so
    assert runtime.package_version("fakenvml") == "fake-nvml-dist==12.5.1"
    assert runtime.package_version("no-such-package-anywhere") == "not-installed"


def test_the_import_name_follows_an_upgrade(site):
    _install_fake(site, "fake-yaml-dist", "6.0", "fakeyaml")
    before = Runtime({}, str(site)).package_version("fakeyaml")
    (site / "fake_yaml_dist-6.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-yaml-dist\nVersion: 6.1\n")
    assert Runtime({}, str(site)).package_version("fakeyaml") != before == "fake-yaml-dist==6.0"
