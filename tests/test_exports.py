"""The public surface: what `import ssehub` promises exists, and nothing private leaks into it."""

from __future__ import annotations

import importlib
import pkgutil

import ssehub
from ssehub import exceptions


def test_all_names_exist_and_are_sorted() -> None:
    assert ssehub.__all__ == sorted(ssehub.__all__, key=str)
    for name in ssehub.__all__:
        assert hasattr(ssehub, name), name
        assert not name.startswith("_") or name == "__version__"


def test_every_module_all_is_real() -> None:
    for info in pkgutil.walk_packages(ssehub.__path__, "ssehub."):
        if info.name in ("ssehub.__main__",):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{info.name}.{name}"


def test_one_exception_root() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, ssehub.SSEHubError), name
        assert name in ssehub.__all__, name
        assert 400 <= cls.status < 600 and cls.code
