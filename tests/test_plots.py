"""Figures of a fit (src/output/plots/): written, read back by matplotlib at the expected
pixel size, byte-identical for the same numbers, the expected set per model, and their
geometry (ellipses, covariances, histogram counts) against independent computations."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from src.estimation import fit_em
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.models.registry import get_model_class
from src.output.plots import (DPI, ELLIPSE_LEVEL, MAX_COLUMNS, MAX_POINTS, Plot, covariances,
                              ellipse_geometry, figures, posterior_histogram, profile_plot,
                              subsample)
from src.utils.messages import get_language, set_language
from src.utils.rng import stream

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "src" / "data" / "builtin"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fit(model_cls, frame, K, options=None, **fit_options):
    options = options or {}
    data, meta = model_cls.prepare_data(frame, options)
    model = model_cls(K, **{k: v for k, v in options.items() if k != "drop_missing"})
    model.setup(meta)
    fit = fit_em(model, data, seed=1, **{"n_starts": 2, **fit_options})
    resp, _ = model.e_step(data, fit.params)
    return model, data, fit.params, resp


def _mixreg_frame():
    rng = stream(1, "test-plots-mixreg")
    x = rng.uniform(0, 10, 300)
    z = rng.integers(0, 2, 300)
    y = np.where(z == 1, 1 + 2 * x, 8 - 0.5 * x) + rng.normal(0, 1, 300)
    return pd.DataFrame({"x": x, "y": y, "w": rng.normal(size=300)})


def _polytomous_frame():
    rng = stream(1, "test-plots-lca")
    codes = rng.integers(1, 5, size=(200, 9)).astype(str)
    codes[:, 8] = np.where(codes[:, 8] > "2", "yes", "no")   # one binary item among 4-code ones
    return pd.DataFrame(codes, columns=[f"q{j + 1}" for j in range(9)])


@pytest.fixture(scope="module")
def fits():
    """Small fitted models of every built-in family and a user model, by case name."""
    faithful = pd.read_csv(BUILTIN / "faithful.csv")
    iris = pd.read_csv(BUILTIN / "iris.csv").iloc[:, :4]
    wide = pd.DataFrame(stream(2, "test-plots-wide").normal(size=(120, 7)),
                        columns=[f"c{j + 1}" for j in range(7)])
    mr = _mixreg_frame()
    carcinoma = pd.read_csv(ROOT / "tests" / "reference" / "carcinoma.csv", dtype=str)
    user_cls = get_model_class("examples/user_models/exponential_mixture.py:ExponentialMixture")
    return {
        "gmm2": _fit(GaussianMixtureModel, faithful, 2),
        "gmm1": _fit(GaussianMixtureModel, faithful[["waiting"]], 2),
        "gmm4_diag": _fit(GaussianMixtureModel, iris, 3, {"covariance": "diag"}),
        "gmm7": _fit(GaussianMixtureModel, wide, 2, {"covariance": "spherical"}),
        "lca_binary": _fit(LatentClassModel, carcinoma, 3, n_starts=3),
        "lca_poly": _fit(LatentClassModel, _polytomous_frame(), 3, max_iter=30),
        "mixreg1": _fit(MixtureRegressionModel, mr[["x", "y"]], 2, {"target": "y"}),
        "mixreg2": _fit(MixtureRegressionModel, mr, 2, {"target": "y"}),
        "mixreg0": _fit(MixtureRegressionModel, mr[["y"]], 2, {"target": "y"}),
        "user": _fit(user_cls, faithful[["waiting"]], 2, n_candidates=0, max_iter=50),
    }


EXPECTED = {
    "gmm2": {"scatter.png": (640, 540), "posterior.png": (640, 420)},
    "gmm1": {"density.png": (640, 440), "posterior.png": (640, 420)},
    "gmm4_diag": {"scatter.png": (740, 740), "posterior.png": (640, 420)},
    "gmm7": {"scatter.png": (1060, 1060), "posterior.png": (640, 420)},
    "lca_binary": {"profile.png": (640, 460), "posterior.png": (640, 420)},
    "lca_poly": {"profile.png": (644, 595), "posterior.png": (640, 420)},
    "mixreg1": {"regression.png": (640, 500), "posterior.png": (640, 420)},
    "mixreg2": {"regression.png": (640, 500), "posterior.png": (640, 420)},
    "mixreg0": {"regression.png": (640, 440), "posterior.png": (640, 420)},
    "user": {"posterior.png": (640, 420)},
}


@pytest.fixture(scope="module")
def drawn(fits):
    """Every case's figures, drawn once."""
    return {case: figures(*fit) for case, fit in fits.items()}


class TestFigures:
    @pytest.mark.parametrize("case", sorted(EXPECTED))
    def test_expected_files_in_order(self, drawn, case):
        """The dispatcher gives the model's own figures first and posterior.png last, nothing else."""
        assert list(drawn[case]) == list(EXPECTED[case])

    @pytest.mark.parametrize("case", sorted(EXPECTED))
    def test_read_back_at_the_expected_size(self, drawn, case):
        """Every PNG is read back by matplotlib as RGB (opaque figures carry no alpha channel) of the documented pixel size (inches x DPI)."""
        for name, plot in drawn[case].items():
            assert isinstance(plot, Plot) and plot.png.startswith(PNG_SIGNATURE)
            image = matplotlib.image.imread(io.BytesIO(plot.png), format="png")
            width, height = EXPECTED[case][name]
            assert image.shape == (height, width, 3)
            assert (plot.width, plot.height) == (width, height)
            assert image[..., :3].std() > 0.05          # not blank
            assert plot.caption.strip()

    def test_same_numbers_same_bytes(self, fits, drawn):
        """Drawing again, even under a user's changed rcParams, gives byte-identical PNGs."""
        for case in ("gmm2", "lca_poly", "mixreg1"):
            with matplotlib.rc_context({"lines.linewidth": 5, "font.size": 20,
                                        "axes.prop_cycle": matplotlib.cycler(color=["k"])}):
                again = figures(*fits[case])
            assert {k: v.png for k, v in again.items()} == {k: v.png for k, v in drawn[case].items()}

    def test_no_date_or_software_in_the_png(self, drawn):
        """The PNG's chunks are image data only: no tIME and no text chunk (Software, date)."""
        png = drawn["gmm2"]["scatter.png"].png
        kinds, pos = [], len(PNG_SIGNATURE)
        while pos < len(png):
            length = int.from_bytes(png[pos:pos + 4], "big")
            kinds.append(png[pos + 4:pos + 8].decode("ascii"))
            pos += 12 + length
        assert kinds[0] == "IHDR" and kinds[-1] == "IEND"
        assert not set(kinds) & {"tIME", "tEXt", "iTXt", "zTXt"}

    def test_other_numbers_other_bytes(self, fits, drawn):
        """Changing a mean changes the scatter plot's bytes (the figure depends on the estimate)."""
        model, data, params, resp = fits["gmm2"]
        moved = {**params, "mean": params["mean"] + np.array([[0.5, 5.0], [0.0, 0.0]])}
        assert figures(model, data, moved, resp)["scatter.png"].png != drawn["gmm2"]["scatter.png"].png

    def test_captions_follow_the_language_and_bytes_do_not(self, fits, drawn):
        """With --lang zh the captions are Chinese while the PNG bytes stay the same."""
        before = get_language()
        try:
            set_language("zh")
            zh = figures(*fits["gmm2"])
        finally:
            set_language(before)
        for name, plot in zh.items():
            assert plot.png == drawn["gmm2"][name].png
            assert plot.caption != drawn["gmm2"][name].caption
            assert any("\u4e00" <= ch <= "\u9fff" for ch in plot.caption)

    def test_wide_data_note_and_subsample_note(self, drawn, fits):
        """Seven columns: the caption says the first 6 of 7 are shown; small data: no subsample note."""
        cap = drawn["gmm7"]["scatter.png"].caption
        assert f"first {MAX_COLUMNS} of 7 columns" in cap and "random" not in cap
        assert "0.95" not in cap and f"{ELLIPSE_LEVEL:.0%}" in cap

    def test_large_data_is_subsampled_and_said_so(self):
        """With more rows than MAX_POINTS the caption names how many rows are drawn."""
        rng = stream(3, "test-plots-large")
        X = np.vstack([rng.normal(0, 1, (4000, 2)), rng.normal(4, 1, (2000, 2))])
        model = GaussianMixtureModel(2)
        model.setup(GaussianMixtureModel.meta_for_array(X))
        params = {"weight": np.array([2 / 3, 1 / 3]), "mean": np.array([[0.0, 0], [4, 4]]),
                  "cov": np.stack([np.eye(2)] * 2)}
        resp, _ = model.e_step({"X": X}, params)
        plot = figures(model, {"X": X}, params, resp)["scatter.png"]
        assert f"{MAX_POINTS} of the 6000 rows" in plot.caption
        assert "6000 rows" in figures(model, {"X": X}, params, resp)["posterior.png"].caption

    def test_edge_cases_draw(self):
        """One class, an item with a single code and a regression without intercept still give readable PNGs."""
        frame = pd.DataFrame({"a": ["1", "2"] * 20, "b": ["x"] * 40, "c": ["1", "2", "2", "3"] * 10})
        rng = stream(4, "test-plots-edge")
        x = rng.uniform(1, 5, 60)
        mr = pd.DataFrame({"x": x, "y": np.where(rng.random(60) < 0.5, 2 * x, -x)})
        cases = [_fit(LatentClassModel, frame, 1, n_candidates=0),
                 _fit(LatentClassModel, frame[["a", "b"]], 2, n_candidates=0),
                 _fit(MixtureRegressionModel, mr, 2, {"target": "y", "intercept": False},
                      n_candidates=0)]
        for case in cases:
            for plot in figures(*case).values():
                image = matplotlib.image.imread(io.BytesIO(plot.png), format="png")
                assert image.shape == (plot.height, plot.width, 3)


class TestGeometry:
    @pytest.mark.parametrize("seed", range(6))
    def test_ellipse_against_eigendecomposition(self, seed):
        """Width, height and angle equal 2 r sqrt(eigenvalue) and the major eigenvector's
        direction from numpy's eigh, with r^2 the chi-square(2) quantile from scipy."""
        rng = stream(seed, "test-plots-ellipse")
        A = rng.normal(size=(2, 2)) * rng.uniform(0.1, 10, size=2)
        cov = A @ A.T + 1e-3 * np.eye(2)
        width, height, angle = ellipse_geometry(cov)
        vals, vecs = np.linalg.eigh(cov)
        r2 = stats.chi2.ppf(ELLIPSE_LEVEL, 2)
        assert width == pytest.approx(2 * np.sqrt(r2 * vals[1]), rel=1e-10)
        assert height == pytest.approx(2 * np.sqrt(r2 * vals[0]), rel=1e-8, abs=1e-12)
        direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
        assert abs(direction @ vecs[:, 1]) == pytest.approx(1.0, abs=1e-10)

    def test_matplotlib_ellipse_is_the_mahalanobis_contour(self):
        """The patch drawn from the geometry is the contour (x-m)' S^-1 (x-m) = chi2_2(level)."""
        from matplotlib.patches import Ellipse

        cov = np.array([[2.0, -1.2], [-1.2, 1.5]])
        mean = np.array([3.0, -1.0])
        width, height, angle = ellipse_geometry(cov, level=0.5)
        patch = Ellipse(tuple(mean), width, height, angle=angle)
        on_curve = np.vstack([bezier(np.linspace(0, 1, 7))          # the unit circle's arcs
                              for bezier, _ in patch.get_path().iter_bezier()])
        points = patch.get_patch_transform().transform(on_curve) - mean
        d2 = np.einsum("ij,jk,ik->i", points, np.linalg.inv(cov), points)
        np.testing.assert_allclose(d2, stats.chi2.ppf(0.5, 2), rtol=1e-3)  # Bezier arcs: ~0.03%

    def test_round_covariance_gives_a_circle(self):
        """A multiple of the identity gives equal axes of 2 * sqrt(-2 log 0.05) * sd."""
        width, height, _ = ellipse_geometry(4.0 * np.eye(2))
        assert width == pytest.approx(height) == pytest.approx(2 * 2 * np.sqrt(-2 * np.log(0.05)))

    @pytest.mark.parametrize("case", ["gmm2", "gmm4_diag", "gmm7"])
    def test_covariances_reproduce_the_model_density(self, fits, case):
        """log w_k + scipy's normal log-density with covariances(model, params) equals the model's log_joint."""
        model, data, params, _ = fits[case]
        covs = covariances(model, params)
        X = data["X"][:50]
        ours = np.column_stack([np.log(params["weight"][k])
                                + stats.multivariate_normal(params["mean"][k], covs[k]).logpdf(X)
                                for k in range(model.n_components)])
        np.testing.assert_allclose(ours, model.log_joint({"X": X}, params), rtol=1e-10)

    def test_posterior_histogram_against_numpy(self, fits):
        """Counts by modal class and bin equal numpy.histogram of each class's largest posteriors."""
        resp = fits["lca_poly"][3]
        edges, counts = posterior_histogram(resp)
        top, modal = resp.max(axis=1), resp.argmax(axis=1)
        assert edges[0] == pytest.approx(1 / 3) and edges[-1] == 1.0
        for k in range(resp.shape[1]):
            np.testing.assert_array_equal(counts[k], np.histogram(top[modal == k], edges)[0])
        assert counts.sum() == resp.shape[0]

    @pytest.mark.parametrize("K", [1, 2, 3, 7])
    def test_posterior_histogram_bins_values_on_and_beside_every_edge(self, K):
        """Bins as numpy.searchsorted on the edges puts them (edges[b] <= top < edges[b+1],
        the last bin closed, values below the first edge in the first bin) for values on
        every edge, one ulp either side of it, and random ones."""
        from src.output.plots.posterior import BINS, _histogram

        lo = 1.0 / K if K > 1 else 0.0
        edges = np.linspace(lo, 1.0, BINS + 1)
        rng = np.random.default_rng(K)
        top = np.concatenate([edges, np.nextafter(edges, 0.0), np.nextafter(edges, 2.0),
                              rng.uniform(lo, 1.0, 5000)])
        top = top[(top <= 1.0) & (top >= lo - 1e-9)]
        rest = (1.0 - top)[:, None] / max(K - 1, 1) * np.ones((1, K - 1))
        tau = np.hstack([top[:, None], rest])
        got_edges, counts = _histogram(tau, None)
        np.testing.assert_array_equal(got_edges, edges)
        modal, largest = tau.argmax(axis=1), tau.max(axis=1)
        want = np.clip(np.searchsorted(edges, largest, side="right") - 1, 0, BINS - 1)
        expected = np.bincount(modal * BINS + want, minlength=K * BINS).reshape(K, BINS)
        np.testing.assert_array_equal(counts, expected)

    def test_posterior_histogram_of_certain_rows(self):
        """Rows with posterior exactly 1 (and K = 1) fall in the last bin."""
        edges, counts = posterior_histogram(np.ones((7, 1)))
        assert edges[0] == 0.0 and counts[0, -1] == 7 and counts.sum() == 7

    def test_subsample_is_fixed_and_without_repeats(self):
        """At most MAX_POINTS distinct rows, the same ones every call; small n: every row once."""
        big = subsample(10 * MAX_POINTS)
        assert big.size == MAX_POINTS == np.unique(big).size
        np.testing.assert_array_equal(big, subsample(10 * MAX_POINTS))
        assert sorted(subsample(37)) == list(range(37))
        assert DPI == 100


class TestDeclaredFigures:
    def test_user_subclasses_get_their_familys_figures(self, fits, drawn):
        """A LatentClassModel or GaussianMixtureModel subclass under another name draws the family's figures, byte for byte."""
        class MyLCA(LatentClassModel):
            name = "my_lca"

        class MyGMM(GaussianMixtureModel):
            name = "my_gmm"

        for cls, case in ((MyLCA, "lca_binary"), (MyGMM, "gmm2"), (MyGMM, "gmm1")):
            model, data, params, resp = fits[case]
            user = cls(model.n_components, **model.options)
            user.setup(model.meta)
            got = figures(user, data, params, resp)
            assert {k: v.png for k, v in got.items()} == {k: v.png for k, v in drawn[case].items()}

    def test_a_family_without_figures_gets_the_posterior_histogram_only(self, fits):
        """A subclass declaring figures = () draws posterior.png alone."""
        class Plain(MixtureRegressionModel):
            name = "plain"
            figures = ()

        model, data, params, resp = fits["mixreg1"]
        user = Plain(2, **model.options)
        user.setup(model.meta)
        assert list(figures(user, data, params, resp)) == ["posterior.png"]


class TestGivenPosteriors:
    def test_patterns_give_the_rows_histogram(self, fits):
        """LCA's posteriors on distinct patterns (counts as weights) give numpy's histogram of the expanded rows, and the same figure set."""
        from src.inference.classification import posteriors_of

        model, data, params, resp = fits["lca_binary"]
        post = posteriors_of(model, data, params)
        assert post.inverse is not None and post.tau.shape[0] < resp.shape[0]
        edges, counts = posterior_histogram(post)
        top, modal = resp.max(axis=1), resp.argmax(axis=1)
        for k in range(resp.shape[1]):
            np.testing.assert_array_equal(counts[k], np.histogram(top[modal == k], edges)[0])
        got = figures(model, data, params, post)
        assert list(got) == list(EXPECTED["lca_binary"])
        assert got["profile.png"].png == figures(model, data, params, resp)["profile.png"].png

    def test_posteriors_object_or_array_same_bytes(self, fits, drawn):
        """A Posteriors of the rows draws the bytes the (n, K) array draws."""
        from src.inference.classification import Posteriors

        model, data, params, resp = fits["gmm4_diag"]
        got = figures(model, data, params, Posteriors(resp))
        assert {k: v.png for k, v in got.items()} == {k: v.png for k, v in drawn["gmm4_diag"].items()}


class TestLayout:
    @pytest.mark.parametrize("case", sorted(EXPECTED))
    def test_nothing_reaches_the_edge(self, drawn, case):
        """The fixed margins hold every label, title and legend: the outer 3 pixels of every figure are white."""
        for name, plot in drawn[case].items():
            image = matplotlib.image.imread(io.BytesIO(plot.png), format="png")[..., :3]
            for edge in (image[:3], image[-3:], image[:, :3], image[:, -3:]):
                assert edge.min() == 1.0, (case, name)

    def test_long_names_and_many_items_fit(self):
        """Forty items with long names (rotated labels) and a wide legend stay inside the figure."""
        rng = stream(5, "test-plots-long")
        J, K = 40, 3
        prob = np.zeros((K, J, 2))
        prob[:, :, 1] = rng.uniform(0.05, 0.95, (K, J))
        prob[:, :, 0] = 1 - prob[:, :, 1]
        items = [f"question_{j + 1}_about_something" for j in range(J)]
        plot = profile_plot(prob, np.array([0.5, 0.3, 0.2]), items, [["no", "yes"]] * J)
        image = matplotlib.image.imread(io.BytesIO(plot.png), format="png")[..., :3]
        for edge in (image[:3], image[-3:], image[:, :3], image[:, -3:]):
            assert edge.min() == 1.0
        assert image.shape[:2] == (plot.height, plot.width)

    def test_preload_imports_matplotlib_in_a_thread_and_changes_no_byte(self, tmp_path):
        """After preload() a fresh process has matplotlib's Figure and Agg canvas (not pyplot) and draws the bytes a process without it draws."""
        import subprocess
        import sys

        code = (
            "import sys, hashlib, numpy as np\n"
            "from src.output import plots\n"
            "if sys.argv[1] == 'preload':\n"
            "    thread = plots.preload(); assert thread.daemon and plots.preload() is thread\n"
            "    thread.join()\n"
            "    assert 'matplotlib.figure' in sys.modules and 'matplotlib.backends.backend_agg' in sys.modules\n"
            "    assert 'matplotlib.pyplot' not in sys.modules\n"
            "resp = np.array([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45]])\n"
            "print(hashlib.sha256(plots.posterior_plot(resp).png).hexdigest())\n")
        out = {}
        for mode in ("preload", "plain"):
            proc = subprocess.run([sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            out[mode] = proc.stdout.strip()
        assert out["preload"] == out["plain"] and len(out["plain"]) == 64


def test_scatter_range_holds_each_ellipse_and_the_data():
    """The axis range holds the data and each component's 95% ellipse shadow (mean +- 2.448 sd), and a very wide component widens it by at most half the data's range."""
    from scipy import stats

    from src.output.plots import _ellipse_range

    x = np.array([1.0, 2.0, 3.0])
    r = np.sqrt(stats.chi2.ppf(0.95, 2))
    lo, hi = _ellipse_range(x, np.array([1.2, 2.8]), np.array([0.25, 0.04]))
    assert lo <= 1.2 - r * 0.5 and hi >= 2.8 + r * 0.2 and lo <= 1.0 and hi >= 3.0
    lo, hi = _ellipse_range(x, np.array([2.0]), np.array([100.0]))
    assert (lo, hi) == pytest.approx((0.0 - 0.05 * 4, 4.0 + 0.05 * 4))  # data 1..3 +- 1, then 5%


class TestTitlesAndTicks:
    """layout.title, plain_numbers and make_ticks: the work they take out of a figure's
    second stage changes no pixel, and no number is drawn above the axes."""

    @staticmethod
    def _png(setup):
        from src.output.plots import layout as L

        with L.style():
            fig = L.figure(4.0, 3.0)
            ax = fig.add_subplot(1, 1, 1)
            setup(L, ax)
            ax.plot([0.0, 1.0, 2.0], [3.0, 1.0, 2.0])
            ax.set_xlabel("x")
            L.single_axes_margins(fig, ax, title="A title")
            return L.finish(fig)[0], ax

    def test_fixed_title_is_matplotlibs_automatic_place(self):
        """L.title gives the bytes of matplotlib's own placement when nothing is above the axes (and a title set so is not moved at draw time)."""
        auto, ax_auto = self._png(lambda L, ax: ax.set_title("A title", fontsize=10))
        fixed, ax_fixed = self._png(lambda L, ax: L.title(ax, "A title"))
        assert fixed == auto
        assert ax_fixed.title.get_position() == ax_auto.title.get_position() == (0.5, 1.0)

    def test_premade_ticks_change_no_byte(self):
        """Ticks made before the limits are known (the first stage) draw the same figure, more or fewer than the draw needs."""
        plain, _ = self._png(lambda L, ax: None)
        for count in (2, 12, 30):
            def setup(L, ax, count=count):
                L.make_ticks(ax.xaxis, count)
                L.make_ticks(ax.yaxis, count)
            made, ax = self._png(setup)
            assert made == plain
            assert len(ax.yaxis.majorTicks) >= count

    @pytest.mark.parametrize("offset", [1e6, 1e-6])
    def test_plain_numbers_put_nothing_above_the_axes(self, offset):
        """Values far from zero (1e6 + small) or tiny (1e-6 scale) get plain tick labels: no offset text or x1e6 factor, which would collide with a fixed title."""
        from src.output.plots import layout as L

        with L.style():
            fig = L.figure(4.0, 3.0)
            ax = fig.add_subplot(1, 1, 1)
            y = (offset + np.array([0.1, 0.2, 0.5])) if offset > 1 else offset * np.array([1.0, 2.0, 5.0])
            ax.plot([0.0, 1.0, 2.0], y)
            default = ax.yaxis.get_major_formatter()
            default.format_ticks(ax.get_yticks())
            assert default.get_offset()   # what matplotlib would draw above the axes
            L.title(ax, "A title")
            L.finish(fig)
            assert ax.yaxis.offsetText.get_text() == "" and ax.xaxis.offsetText.get_text() == ""
            labels = [t.get_text() for t in ax.get_yticklabels()]
            assert len(labels) >= 3
            for loc, label in zip(ax.get_yticks(), labels):   # each label is its value, alone
                assert float(label.replace("\u2212", "-")) == pytest.approx(loc, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("columns", [2, 3])
def test_figures_show_plain_numbers_for_large_data(monkeypatch, columns):
    """A Gaussian fit on data near 1e6 draws its scatter (one panel, or a matrix) and histogram with plain tick labels (each its value, no offset text above an axes), and they read back at their size."""
    from src.output.plots import layout as L

    drawn_figures = []
    finish, finish_over = L.finish, L.finish_over
    monkeypatch.setattr(L, "finish", lambda fig: drawn_figures.append(fig) or finish(fig))
    monkeypatch.setattr(L, "finish_over", lambda fig, *a: drawn_figures.append(fig)
                        or finish_over(fig, *a))   # (the histogram, drawn in two steps)
    rng = stream(3, "test-plots-large-values")
    frame = pd.DataFrame({"a": 1e6 + rng.normal(0, 1, 400) + np.repeat([0.0, 6.0], 200),
                          "b": 2e6 + rng.normal(0, 1, 400), "c": 3e6 + rng.normal(0, 1, 400)})
    model, data, params, resp = _fit(GaussianMixtureModel, frame.iloc[:, :columns], 2)
    drawn = figures(model, data, params, resp)
    assert len(drawn_figures) == len(drawn) == 2
    for fig in drawn_figures:
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                assert axis.offsetText.get_text() == ""
                lo, hi = sorted(axis.get_view_interval())
                for loc, label in zip(axis.get_majorticklocs(), axis.get_ticklabels()):
                    if lo <= loc <= hi and label.get_text():
                        assert float(label.get_text().replace("\u2212", "-")) == pytest.approx(loc)
    scatter = drawn_figures[0].axes[0]
    assert min(scatter.get_xlim()) > 9e5   # (the data's own scale, not an offset's)
    for plot in drawn.values():
        image = matplotlib.image.imread(io.BytesIO(plot.png), format="png")
        assert image.shape[:2] == (plot.height, plot.width)


@pytest.mark.parametrize("D", [2, 3, 6])
@pytest.mark.parametrize("beyond", [False, True])
def test_scatter_drawn_ahead_gives_the_bytes_of_one_drawn_at_once(monkeypatch, D, beyond):
    """A scatter whose first stage ran ahead of the estimate (as in the drawing process:
    laid out on the data's ranges and drawn without its classes) gives the bytes of one
    drawn at once: with every ellipse inside the data, by drawing the points, ellipses,
    diagonal panels and legend on that picture; with an ellipse beyond the data (its range
    is wider), by laying the figure out again and drawing it whole."""
    from src.output.plots import gaussian, layout
    from src.output.plots.spec import finish, render, start

    rng = stream(7, "scatter-ahead", D)
    n = 3000
    z = rng.random(n) < 0.4
    means = np.stack([np.zeros(D), np.full(D, 4.0)])
    covs = np.stack([np.eye(D), 0.5 * np.eye(D) + 0.2])
    X = means[z.astype(int)] + rng.standard_normal((n, D)) @ np.linalg.cholesky(covs[0]).T
    if beyond:
        covs = covs * np.array([1.0, 30.0])[:, None, None]
    spec = gaussian.scatter_spec(X, [f"x{j}" for j in range(D)], np.array([0.6, 0.4]),
                                 means, covs, z.astype(int))
    over = []
    real = layout.finish_over
    monkeypatch.setattr(layout, "finish_over", lambda *a: over.append(1) or real(*a))
    at_once = render(spec).png
    assert not over   # (drawn at once: no picture ahead)
    drawing = start(spec.kind, *spec.first(), ahead=True)
    png = finish(drawing, *spec.second())[0]
    assert png == at_once
    assert len(over) == (0 if beyond else 1)


@pytest.mark.parametrize("items, sizes, K", [(10, 2, 2), (4, 2, 5), (12, 2, 3), (5, 3, 3)])
def test_profile_drawn_ahead_gives_the_bytes_of_one_drawn_at_once(monkeypatch, items, sizes, K):
    """A binary profile whose first stage ran ahead of the estimate (laid out with a legend
    of classes at 100%, drawn without the class lines) gives the bytes of one drawn at once,
    by drawing the lines and legend on that picture, and its legend lies inside the figure;
    a profile of 3-code items is drawn whole either way (the same bytes)."""
    from src.output.plots import layout, profile
    from src.output.plots.spec import finish, render, start

    rng = stream(11, "profile-ahead", items, sizes, K)
    prob = rng.dirichlet(np.ones(sizes), size=(K, items))
    prob[:, 0] = np.eye(sizes)[0]          # probabilities of exactly 0 and 1
    cats = [[str(c + 1) for c in range(sizes)] for _ in range(items)]
    cats[-1] = ["only"]                    # an item with a single code: no line point
    prob[:, -1] = np.eye(sizes)[0]
    weight = rng.dirichlet(np.ones(K))
    spec = profile.profile_spec(prob, weight, [f"item{j}" for j in range(items)], cats)
    over = []
    real = layout.finish_over
    monkeypatch.setattr(layout, "finish_over", lambda *a: over.append(a) or real(*a))
    at_once = render(spec).png
    assert not over
    png = finish(start(spec.kind, *spec.first(), ahead=True), *spec.second())[0]
    assert png == at_once
    assert len(over) == (1 if sizes == 2 else 0)
    if over:
        fig, legend = over[0][0], over[0][2][-1]
        box = legend.get_window_extent(fig.canvas.get_renderer())
        assert box.x1 <= fig.bbox.width and box.x0 >= 0


@pytest.mark.parametrize("K, n", [(1, 50), (2, 100000), (3, 5000), (7, 20000), (2, 3)])
def test_histogram_drawn_ahead_gives_the_bytes_of_one_drawn_at_once(monkeypatch, K, n):
    """The posterior histogram laid out in its first stage (x from 1/K to 1, a left margin
    for the widest count) and drawn there without what the estimate decides gives the bytes
    of one drawn at once, both in two steps; its count labels lie inside the figure, right
    of the y label.  A handful of rows (ticks with decimals, wider than the margin held):
    laid out on its own ticks and drawn whole, the same bytes either way."""
    from src.output.plots import layout, posterior
    from src.output.plots.spec import finish, render, start

    rng = stream(5, "histogram-ahead", K, n)
    tau = rng.dirichlet(np.full(K, 0.5), size=n) if K > 1 else np.ones((n, 1))
    spec = posterior.posterior_spec(tau)
    assert spec.meta["K"] == K and spec.stage1 == {"n", "K"}
    over = []
    real = layout.finish_over
    monkeypatch.setattr(layout, "finish_over", lambda *a: over.append(a) or real(*a))
    at_once = render(spec).png
    png = finish(start(spec.kind, *spec.first(), ahead=True), *spec.second())[0]
    assert png == at_once
    two_steps = n > 10
    assert len(over) == (2 if two_steps else 0)
    for fig, _, artists in over:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        ylabel = ax.yaxis.label.get_window_extent(renderer)
        for label in ax.get_yticklabels():
            if label.get_text():
                box = label.get_window_extent(renderer)
                assert box.x0 >= ylabel.x1 - 0.5 and box.x0 >= 0
        # drawn whole, the figure differs only where the x axis's ticks meet the bottom
        # spine (drawn before it in two steps, after it whole): the order is a whole draw's
        two = np.asarray(fig.canvas.buffer_rgba()).copy()
        fig.canvas.draw()
        rows = np.flatnonzero((two != np.asarray(fig.canvas.buffer_rgba())).any(axis=(1, 2)))
        edge = fig.bbox.height - ax.bbox.y0
        assert all(abs(r - edge) <= 2 for r in rows), (rows, edge)


def test_histogram_whose_first_stage_had_another_k_is_drawn_whole():
    """A second stage with another number of classes than its first stage's (the x range
    laid out there is not the histogram's) is laid out again and drawn whole: a PNG of the
    figure's size, no error."""
    from src.output.plots import posterior
    from src.output.plots.spec import finish, start

    tau = stream(6, "histogram-other-k").dirichlet(np.full(2, 0.5), size=500)
    spec = posterior.posterior_spec(tau)
    first = posterior.posterior_data(500, 3)
    png, width, height = finish(start("posterior", *first.first(), ahead=True), *spec.second())
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (height, width) == (420, 640)
