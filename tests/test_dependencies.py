"""pyproject.toml and environment.yml must declare the same packages with the same bounds."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)$")


def _normalise(requirement: str) -> tuple[str, str]:
    """Split 'Name[extra]>=1,<2' into ('name', '>=1,<2'), ignoring extras, case and spaces."""
    match = REQUIREMENT.match(requirement)
    assert match, f"cannot read the requirement {requirement!r}"
    name, bounds = match.groups()
    return name.lower().replace("_", "-"), bounds.replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.extend(extra)
    declared.append(f"python{project['requires-python']}")
    return dict(_normalise(r) for r in declared)


def _environment_requirements() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in environment["dependencies"] if isinstance(d, str) and d != "pip"]
    return dict(_normalise(r) for r in conda)


def test_every_requirement_is_bounded() -> None:
    for name, bounds in _pyproject_requirements().items():
        assert "<" in bounds and ">" in bounds, f"pyproject.toml: {name} needs both bounds"


def test_environment_yml_agrees_with_pyproject() -> None:
    pyproject, environment = _pyproject_requirements(), _environment_requirements()
    assert environment == pyproject, (
        "environment.yml and pyproject.toml differ: "
        f"only in pyproject {sorted(set(pyproject.items()) - set(environment.items()))}, "
        f"only in environment.yml {sorted(set(environment.items()) - set(pyproject.items()))}"
    )
