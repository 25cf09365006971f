"""The pins: requirements.txt and environment.yml agree, and torch is always 2.13.0."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = PIN.match(line)
        assert m, f"not an exact pin: {line!r}"
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def requirements() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return _pins(pip[0]["pip"])


def test_requirements_and_environment_agree():
    req, env = requirements(), environment()
    assert req == env, f"only in requirements.txt: {set(req.items()) - set(env.items())}; " \
                       f"only in environment.yml: {set(env.items()) - set(req.items())}"


def test_book_stack_pins():
    req = requirements()
    for name, version in {"torch": "2.13.0", "jupyter-book": "1.0.4.post1", "sphinx": "7.4.7",
                          "myst-nb": "1.4.0", "jupytext": "1.19.6", "papermill": "2.7.0",
                          "ipywidgets": "8.1.9", "diffusers": "0.42.1", "scikit-learn": "1.9.1",
                          "seaborn": "0.13.2"}.items():
        assert req.get(name) == version, f"{name} should be pinned to {version}, got {req.get(name)}"


def test_torch_is_pinned_everywhere_and_installed():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_deps = [d for d in deps if re.match(r"^torch\b", d)]
    assert torch_deps == ["torch==2.13.0"], torch_deps
    assert torch.__version__.split("+")[0] == "2.13.0"
