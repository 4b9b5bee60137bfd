"""Shared fixtures. Data in ../shared is read in place through DEEPDESC_SHARED."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from deepdesc.nn.base import DescriptorNet
from deepdesc.utils import shared_dir

ORIGINAL_MODELS = {
    "split1": "CNN3_p8_n8_split1_072000.t7",
    "split2": "CNN3_p8_n8_split2_104000.t7",
    "split3": "CNN3_p8_n8_split3_067000.t7",
    "split4": "CNN3_p8_n8_split4_073000.t7",
}


def bench_script(name: str) -> ModuleType:
    """Import ``bench/NAME.py`` (the benchmark scripts are not a package) for testing its functions; ``bench/`` goes
    on ``sys.path``, as when the script runs, for its ``_common`` helpers."""
    folder = Path(__file__).resolve().parents[1] / "bench"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_shared(*parts: str) -> Path:
    """Path under the shared folder; fails under CI=true when missing, skips otherwise."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        message = f"shared data missing: {path} (set DEEPDESC_SHARED)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def t7_paths() -> dict[str, Path]:
    folder = require_shared("models", "deepdesc-release")
    return {name: folder / filename for name, filename in ORIGINAL_MODELS.items()}


@pytest.fixture(scope="session")
def split4_model(t7_paths):
    from deepdesc.hub.weights import load_t7

    return load_t7(t7_paths["split4"])


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if a network of any arch is constructed (a loader must reject the file first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network was built for a file that should have been rejected")

    monkeypatch.setattr(DescriptorNet, "__init__", refuse)  # every arch's constructor starts there
