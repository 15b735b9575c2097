"""Broken user models stop at the first evaluation with one sentence naming class and method.

Each small model below is an exponential mixture with one deliberate fault (NaN, wrong shape,
wrong type, an exception, bad starting values, statistics that do not add up); the checks are
in ``src/models/checks.py`` and run from the EM driver.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from src.estimation import fit_em, start_params
from src.models.base import MixtureModel, ParamSpec
from src.utils.errors import ModelError
from src.utils.rng import stream
from tests.helpers import assert_one_sentence, check_rc, run_script


# ------------------------------------------------------------------ the models
class Exp(MixtureModel):
    """A correct exponential mixture without a closed form; data {"x": (N,)}."""

    name = "exp_check"

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("rate", (), "positive")]

    def log_joint(self, data, params):
        x = data["x"][:, None]
        rate = np.asarray(params["rate"])[None, :]
        with np.errstate(divide="ignore"):
            return np.log(params["weight"])[None, :] + np.log(rate) - rate * x


class ExpClosed(Exp):
    """The same with a closed-form M-step."""

    has_closed_form_m_step = True

    def suff_stats(self, data, resp):
        return {"nk": resp.sum(axis=0), "sx": resp.T @ data["x"]}

    def m_step(self, stats):
        nk = stats["nk"]
        return {"weight": nk / nk.sum(), "rate": nk / stats["sx"]}


def _nan_at_row_17(lj, data):
    lj = lj.copy()
    lj[data["id"] == 16, 1] = np.nan       # data["id"]: the row's 0-based index (chunks too)
    return lj


class NanLogJoint(Exp):
    def log_joint(self, data, params):
        return _nan_at_row_17(super().log_joint(data, params), data)


class NanLogJointClosed(ExpClosed):
    def log_joint(self, data, params):
        return _nan_at_row_17(super().log_joint(data, params), data)


class PlusInfLogJoint(ExpClosed):
    def log_joint(self, data, params):
        lj = super().log_joint(data, params)
        lj[3, 0] = np.inf
        return lj


class FlatLogJoint(Exp):
    def log_joint(self, data, params):
        return super().log_joint(data, params).sum(axis=1)


class ListLogJoint(ExpClosed):
    def log_joint(self, data, params):
        return super().log_joint(data, params).tolist()


class RaisingLogJoint(Exp):
    def log_joint(self, data, params):
        return np.log(params["rates"])


class RaisingMStep(ExpClosed):
    def m_step(self, stats):
        scale = 1 / (len(stats) - 2)          # ZeroDivisionError: two statistics
        return {"weight": stats["nk"] / stats["nk"].sum(), "rate": scale * stats["nk"]}


class BadInitShape(ExpClosed):
    def init_params(self, data, rng):
        return {"weight": np.full(2, 0.5), "rate": np.ones(3)}


class MissingInit(ExpClosed):
    def init_params(self, data, rng):
        return {"weight": np.full(2, 0.5)}


class NegativeInit(ExpClosed):
    def init_params(self, data, rng):
        return {"weight": np.full(2, 0.5), "rate": np.array([1.0, -2.0])}


class NanMStep(ExpClosed):
    def m_step(self, stats):
        out = super().m_step(stats)
        out["rate"][1] = np.nan
        return out


class RowStats(ExpClosed):
    """suff_stats that keep one row per observation, so they cannot add up over chunks."""

    def suff_stats(self, data, resp):
        return {"nk": resp.sum(axis=0), "sx": resp * data["x"][:, None]}

    def m_step(self, stats):
        nk = stats["nk"]
        return {"weight": nk / nk.sum(), "rate": nk / stats["sx"].sum(axis=0)}


class ZeroClassForLargeRows(Exp):
    """Class 2 cannot produce rows with x > 1 (-inf there), which is legitimate."""

    def log_joint(self, data, params):
        lj = super().log_joint(data, params)
        lj[data["x"] > 1.0, 1] = -np.inf
        return lj


class ImpossibleRow(Exp):
    def log_joint(self, data, params):
        lj = super().log_joint(data, params)
        lj[4] = -np.inf
        return lj


class NoisyLogJoint(ExpClosed):
    def log_joint(self, data, params):
        warnings.warn("noisy model", RuntimeWarning)
        return super().log_joint(data, params)

    def e_step_stats(self, data, params):
        resp, ll = self.e_step(data, params)
        return self.suff_stats(data, resp), ll


def data(n=100):
    rng = stream(3, "test-data", 0)
    return {"x": np.where(rng.random(n) < 0.6, rng.exponential(0.5, n), rng.exponential(3.0, n)),
            "id": np.arange(n)}


def fit(cls, k=2, **kw):
    kw = {"n_starts": 2, "max_iter": 50, "seed": 1, **kw}
    return fit_em(cls(k), data(), **kw)


# ------------------------------------------------------------------ log_joint
@pytest.mark.parametrize("cls,accelerate", [(NanLogJoint, "none"), (NanLogJoint, "squarem"),
                                            (NanLogJointClosed, "none")])
def test_nan_in_log_joint_names_row_and_class(cls, accelerate):
    """A NaN in log_joint stops the fit naming the class, the method, row 16 (0-based) and class 2."""
    with pytest.raises(ModelError, match=rf"^{cls.__name__}\.log_joint returned NaN .*"
                                         r"first at row 16 \(0-based\), class 2; 1 in all"):
        fit(cls, accelerate=accelerate)


def test_nan_in_a_later_chunk_counts_rows_from_the_start():
    """Rows are numbered in the whole data set even when the NaN sits in a later chunk."""
    with pytest.raises(ModelError, match=r"first at row 16 \(0-based\), class 2"):
        fit(NanLogJointClosed, chunk_size=10)


def test_plus_inf_in_log_joint_is_an_error():
    """+inf is not a log-density: the fit stops naming it and where it is."""
    with pytest.raises(ModelError, match=r"PlusInfLogJoint\.log_joint returned \+inf .*row 3 \(0-based\), class 1"):
        fit(PlusInfLogJoint)


def test_wrong_shape_is_named_with_the_expected_shape():
    """log_joint returning (n,) instead of (n, K) gives both shapes in the message."""
    with pytest.raises(ModelError, match=r"FlatLogJoint\.log_joint returned shape \(100,\), "
                                         r"expected \(n, K\) = \(100, 3\)"):
        fit(FlatLogJoint, k=3)


def test_wrong_type_is_named():
    """log_joint returning a list is refused as a list, not as a NumPy error."""
    with pytest.raises(ModelError, match=r"ListLogJoint\.log_joint returned a list, expected a "
                                         r"float array of shape \(n, K\) = \(100, 2\)"):
        fit(ListLogJoint)


def test_exception_inside_log_joint_names_method_and_text():
    """An exception inside log_joint becomes a ModelError with its type and text."""
    with pytest.raises(ModelError, match=r"^RaisingLogJoint\.log_joint raised KeyError: 'rates'"):
        fit(RaisingLogJoint)


def test_exception_inside_m_step_names_m_step():
    """The method named is where the exception was raised (here m_step, via init_params)."""
    with pytest.raises(ModelError, match=r"^RaisingMStep\.m_step raised ZeroDivisionError"):
        fit(RaisingMStep)


def test_minus_inf_for_a_class_is_legitimate():
    """-inf for one class of a row (zero probability) is accepted when the row has a finite value."""
    res = fit(ZeroClassForLargeRows, n_starts=1, max_iter=20)
    assert np.isfinite(res.loglik)


def test_row_impossible_in_every_class_is_named():
    """-inf for every class of a row at the starting values names that row."""
    with pytest.raises(ModelError, match=r"ImpossibleRow\.log_joint returned -inf for every "
                                         r"class at row 4 \(0-based; 1 rows in all\)"):
        fit(ImpossibleRow)


# ------------------------------------------------------------------ init_params / m_step
@pytest.mark.parametrize("cls,pattern", [
    (BadInitShape, r"BadInitShape\.init_params returned 'rate' of shape \(3,\), expected \(K,\) = \(2,\)"),
    (MissingInit, r"MissingInit\.init_params returned no parameter 'rate' \(declared by "
                  r"param_specs: weight, rate\)"),
    (NegativeInit, r"NegativeInit\.init_params returned parameters outside their declared "
                   r"constraints \(rate must be positive"),
])
def test_bad_starting_values_are_named(cls, pattern):
    """init_params must return every declared parameter, shaped (K, ...), inside its constraints."""
    with pytest.raises(ModelError, match=pattern):
        start_params(cls(2), data(), 0, 0)


def test_nan_from_m_step_is_named():
    """A NaN in m_step's output names the entry."""
    with pytest.raises(ModelError, match=r"NanMStep\.m_step returned NaN in rate\[2\] \(1 in all\)"):
        fit(NanMStep, init_params={"weight": np.array([0.5, 0.5]), "rate": np.array([1.0, 0.5])})


def test_statistics_that_do_not_add_up_are_named():
    """suff_stats whose shape depends on the chunk is refused before the sum broadcasts."""
    with pytest.raises(ModelError, match=r"RowStats\.e_step_stats returned the statistic 'sx' "
                                         r"with shape \(10, 2\) for rows 91 to 100 but \(30, 2\)"):
        fit(RowStats, chunk_size=30)


# ------------------------------------------------------------------ warnings and built-ins
def test_a_warning_at_every_evaluation_is_shown_once_per_start():
    """A RuntimeWarning raised at each EM evaluation reaches the caller once per start (and once per candidate start of the search)."""
    for n_candidates, most in ((0, 2), (6, 6 + 2)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fit(NoisyLogJoint, n_starts=2, n_candidates=n_candidates, max_iter=30, tol=0.0)
        assert res.n_iter == 30
        shown = sum("noisy model" in str(w.message) for w in caught)
        assert (shown == most) if n_candidates == 0 else (2 <= shown <= most), shown


def test_correct_models_fit_unchanged():
    """The checks accept a correct model with and without a closed form."""
    a = fit(ExpClosed, n_starts=1, tol=1e-10, max_iter=500)
    b = fit(Exp, n_starts=1, tol=1e-10, max_iter=500,
            init_params={k: v for k, v in a.params.items()})
    assert np.isfinite(a.loglik) and b.loglik == pytest.approx(a.loglik, rel=1e-8)


# ------------------------------------------------------------------ through the script
MODEL_FILE = '''
import numpy as np
from src.models.base import MixtureModel, ParamSpec


class NanModel(MixtureModel):
    name = "nan_model"

    @classmethod
    def prepare_data(cls, frame, options):
        return {"x": frame.iloc[:, 0].to_numpy(float)}, {}

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("rate", (), "positive")]

    def log_joint(self, data, params):
        x = data["x"][:, None]
        out = np.log(params["weight"])[None, :] + np.log(params["rate"])[None, :] - params["rate"] * x
        out[16, 1] = np.nan
        return out
'''


def test_script_exits_2_with_one_line_naming_class_and_method(tmp_path):
    """--model file.py:Class with a NaN log_joint: exit 2, one stderr line, no warning flood."""
    (tmp_path / "nan_model.py").write_text(MODEL_FILE)
    x = data(200)["x"]
    (tmp_path / "times.csv").write_text("t\n" + "\n".join(f"{v:.6f}" for v in x) + "\n")
    proc = run_script(tmp_path, "--model", "nan_model.py:NanModel", "--data", "times.csv",
                      "--columns", "t", "--n-starts", "2", "--se-method", "louis")
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert proc.stderr.startswith("NanModel.log_joint returned NaN")
    assert "row 16 (0-based), class 2" in proc.stderr
    assert "RuntimeWarning" not in proc.stderr + proc.stdout


# ----------------------------------------------- declared summaries and figures
class TestDeclarations:
    def test_unknown_figure_is_named_when_the_class_is_defined(self):
        """A misspelt figure name fails at the class statement with one sentence naming class, attribute and the known names."""
        from src.models.base import FIGURE_NAMES

        with pytest.raises(ModelError) as err:
            class Profiled(Exp):   # noqa: F841
                figures = ("profil",)
        text = str(err.value)
        assert_one_sentence(text)
        assert text.startswith("Profiled.figures declares 'profil'")
        assert all(name in text for name in FIGURE_NAMES)

    def test_unknown_summary_and_text_instead_of_tuple(self):
        """An unknown summary, and a bare string where a tuple belongs, are ModelErrors naming Class.summaries."""
        from src.models.base import SUMMARY_NAMES

        with pytest.raises(ModelError, match=r"^Odd\.summaries declares 'fit_table'") as err:
            class Odd(Exp):   # noqa: F841
                summaries = ("response_patterns", "fit_table")
        assert all(name in str(err.value) for name in SUMMARY_NAMES)
        with pytest.raises(ModelError, match=r"^Bare\.summaries is 'sd_correlation', expected a tuple"):
            class Bare(Exp):   # noqa: F841
                summaries = "sd_correlation"

    def test_known_names_and_the_figures_summaries_imply(self):
        """Known names pass; a class declaring summaries but no figures gets the figures they imply, an explicit () stays empty, subclasses inherit."""
        from src.models.lca import LatentClassModel

        class Categorical(Exp):
            summaries = ("response_patterns",)

        class Quiet(Exp):
            summaries = ("response_patterns",)
            figures = ()

        class MyLCA(LatentClassModel):
            name = "my_lca"

        assert Categorical.figures == ("profile",) and Quiet.figures == ()
        assert LatentClassModel.figures == MyLCA.figures == ("profile",)
        assert Exp.figures == ()

    def test_the_vocabularies_match_what_computes_and_draws_them(self):
        """SUMMARY_NAMES are the summaries src.inference.summaries computes and FIGURE_NAMES the figures src.output.plots draws."""
        from src.inference.summaries import SUMMARIES
        from src.models.base import FIGURE_NAMES, FIGURES_OF_SUMMARY, SUMMARY_NAMES
        from src.output.plots import FIGURES

        assert tuple(SUMMARIES) == SUMMARY_NAMES and tuple(FIGURES) == FIGURE_NAMES
        assert set(FIGURES_OF_SUMMARY) <= set(SUMMARY_NAMES)
        assert {f for fs in FIGURES_OF_SUMMARY.values() for f in fs} <= set(FIGURE_NAMES)

    def test_model_file_with_an_unknown_figure_fails_when_loaded(self, tmp_path):
        """--model file.py:Class declaring an unknown figure: exit 2 before any data are read, the message names the class and the attribute."""
        (tmp_path / "odd_model.py").write_text(MODEL_FILE.replace(
            '    name = "nan_model"\n', '    name = "nan_model"\n    figures = ("histogram",)\n'))
        proc = run_script(tmp_path, "--model", "odd_model.py:NanModel", "--data", "missing.csv")
        check_rc(proc, 2)
        assert_one_sentence(proc.stderr)
        assert "NanModel.figures declares 'histogram'" in proc.stderr
        assert "profile, scatter, density, regression" in proc.stderr
