"""Tests of SQUAREM: step length, backtracking into the parameter space, fewer iterations."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation import em_map, fit_em
from src.estimation import squarem
from tests.test_em import Gauss1D, MemoryCheckpointer, gauss_data


def _overlapping_problem(sep=1.5, n=1000):
    data = gauss_data(n=n, sep=sep)
    init = {"weight": np.array([0.5, 0.5]), "mean": np.array([-0.5, 2.0]), "var": np.ones(2)}
    return data, init


class TestSquaremPieces:
    def test_step_length_is_s3_and_clipped(self):
        """a = ||r||/||v||, clipped to [1, step_max]; v = 0 gives step_max."""
        r, v = np.array([3.0, 4.0]), np.array([0.0, 1.0])
        assert squarem.step_length(r, v, 100.0) == pytest.approx(5.0)
        assert squarem.step_length(r, v, 2.0) == 2.0
        assert squarem.step_length(r, 10 * r, 100.0) == 1.0
        assert squarem.step_length(r, np.zeros(2), 8.0) == 8.0

    def test_extrapolation_is_the_s3_formula(self):
        """An in-space candidate is p0 + 2 a r + a^2 v in the free parameters."""
        m = Gauss1D(2)
        data, p0 = _overlapping_problem()
        p1, _ = em_map(m, data, p0)
        p2, _ = em_map(m, data, p1)
        a, cand = squarem.propose(m, p0, p1, p2, 1.5)
        f0, f1, f2 = m.to_free(p0), m.to_free(p1), m.to_free(p2)
        expected = f0 + 2 * a * (f1 - f0) + a * a * (f2 - 2 * f1 + f0)
        assert a == 1.5
        np.testing.assert_allclose(m.to_free(cand), expected, rtol=1e-14)

    def test_out_of_space_step_is_backtracked_toward_em(self):
        """A step that makes a weight negative is halved toward a = 1 until it is valid."""
        m = Gauss1D(2)
        p0 = {"weight": np.array([0.5, 0.5]), "mean": np.array([0.0, 1.0]), "var": np.ones(2)}
        p1 = {"weight": np.array([0.3, 0.7]), "mean": np.array([0.0, 1.0]), "var": np.ones(2)}
        p2 = {"weight": np.array([0.2, 0.8]), "mean": np.array([0.0, 1.0]), "var": np.ones(2)}
        # w1 = 0.5 - 0.4 a + 0.1 a^2 exceeds 1 (so w2 < 0) for a > 5: 64 -> ... -> 4.9375
        a, cand = squarem.propose(m, p0, p1, p2, 64.0)
        assert m.in_parameter_space(cand)
        assert a == pytest.approx(4.9375)
        f = 0.5 + 2 * a * (-0.2) + a * a * 0.1
        assert cand["weight"][0] == pytest.approx(f)
        assert squarem.propose(m, p0, p1, p2, 1.001) == (1.0, p2)

    def test_proposals_together_equal_one_by_one(self):
        """Proposals for several cycles at once (LCA's batched free vectors, and a model without them) equal first_proposal and propose cycle by cycle, backtracking included."""
        from src.models.lca import LatentClassModel
        from src.utils.rng import stream

        rng = stream(3, "test", 0)
        Y = (rng.random((400, 5)) < rng.choice([0.2, 0.8], size=(400, 1))).astype(np.int64)
        lca = LatentClassModel(2)
        lca.setup(LatentClassModel.meta_from_array(Y))
        gauss, (gdata, ginit) = Gauss1D(2), _overlapping_problem()
        for model, data, inits in ((lca, {"Y": Y}, [lca.init_params({"Y": Y}, rng) for _ in range(4)]),
                                   (gauss, gdata, [ginit, {**ginit, "var": np.array([0.2, 3.0])}])):
            cycles = []
            for p0 in inits:
                p1, _ = em_map(model, data, p0)
                cycles.append((p0, p1, em_map(model, data, p1)[0]))
            steps = [None, 40.0] * (len(cycles) // 2)       # a new cycle, a long backtracking step
            step_maxs = [64.0] * len(cycles)
            got = squarem.proposals(model, cycles, steps, step_maxs)
            for (p0, p1, p2), step, sm, (a0, a, cand) in zip(cycles, steps, step_maxs, got):
                if step is None:
                    want = squarem.first_proposal(model, p0, p1, p2, sm)
                else:
                    want = (None, *squarem.propose(model, p0, p1, p2, step))
                assert (a0, a) == want[:2]
                assert all(np.array_equal(cand[k], want[2][k]) for k in cand)

    def test_step_bound_adapts(self):
        """step_max grows x4 after a full-length accepted step and shrinks after a failure."""
        assert squarem.update_step_max(1.0, 1.0, failed=False) == 4.0
        assert squarem.update_step_max(16.0, 3.0, failed=False) == 16.0
        assert squarem.update_step_max(16.0, 16.0, failed=True) == 4.0
        assert squarem.update_step_max(1.0, 1.0, failed=True) == 1.0


class TestSquaremFit:
    @pytest.mark.parametrize("sep", [1.0, 1.5, 2.0])
    def test_cuts_iterations_several_fold(self, sep):
        """On overlapping components SQUAREM needs at least 3x fewer EM-map evaluations."""
        m = Gauss1D(2)
        data, init = _overlapping_problem(sep=sep)
        plain = fit_em(m, data, init_params=init, tol=1e-10, max_iter=5000)
        fast = fit_em(m, data, init_params=init, tol=1e-10, max_iter=5000, accelerate="squarem")
        assert plain.converged and fast.converged
        assert plain.n_iter >= 3 * fast.n_iter
        assert fast.loglik >= plain.loglik - 1e-7 * abs(plain.loglik)
        np.testing.assert_allclose(fast.params["mean"], plain.params["mean"], rtol=1e-3)

    def test_monotone_and_counts_every_evaluation(self):
        """The trace never falls; n_iter counts every evaluation including rejected ones."""
        m = Gauss1D(2)
        data, init = _overlapping_problem(sep=1.0)
        rec = MemoryCheckpointer()
        res = fit_em(m, data, init_params=init, tol=1e-10, max_iter=5000, accelerate="squarem",
                     checkpoint=rec)
        tr = np.array(res.loglik_trace)
        assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))
        evals = [s["current"]["n_eval"] for s in rec.states if s["current"] is not None]
        assert evals == list(range(1, res.n_iter + 1))
        assert len(tr) <= res.n_iter
        # a later extrapolation state carries the step bound that the resumed run needs
        assert any(s["current"]["sq"]["step_max"] > 1.0 for s in rec.states if s["current"])

    def test_max_iter_counts_evaluations(self):
        """max_iter bounds EM-map evaluations, mid-cycle if need be."""
        data, init = _overlapping_problem()
        res = fit_em(Gauss1D(2), data, init_params=init, max_iter=7, accelerate="squarem")
        assert res.n_iter == 7 and not res.converged


class TestSquaremGmm:
    """SQUAREM on the built-in Gaussian mixture (full covariances: positive definiteness)."""

    @staticmethod
    def _setup():
        from tests.test_em import TestAgainstScikitLearn, _gmm
        from src.estimation import start_params

        X = TestAgainstScikitLearn._data()
        m = _gmm(3, X)
        return m, {"X": X}, start_params(m, {"X": X}, 0, 1)

    def test_gmm_monotone_fewer_iterations_same_optimum(self):
        """On gmm the accelerated trace never falls and reaches the plain-EM optimum sooner."""
        m, data, init = self._setup()
        plain = fit_em(m, data, init_params=init, tol=1e-12, max_iter=5000)
        fast = fit_em(m, data, init_params=init, tol=1e-12, max_iter=5000, accelerate="squarem")
        tr = np.array(fast.loglik_trace)
        assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))
        assert fast.loglik == pytest.approx(plain.loglik, rel=1e-9)
        assert fast.n_iter < plain.n_iter

    def test_gmm_resume_mid_cycle_bitwise(self):
        """Resuming gmm + SQUAREM from states inside a cycle reproduces the fit bit for bit."""
        m, data, init = self._setup()
        rec = MemoryCheckpointer()
        full = fit_em(m, data, init_params=init, max_iter=60, accelerate="squarem", checkpoint=rec)
        phases = {}
        for i, s in enumerate(rec.states):
            if s["current"] is not None:
                phases.setdefault(s["current"]["phase"], i)
        assert set(phases) >= {"sq0", "sq1", "sq2"}
        for i in phases.values():
            again = fit_em(m, data, init_params=init, max_iter=60, accelerate="squarem",
                           checkpoint=MemoryCheckpointer(rec.states[i + 5]))
            assert again.loglik == full.loglik
            assert all(np.array_equal(again.params[k], full.params[k]) for k in full.params)
