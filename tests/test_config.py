"""Options: TOML config file, flags over it, and one clear sentence for every bad input.

Bad options and bad data end with exit 2 and one sentence naming the key, column or file,
without a traceback (``--debug`` shows one).  Checked on the real script in a fresh working
directory, plus the merging rules in-process.
"""

from __future__ import annotations

import pytest

from src.config import RunOptions, build_options, load_config, phase_fingerprints
from src.utils.errors import UsageError
from tests.helpers import FAST, assert_one_sentence, check_rc, fit_json, run_script


def _toml(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path.name


def test_config_file_sets_options_and_flags_override_it(tmp_path):
    name = _toml(tmp_path / "run.toml",
                 'n_starts = 2\nse_method = "none"\ncomponents = 3\ntask_name = "from_config"\n'
                 'max-iter = 500\n')
    proc = run_script(tmp_path, "--config", name)
    check_rc(proc, 0)
    fit = fit_json(tmp_path, "from_config")
    assert fit["components"] == 3 and len(fit["start_logliks"]) == 2
    assert fit["se_method"] == "none" and fit["fingerprint"]["max_iter"] == 500
    assert (tmp_path / "progress" / "from_config_progress.json").is_file()

    proc = run_script(tmp_path, "--config", name, "--components", "2", "--task-name", "flagged")
    check_rc(proc, 0)
    fit = fit_json(tmp_path, "flagged")
    assert fit["components"] == 2 and len(fit["start_logliks"]) == 2  # the rest from the file


@pytest.mark.parametrize("text,key", [
    ("n_startz = 2\n", "n_startz"),
    ('components = "two"\n', "components"),
    ('se_method = "magic"\n', "se_method"),
    ("n_starts = 0\n", "n_starts"),
    ("tol = -1.0\n", "tol"),
    ('columns = [1, 2]\n', "columns"),
    ("no_progress_tracking = 1\n", "no_progress_tracking"),
    ("components = [\n", "not valid TOML"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, text, key):
    proc = run_script(tmp_path, "--config", _toml(tmp_path / "bad.toml", text))
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert key in proc.stderr
    assert not (tmp_path / "progress").exists()


@pytest.mark.parametrize("args,word", [
    (("--config", "nowhere.toml"), "nowhere.toml"),
    (("--se-method", "magic"), "se_method"),
    (("--lang", "fr"), "fr"),
    (("--data", "missing.csv"), "missing.csv"),
    (("--columns", "eruptions,nope"), "nope"),
    (("--columns", " , "), "--columns"),
])
def test_bad_flag_or_data_exits_2_in_one_sentence(tmp_path, args, word):
    proc = run_script(tmp_path, *FAST, *args)
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert word in proc.stderr


def test_non_numeric_column_is_a_data_error(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,x\n2,y\n3,z\n" + "4,w\n" * 20)
    proc = run_script(tmp_path, *FAST, "--data", "d.csv")
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert "Column 'b'" in proc.stderr and "d.csv" in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = run_script(tmp_path, *FAST, "--data", "missing.csv", "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "missing.csv" in proc.stderr


# ----------------------------------------------------------------------- in-process
def test_load_config_accepts_dashes_and_integers_for_floats(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('n-starts = 3\ntol = 1\ncolumns = "a, b"\n')
    assert load_config(path) == {"n_starts": 3, "tol": 1.0, "columns": ["a", "b"]}
    opts = build_options(load_config(path), {"n_starts": None, "tol": 1e-4})
    assert opts.n_starts == 3 and opts.tol == 1e-4 and opts.columns == ["a", "b"]


def test_defaults_are_documented_values():
    o = RunOptions().validate()
    assert (o.model, o.components, o.se_method, o.n_starts, o.save_interval, o.task_name,
            o.progress_dir, o.seed) == ("gmm", 2, "louis", 10, 10.0, "main_estimation",
                                        "progress", 20241101)


def test_bool_is_not_an_integer():
    with pytest.raises(UsageError, match="components"):
        build_options({"components": True}, {})


def test_fingerprints_leave_out_execution_options():
    hashes = dict(data_sha256="d", model_file_sha256=None, environment={"python": "x"})
    a = phase_fingerprints(RunOptions(), **hashes)
    b = phase_fingerprints(RunOptions(workers=4, save_interval=1, progress_dir="p", lang="zh",
                                      debug=True, output_dir="o", task_name="t"), **hashes)
    assert a == b
    c = phase_fingerprints(RunOptions(se_method="bootstrap"), **hashes)
    assert c["model_estimation"] == a["model_estimation"]
    assert c["standard_error_computation"] != a["standard_error_computation"]
    d = phase_fingerprints(RunOptions(), **{**hashes, "data_sha256": "e"})
    assert all(d[p] != a[p] for p in a)
