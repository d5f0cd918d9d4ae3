"""Hub settings are checked when built: a wrong value never reaches a running hub."""

from __future__ import annotations

from typing import Any

import pytest

from ssehub.config import HubConfig


def test_defaults_are_valid() -> None:
    config = HubConfig()
    assert config.max_event_bytes <= config.max_request_bytes
    assert config.heartbeat > 0 and config.retry_ms > 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_event_bytes", 0, "max_event_bytes must be at least 1"),
        ("max_request_bytes", 0, "max_request_bytes must be at least 1"),
        ("max_batch", 0, "max_batch must be at least 1"),
        ("tail_window", 0, "tail_window must be at least 1"),
        ("page_size", -1, "page_size must be at least 1"),
        ("retry_ms", 0, "retry_ms must be at least 1"),
        ("heartbeat", 0, "heartbeat and purge_interval must be positive"),
        ("purge_interval", -1, "heartbeat and purge_interval must be positive"),
        ("run_grace", -0.1, "run_grace must be from 0 to 3600 seconds"),
        ("run_grace", 3601, "run_grace must be from 0 to 3600 seconds"),
    ],
)
def test_out_of_range_values_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HubConfig(**{field: value})


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        HubConfig().heartbeat = 1.0  # type: ignore[misc]
