"""Packaging: the wheel holds every package of the source tree and the shipped configs (CI installs it for real,
not editable, and runs predict, train and val from outside the checkout)."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_the_wheel():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(settings["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "detr_toolkit").rglob("__init__.py")}
    assert found | {"detr_toolkit.configs"} == listed
    assert settings["package-dir"]["detr_toolkit.configs"] == "configs"
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped and "*.yaml" in settings["package-data"]["detr_toolkit.configs"]
    folders = {p.parent.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*/*.yaml")}
    assert {f"{folder}/*.yaml" for folder in folders} <= set(settings["package-data"]["detr_toolkit.configs"])
