"""The public surface: what `import ssehub` promises exists, and nothing private leaks into it."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

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


def test_import_ssehub_loads_no_third_party_package() -> None:
    # In a fresh interpreter: this one has long imported everything.
    code = "import sys, ssehub; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    loaded = set(json.loads(result.stdout.replace("'", '"')))
    assert loaded & {"starlette", "uvicorn", "prometheus_client", "httpx", "httpcore", "redis", "anyio"} == set()
    # Nor does the command line before it runs a command that needs one.
    code = (
        "import sys, contextlib, io, ssehub.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    ssehub.cli.main(['--help'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    loaded = set(json.loads(result.stdout.replace("'", '"')))
    assert loaded & {"starlette", "uvicorn", "prometheus_client", "httpx", "httpcore", "redis", "anyio"} == set()
    # ... and the names that need them are still there, imported on first use.
    code = "import sys, ssehub; ssehub.AsyncClient; ssehub.EventSourceResponse; print('httpx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "True"


def test_deprecated_names_warn_and_still_work() -> None:
    from ssehub.asgi import HubApp

    with pytest.warns(DeprecationWarning, match=r"use ssehub.asgi.create_app\(hub\)"):
        app = ssehub.Hub().asgi()
    assert isinstance(app, HubApp)
    with pytest.warns(DeprecationWarning, match="EventStreamResponse is deprecated"):
        assert callable(ssehub.EventStreamResponse)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ssehub.nothing  # noqa: B018
