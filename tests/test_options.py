"""The options of `ssehub serve`: one table, three sources, one precedence, errors that name the culprit."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ssehub.options import OPTIONS, ConfigError, Option, integer, number, resolve
from ssehub.server import ServeOptions


def test_defaults() -> None:
    settings = resolve({}, environ={})
    assert settings["port"] == 8000 and settings.source("port") == "default"
    options = ServeOptions.from_settings(settings)
    assert options.hub.heartbeat == 15.0 and options.workers == 1 and options.demo is False


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "ssehub.toml"
    config.write_text('port = 9001\nheartbeat = 2\nmax_events = 50\nstore = "memory://"\ndemo = true\n')
    environ = {"SSEHUB_PORT": "9002", "SSEHUB_HEARTBEAT": "3"}
    settings = resolve({"port": "9003"}, environ=environ, config=config)
    assert (settings["port"], settings.source("port")) == (9003, "--port")
    assert (settings["heartbeat"], settings.source("heartbeat")) == (3.0, "SSEHUB_HEARTBEAT")
    assert (settings["max-events"], settings.source("max-events")) == (50, str(config))
    assert settings["demo"] is True and settings["store"] == "memory://"
    assert settings.source("ttl") == "default"


def test_the_file_may_be_named_by_the_environment(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("retry = 750\n")
    assert resolve({}, environ={"SSEHUB_CONFIG": str(tmp_path / "c.toml")})["retry"] == 750


@pytest.mark.parametrize(
    ("flags", "environ", "file", "message"),
    [
        ({"port": "x"}, {}, "", "--port: must be an integer from 0 to 65535, got 'x'"),
        ({}, {"SSEHUB_WORKERS": "0"}, "", "SSEHUB_WORKERS: must be an integer from 1 to 256, got '0'"),
        ({}, {}, "ttl = -1\n", "c.toml: must be a number of at least 0, got '-1'"),
        ({}, {}, "prot = 1\n", "c.toml: unknown option 'prot'"),
        ({}, {}, 'store = ["a"]\n', "c.toml: store takes a single value, got list"),
        ({}, {}, "port = \n", "c.toml: not valid TOML"),
        ({}, {"SSEHUB_DEMO": "sometimes"}, "", "SSEHUB_DEMO: must be true or false, got 'sometimes'"),
        ({}, {}, "heartbeat = nan\n", "c.toml: must be a number above 0, got 'nan'"),
    ],
)
def test_bad_values_name_their_option_and_source(
    tmp_path: Path, flags: dict[str, str], environ: dict[str, str], file: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(file)
    with pytest.raises(ConfigError) as caught:
        resolve(flags, environ=environ, config=config if file else None)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_every_option_has_a_valid_default_and_help() -> None:
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    for option in OPTIONS:
        assert option.help and option.env.startswith("SSEHUB_")
        if option.default not in (None, []) and not option.flag:
            assert option.parse(str(option.default)) == option.default, option.name


def test_repeated_options_take_a_list_from_each_source(tmp_path: Path) -> None:
    tag = Option("tag", str, [], "a repeatable option", repeat=True, env_name="SSEHUB_TAGS")
    config = tmp_path / "c.toml"
    config.write_text('tag = ["a", "b"]\n')
    assert resolve({}, environ={}, config=config, options=[tag])["tag"] == ["a", "b"]
    assert resolve({}, environ={"SSEHUB_TAGS": "c, d"}, config=config, options=[tag])["tag"] == ["c", "d"]
    assert resolve({"tag": ["e"]}, environ={}, options=[tag])["tag"] == ["e"]


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (integer(1, 10), [("1", 1), ("10", 10), (" 5 ", 5)], ["0", "11", "1.5", "1e3", "", "²"]),
        (number(0, 1), [("0", 0.0), ("0.5", 0.5), ("1", 1.0)], ["-0.1", "1.1", "inf", "nan", "x"]),
    ],
)
def test_parsers(parse: object, good: list[tuple[str, object]], bad: list[str]) -> None:
    assert callable(parse)
    for text, value in good:
        assert parse(text) == value
    for text in bad:
        with pytest.raises(ValueError, match="must be"):
            parse(text)


def test_print_config_is_a_usable_file_with_secrets_masked(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--print-config", "--port", "9100"],
        env={**os.environ, "SSEHUB_TOKEN": "s3cret", "SSEHUB_RETRY": "300"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "s3cret" not in done.stdout
    assert "port = 9100" in done.stdout and "# --port" in done.stdout and "# SSEHUB_RETRY" in done.stdout
    parsed = tomllib.loads(done.stdout)
    assert parsed["token"] == "***" and parsed["retry"] == 300
    (tmp_path / "saved.toml").write_text(done.stdout.replace('"***"', '"other"'))
    again = resolve({}, environ={}, config=tmp_path / "saved.toml")
    assert again["port"] == 9100 and again["retry"] == 300 and again["token"] == "other"
