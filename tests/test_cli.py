"""The console script's own behaviour: clear errors, exit codes, no secrets in messages."""

import pytest

from recsys_platform.cli import main


def test_seed_creates_a_source_and_refuses_to_seed_it_twice(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cm.db'}"
    assert main(["seed", "--source-url", url]) == 0
    assert "ratings=2,397" in capsys.readouterr().out
    assert main(["seed", "--source-url", url]) == 2
    assert "already holds ratings; pass --replace" in capsys.readouterr().err
    assert main(["seed", "--source-url", url, "--replace", "--scale", "0.5"]) == 0
    assert "customers=61" in capsys.readouterr().out


def test_unreachable_source_is_a_clear_error_without_the_password(tmp_path, capsys):
    code = main(["--home", str(tmp_path), "seed", "--source-url", "mysql+pymysql://app:hunter2@127.0.0.1:1/cm"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot connect to the source database mysql+pymysql://app:***@127.0.0.1:1/cm" in err
    assert "hunter2" not in err


def test_bad_configuration_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECSYS_LAKE_URL", "hdfs://nope")
    assert main(["--home", str(tmp_path), "demo"]) == 2
    assert "RECSYS_LAKE_URL must be a file:// or s3:// URL" in capsys.readouterr().err


def test_unknown_command_shows_usage(capsys):
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
