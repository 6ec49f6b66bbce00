"""The console script's own behaviour: clear errors, exit codes, no secrets in messages."""

import re
from pathlib import Path

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


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err[-3000:]}"
    return lines[0]


def _without_column(path, column: str) -> str:
    """A seeded SQLite source whose ratings table lacks `column`."""
    import sqlalchemy as sa

    url = f"sqlite:///{path}"
    assert main(["seed", "--source-url", url]) == 0
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE ratings DROP COLUMN {column}"))
    return url


def test_demo_names_a_missing_column_and_the_fix_in_one_line(tmp_path, capsys, monkeypatch):
    url = _without_column(tmp_path / "cm.db", "productRating")
    capsys.readouterr()
    monkeypatch.setenv("RECSYS_SOURCE_URL", url)
    assert main(["--home", str(tmp_path / "home"), "demo"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "column ratings.productRating is missing" in line
    assert "fix the table, or point RECSYS_SOURCE_URL at" in line
    assert not (tmp_path / "home" / "lake").exists(), "checked before anything ran"
    assert not (tmp_path / "home" / "pgdata").exists(), "no vector server started for a bad source"


def test_demo_names_an_unreachable_host_in_one_line_without_the_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECSYS_SOURCE_URL", "mysql+pymysql://app:hunter2@127.0.0.1:1/cm")
    assert main(["--home", str(tmp_path), "demo"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "cannot connect to the source database mysql+pymysql://app:***@127.0.0.1:1/cm" in line
    assert "that the server at 127.0.0.1 is running" in line and "hunter2" not in line


def test_an_explicit_sqlite_source_that_does_not_exist_is_not_created(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "typo" / "classicmodel.db"
    monkeypatch.setenv("RECSYS_SOURCE_URL", f"sqlite:///{missing}")
    assert main(["--home", str(tmp_path / "home"), "demo"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"the SQLite source {missing} does not exist" in line and "recsys-platform seed --source-url" in line
    assert not missing.exists()
    assert main(["--home", str(tmp_path / "home"), "produce-events", "--count", "1"]) == 2
    assert not missing.exists()


def test_an_explicit_empty_source_is_not_seeded_by_the_demo(tmp_path, capsys, monkeypatch):
    import sqlalchemy as sa

    path = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{path}").connect().close()  # exists, holds nothing
    monkeypatch.setenv("RECSYS_SOURCE_URL", f"sqlite:///{path}")
    assert main(["--home", str(tmp_path / "home"), "demo"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "holds no ratings: the demo seeds only its own embedded source" in line


def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    from recsys_platform.errors import SourceUnavailableError

    monkeypatch.setenv("RECSYS_SOURCE_URL", f"sqlite:///{tmp_path / 'nope.db'}")
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        main(["--debug", "--home", str(tmp_path / "home"), "demo"])


def test_the_demos_runs_name_the_code_location_of_workspace_yaml():
    import yaml

    from recsys_platform.cli.runs import CODE_LOCATION, DEFINITIONS_MODULE

    (location,) = yaml.safe_load((Path(__file__).parents[1] / "workspace.yaml").read_text())["load_from"]
    assert location["python_module"] == {"module_name": DEFINITIONS_MODULE, "location_name": CODE_LOCATION}


def test_serve_on_a_fresh_home_names_the_fix_and_starts_nothing(tmp_path, capsys):
    home = tmp_path / "fresh"
    assert main(["--home", str(home), "serve"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no model serves yet" in line and "run `recsys-platform demo`" in line
    assert not home.exists(), "no embedded PostgreSQL (nor anything else) was started"


def test_a_source_url_without_its_driver_names_the_one_to_write(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECSYS_SOURCE_URL", "mysql://app:hunter2@db.example:3306/classicmodels")
    assert main(["--home", str(tmp_path), "demo"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "write mysql+pymysql://db.example:3306/classicmodels" in line and "hunter2" not in line


def test_a_typo_in_a_setting_a_command_does_not_use_does_not_stop_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECSYS_ENGINE", "sprak")
    assert main(["seed", "--source-url", f"sqlite:///{tmp_path / 'cm.db'}"]) == 0
    assert main(["--home", str(tmp_path), "demo"]) == 2, "the demo builds, so it reads the engine"
    assert "RECSYS_ENGINE must be one of auto, arrow, spark" in capsys.readouterr().err


def test_a_second_demo_on_the_same_home_is_refused_naming_the_first(tmp_path, capsys):
    """Two demos on one home would build, train and switch one home's vectors at once: the second
    stops at once, in one line, naming the first's PID; a killed holder frees the home."""
    import os
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from recsys_platform.storage.locks import "
                               "ProcessLock; lock = ProcessLock(sys.argv[1], 'demo').__enter__(); print('held', flush=True); "
                               "time.sleep(600)", str(tmp_path / "demo.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--home", str(tmp_path), "demo"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"another demo is running on RECSYS_HOME={tmp_path} (pid {holder.pid} since " in line
        assert "give this one its own RECSYS_HOME" in line
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    from recsys_platform.storage.locks import ProcessLock

    with ProcessLock(tmp_path / "demo.lock", "demo"):
        pass  # the kernel released the killed holder's lock


def test_learnable_sessions_from_a_source_of_another_seed_is_one_line_naming_the_flags(settings, capsys):
    """The embedded source of `settings` was seeded at scale 1 with seed 42: scale 2's tastes are not its own."""
    home = ["--home", settings.home]
    assert main([*home, "produce-events", "--count", "3", "--learnable", "--source-scale", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not those of `seed --scale 2 --seed 42`" in err
    assert "pass the --source-scale and --source-seed it was seeded with" in err
    assert main([*home, "produce-events", "--count", "3", "--learnable", "--malformed", "0"]) == 0
    produced = re.search(r"produced (\d+) events .*\{'ok': (\d+)\}", capsys.readouterr().out)
    assert produced and 6 <= int(produced.group(1)) == int(produced.group(2)) <= 15, "3 sessions of 2-5 events"
