"""The set-up files agree with each other: pins, conda environment, Makefile, README, CI."""

import re
import tomllib

from conftest import REPO


def _lock() -> dict:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _conda_pins() -> dict:
    pins = {}
    for line in (REPO / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.\-\[\]]+)\s*==?\s*([^\s#]+)", line)
        if m and m.group(1) != "python":
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_lock_pins_the_stack_design_requires():
    lock = _lock()
    assert lock["torch"] == "2.13.0"
    assert lock["tensorflow-cpu"] == "2.20.0"
    assert lock["cellpose"] == "3.1.1.2"
    assert lock["stardist"] == "0.9.2"
    assert lock["csbdeep"] == "0.8.2"
    assert lock["numpy"] == "2.0.2"
    assert "tf-keras" not in lock
    assert not any(line.strip().startswith("torch") and "==" not in line
                   for line in (REPO / "requirements.lock").read_text().splitlines())


def test_conda_environment_agrees_with_lock():
    lock, conda = _lock(), _conda_pins()
    assert len(conda) >= 25
    mismatched = {k: (v, lock.get(k)) for k, v in conda.items() if lock.get(k) != v}
    assert not mismatched, f"environment.yml and requirements.lock disagree: {mismatched}"


def test_console_script_and_packages_declared():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["opsef"] == "opsef_core.cli:main"
    markers = meta["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow") for m in markers)


def test_readme_shows_the_two_commands_first_and_ci_runs_make_test():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no command block"
    first_commands = [line.strip() for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]
    assert first_commands == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "CI=true" in ci
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)


def test_readme_links_every_notebook_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)\)", readme)
    local = [t for t in targets if "://" not in t]
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.name}" in local, f"README does not link {nb.name}"
