"""Options: TOML config file, flags over it, and one clear sentence for every bad input.

Bad options and bad data end with exit 2 and one sentence naming the key, column or file,
without a traceback (``--debug`` shows one).  Checked on the real script in a fresh working
directory, plus the merging rules in-process.
"""

from __future__ import annotations

import pytest

from src.config import OPTIONS, RunOptions, build_options, load_config, phase_fingerprints
from src.utils.errors import UsageError
from tests.helpers import FAST, ROOT, assert_one_sentence, check_rc, fit_json, run_script
from tests.inprocess import run_main


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
    """A bad key, type, choice, range or TOML syntax: exit 2, one sentence naming it."""
    proc = run_main(tmp_path, "--config", _toml(tmp_path / "bad.toml", text))
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
    """A bad flag value or data selection: exit 2, one sentence naming it."""
    proc = run_main(tmp_path, *FAST, *args)
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
    # the language changes only the files written (the report's language), no number
    assert {p: v for p, v in a.items() if p != "result_output"} == \
        {p: v for p, v in b.items() if p != "result_output"}
    assert b["result_output"]["report_language"] == "zh"
    c = phase_fingerprints(RunOptions(se_method="bootstrap"), **hashes)
    assert c["model_estimation"] == a["model_estimation"]
    assert c["standard_error_computation"] != a["standard_error_computation"]
    d = phase_fingerprints(RunOptions(), **{**hashes, "data_sha256": "e"})
    assert all(d[p] != a[p] for p in a)


def test_unknown_config_key_names_the_closest(tmp_path):
    """A misspelt TOML key gets one sentence with the closest option name."""
    path = tmp_path / "c.toml"
    path.write_text("n_startz = 2\n")
    with pytest.raises(UsageError, match="Unknown option 'n_startz' in config file .*c.toml; "
                                         "did you mean 'n_starts'\\?"):
        load_config(path)


# ------------------------------------------------------------ the option table
def test_families_and_se_methods_describe_their_options():
    """Every family's and SE method's declared options are RunOptions fields and flags."""
    from src.inference import SE_METHODS
    from src.models.registry import builtin_classes
    from src.pipeline.cli import build_parser

    flags = build_parser()._option_string_actions
    declared = [o for cls in builtin_classes().values() for o in cls.option_specs]
    declared += [o for m in SE_METHODS.values() for o in m.options]
    assert {"covariance", "reg_covar", "target", "intercept", "sigma_floor", "n_bootstrap",
            "bootstrap"} <= {o.name for o in declared}
    for opt in declared:
        assert OPTIONS[opt.name] == opt and getattr(RunOptions(), opt.name) == opt.default
        assert opt.cli_flag in flags
    assert "--no-intercept" in flags and flags["--no-intercept"].dest == "intercept"
    assert set(OPTIONS["se_method"].choices) == {*SE_METHODS, "all", "none"}


def test_pipeline_code_names_no_family_and_no_se_method():
    """config.py, the pipeline and the CLI take families and SE methods from the registries."""
    names = ("gmm", "lca", "mixreg", "louis", "numerical", "bootstrap")
    files = [ROOT / "src" / "config.py", *sorted((ROOT / "src" / "pipeline").glob("*.py")),
             ROOT / "scripts" / "02_run_estimation.py"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for name in names:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path.name, name)


def test_model_options_come_from_the_family():
    """model_options() holds exactly the options the family declares (plus drop_missing)."""
    from src.models.registry import get_model_class

    o = RunOptions(covariance="diag", target="y").validate()
    gmm, mixreg = get_model_class("gmm"), get_model_class("mixreg")
    assert o.model_options(gmm) == {"drop_missing": False, "covariance": "diag", "reg_covar": 1e-6}
    assert o.model_options(mixreg) == {"drop_missing": False, "target": "y", "intercept": True,
                                       "sigma_floor": None}


def test_fingerprints_count_only_the_chosen_family_and_methods():
    """A gmm run's fingerprint ignores mixreg's target; bootstrap options count only with it."""
    from src.models.registry import get_model_class

    hashes = dict(data_sha256="d", model_file_sha256=None, environment={})
    gmm = get_model_class("gmm")
    a = phase_fingerprints(RunOptions(), **hashes, model_class=gmm)
    b = phase_fingerprints(RunOptions(target="x", n_bootstrap=50), **hashes, model_class=gmm)
    assert a == b and a["model_estimation"]["covariance"] == "full"
    c = phase_fingerprints(RunOptions(se_method="all"), **hashes, model_class=gmm)
    assert c["standard_error_computation"]["n_bootstrap"] == 200
    assert c["standard_error_computation"]["primary_se"] == "louis"
    assert "primary_se" not in a["standard_error_computation"]
    d = phase_fingerprints(RunOptions(sep=";"), **hashes, model_class=gmm)
    assert d["data_preparation"] != a["data_preparation"]


def test_every_wired_phase_is_one_of_the_phases():
    """The phases run_estimation_with_tracking wires are src.config.PHASES in order, since the
    tracker treats any other phase name in a progress file as damage."""
    import inspect
    import re

    from src.config import PHASES
    from src.pipeline.tracked import run_estimation_with_tracking

    source = inspect.getsource(run_estimation_with_tracking)
    assert tuple(re.findall(r'resume_estimation_phase\(tracker, "([^"]+)"', source)) == PHASES


# ------------------------------------------------------------ class enumeration
@pytest.mark.parametrize("given,parsed", [
    (3, 3), ("3", 3), ("3-3", 3), ([3], 3), ("1-4", [1, 2, 3, 4]), ("2,3,5", [2, 3, 5]),
    (" 2 , 3 ", [2, 3]), ([2, 3, 5], [2, 3, 5]), (range(1, 4), [1, 2, 3]),
])
def test_components_one_k_a_range_or_a_list(given, parsed):
    """--components takes one K, a range or a list; one K however written is the int."""
    from src.config import parse_components

    assert parse_components(given) == parsed
    opts = RunOptions(components=given).validate()
    assert opts.components == parsed and opts.enumerating == isinstance(parsed, list)
    assert opts.k_list() == (parsed if isinstance(parsed, list) else [parsed])


def test_components_from_toml_and_flags(tmp_path):
    """TOML takes components = 3, "1-6" or [2, 3, 5]; a flag overrides the file."""
    from src.pipeline.cli import parse

    for text, want in (("components = 3\n", 3), ('components = "1-6"\n', [1, 2, 3, 4, 5, 6]),
                       ("components = [2, 3, 5]\n", [2, 3, 5])):
        (tmp_path / "c.toml").write_text(text)
        assert load_config(tmp_path / "c.toml") == {"components": want}
        _, opts = parse(["--config", str(tmp_path / "c.toml")])
        assert opts.components == want
    _, opts = parse(["--config", str(tmp_path / "c.toml"), "--components", "1-3"])
    assert opts.components == [1, 2, 3]


@pytest.mark.parametrize("args", [("--components", "3,2"), ("--components", "2,2"),
                                  ("--components", "0-3"), ("--components", "4-2"),
                                  ("--components", "1-3", "--select", "blrt")])
def test_bad_components_or_rule_exits_2_in_one_sentence(tmp_path, args):
    """Decreasing, repeated or zero K, and --select blrt without --blrt: exit 2, one sentence."""
    proc = run_main(tmp_path, *FAST, *args)
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert ("'components'" in proc.stderr) != ("--blrt B" in proc.stderr)
    assert not (tmp_path / "progress").exists()


def test_enumeration_options_fingerprint_only_several_k():
    """One K's fingerprints hold no enumeration option; several K's hold them from model_selection."""
    hashes = dict(data_sha256="d", model_file_sha256=None, environment={})
    names = {"select", "blrt", "blrt_early_stop", "alpha", "vlmr", "se_for"}
    one = phase_fingerprints(RunOptions(components=3, blrt=7, select="aic").validate(), **hashes)
    assert not any(names & set(fp) for fp in one.values())
    assert one["model_selection"] == one["model_estimation"]
    several = phase_fingerprints(RunOptions(components="1-3", blrt=7).validate(), **hashes)
    assert {k: v for k, v in several["model_estimation"].items() if k != "components"} == \
        {k: v for k, v in one["model_estimation"].items() if k != "components"}
    assert names - {"se_for"} <= set(several["model_selection"])
    assert "se_for" in several["standard_error_computation"]
    assert several["model_selection"]["blrt"] == 7
