"""Bootstrap likelihood-ratio test: decisions on clear cases, exact early stopping in index
order, resume and worker invariance, class splits, refits of negative statistics, StepMix."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.parallel.executors import make_executor
from src.selection.blrt import (BLRTResult, _fit, blrt_replicate, blrt_test, settled,
                                split_starts)
from src.utils.checkpointing import CheckpointInvalid
from src.utils.rng import stream
from tests.test_bootstrap import MemoryCheckpointer, ReversedExecutor
from tests.test_executors import dask_cluster  # noqa: F401  (the session's Dask cluster)
from tests.test_louis import Gauss1D

#: a light search for small test data: 4 short candidates, the best 2 to convergence
FIT = {"n_starts": 2, "n_candidates": 4, "candidate_iter": 3, "tol": 1e-7, "max_iter": 300,
       "accelerate": "squarem"}


def gauss_case(n=200, gap=0.0, seed=1, k=(1, 2)):
    """1-D data (two equal halves ``gap`` apart) and the fits with k[0] and k[1] classes
    (the larger from the search plus splits of the smaller, as a replicate's)."""
    rng = stream(seed, "test-data")
    x = np.concatenate([rng.normal(0.0, 1.0, n // 2), rng.normal(gap, 1.0, n - n // 2)])
    data = {"x": x}
    models = [Gauss1D(j) for j in k]
    small = fit_em(models[0], data, seed=seed, **FIT)
    big = _fit(models[1], data, FIT, seed, split_starts(models[0], models[1], data, small.params))
    return models, data, [small.to_dict(), big.to_dict()]


def run(case, **kw):
    models, data, fits = case
    opts = dict(n_replicates=39, seed=5, fit_options=FIT)
    opts.update(kw)
    return blrt_test(models[0], models[1], data, fits[0], fits[1], **opts)


@pytest.fixture(scope="module")
def null_case():
    return gauss_case(gap=0.0)


@pytest.fixture(scope="module")
def clear_case():
    return gauss_case(gap=5.0)


class TestDecision:
    def test_rejects_with_a_clear_extra_class(self, clear_case):
        """Two components 5 SDs apart: 1 against 2 classes rejects, stopping by the tail bound after 19 replicates."""
        res = run(clear_case, n_replicates=24)
        assert res.reject and res.p_value == pytest.approx(1 / 20)
        assert (res.stopped_early, res.stop_rule, res.n_done, res.n_requested) == (True, "tail", 19, 24)
        assert res.statistic > 100 and max(res.t_star) < 30
        assert min(res.t_star) >= -1e-6 and res.n_refitted == 0  # splits keep T* >= 0

    def test_does_not_reject_one_class_data_and_curtailment_is_exact(self, null_case):
        """One-class data: no rejection; the curtailed test stops early on the same replicates and decision as all 39."""
        early = run(null_case)
        full = run(null_case, early_stop=False)
        assert not early.reject and not full.reject
        assert early.stopped_early and early.stop_rule == "curtailed" and early.n_done < 39
        assert full.n_done == 39 and not full.stopped_early and full.stop_rule is None
        assert full.t_star[:early.n_done] == early.t_star
        c = sum(x >= early.statistic for x in early.t_star)
        assert early.p_value == (1 + c) / (early.n_done + 1) > 0.05
        assert (1 + c) / 40 > 0.05  # so every completion of the 39 keeps p above alpha

    def test_settled_rules(self):
        """Curtailment and the tail bound decide from the counts and moments of replicates 1..r only."""
        assert settled(10.0, [1.0] * 18, 18, 19, 0.05) is None          # p = 1/19 > alpha
        assert settled(10.0, [1.0] * 19, 19, 19, 0.05) is None          # all done: nothing to stop
        assert settled(10.0, [11.0, 12.0], 2, 39, 0.05) == "curtailed"  # (1+2)/40 > alpha
        assert settled(10.0, [11.0], 1, 39, 0.05) is None
        stars = list(stream(1, "test").chisquare(11, 19))
        assert settled(1000.0, stars, 19, 100, 0.05) == "tail"
        assert settled(30.0, stars, 19, 100, 0.05) is None              # not far enough out
        assert settled(1000.0, stars, 20, 100, 0.05) == "tail"          # a failed replicate among 20
        assert settled(1.0, [0.5] * 96, 96, 100, 0.05) == "curtailed"   # (1+0+4)/101 <= alpha


class TestInvariance:
    def test_resume_after_interruption_is_identical(self, null_case):
        """A test interrupted after 3 replicates and resumed computes only the missing ones and gives the same result."""
        base = run(null_case, early_stop=False, n_replicates=8)
        ck = MemoryCheckpointer()

        def stop(r, status, n_done, n_total):
            if n_done == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run(null_case, early_stop=False, n_replicates=8, checkpoint=ck, on_replicate=stop)
        state = ck.states[-1]
        assert sorted(state["replicates"]) == ["0", "1", "2"]
        computed = []
        resumed = run(null_case, early_stop=False, n_replicates=8,
                      checkpoint=MemoryCheckpointer(state),
                      on_replicate=lambda r, *a: computed.append(r))
        assert computed == [3, 4, 5, 6, 7]
        assert resumed.to_dict() == base.to_dict()

    def test_state_of_other_options_is_refused(self, null_case):
        """A state saved with another seed raises CheckpointInvalid naming the reason."""
        ck = MemoryCheckpointer()
        run(null_case, n_replicates=2, checkpoint=ck)
        with pytest.raises(CheckpointInvalid, match="other options"):
            run(null_case, n_replicates=2, seed=6, checkpoint=MemoryCheckpointer(ck.states[-1]))
        with pytest.raises(CheckpointInvalid, match="not a BLRT state"):
            run(null_case, n_replicates=2, checkpoint=MemoryCheckpointer({"kind": "bootstrap"}))

    def test_early_stop_in_index_order_whatever_the_completion_order(self, clear_case):
        """Replicates finishing last first, or extra ones already saved beyond the stop, give the same result."""
        base = run(clear_case, n_replicates=22)
        assert base.n_done == 19
        rev = run(clear_case, n_replicates=22, executor=ReversedExecutor())
        assert rev.to_dict() == base.to_dict()
        ck = MemoryCheckpointer()
        run(clear_case, n_replicates=22, early_stop=False, checkpoint=ck)  # all 22 saved
        again = run(clear_case, n_replicates=22, checkpoint=MemoryCheckpointer(ck.states[-1]))
        assert again.to_dict() == base.to_dict()

    def test_one_two_workers_and_dask_agree(self, null_case, dask_cluster):  # noqa: F811
        """In process, 2 local processes and a Dask LocalCluster give identical results."""
        base = run(null_case, n_replicates=12)
        with make_executor(2) as ex:
            assert run(null_case, n_replicates=12, executor=ex).to_dict() == base.to_dict()
        with make_executor(scheduler=dask_cluster.scheduler_address) as ex:
            assert run(null_case, n_replicates=12, executor=ex).to_dict() == base.to_dict()

    def test_result_round_trips(self, null_case):
        """to_dict has the agreed keys and from_dict gives the result back."""
        res = run(null_case, n_replicates=4)
        d = res.to_dict()
        assert {"statistic", "p_value", "n_done", "n_requested", "stopped_early", "t_star",
                "n_refitted", "notes"} <= set(d)
        assert BLRTResult.from_dict(d).to_dict() == d


class TestSearch:
    def test_splits_find_the_two_clusters(self):
        """Splitting a one-class Gaussian fit of two far clusters gives a start near the true means and weights."""
        rng = stream(2, "test-data")
        X = np.vstack([rng.normal([0, 0], 1.0, (300, 2)), rng.normal([6, 3], 1.0, (200, 2))])
        m1, m2 = GaussianMixtureModel(1), GaussianMixtureModel(2)
        for m in (m1, m2):
            m.setup(GaussianMixtureModel.meta_for_array(X))
        one = {"weight": np.array([1.0]), "mean": X.mean(0)[None], "cov": np.cov(X.T, bias=True)[None]}
        (start,) = split_starts(m1, m2, {"X": X}, one)
        order = np.argsort(start["mean"][:, 0])
        np.testing.assert_allclose(start["mean"][order], [[0, 0], [6, 3]], atol=0.3)
        np.testing.assert_allclose(start["weight"][order], [0.6, 0.4], atol=0.02)

    def test_splits_without_start_features_use_scores(self, clear_case):
        """A model without start features splits along its class scores: one start per class, halves apart."""
        (m1, m2), data, fits = clear_case
        (start,) = split_starts(m1, m2, data, fits[0]["params"])
        assert abs(np.diff(start["mean"])[0]) > 3 and np.all(start["weight"] > 0.3)

    def test_splits_reach_more_than_one_extra_class(self):
        """Against a model with two classes more (a list's previous K), the largest half is cut again: three spread-out classes, and the test runs."""
        rng = stream(3, "test-data")
        x = np.concatenate([rng.normal(m, 0.5, 150) for m in (-6.0, 0.0, 6.0)])
        m1, m3 = Gauss1D(1), Gauss1D(3)
        one = {"weight": np.array([1.0]), "mean": np.array([x.mean()]), "var": np.array([x.var()])}
        (start,) = split_starts(m1, m3, {"x": x}, one)
        assert start["weight"].shape == (3,) and np.min(np.diff(np.sort(start["mean"]))) > 2
        res = blrt_test(m1, m3, {"x": x}, {"params": one, "loglik": m1.loglik({"x": x}, one)},
                        {"params": start, "loglik": m3.loglik({"x": x}, start)},
                        n_replicates=2, seed=1, fit_options=FIT)
        assert res.n_failed == 0 and min(res.t_star) >= -1e-6

    def test_negative_statistic_is_refitted_and_counted(self, clear_case):
        """With one EM step allowed the K fits fall below the K-1 fit, so replicates are refitted with more starts and counted."""
        (m1, m2), data, fits = clear_case
        opts = {"seed": 5, "fit_options": dict(FIT, max_iter=1, n_candidates=0, accelerate="none")}
        rec = blrt_replicate(m1, m2, data, fits[0]["params"], opts, 0)
        assert rec["status"] == "not_converged" and rec["refitted"]
        res = run(clear_case, n_replicates=4, fit_options=opts["fit_options"], early_stop=False)
        assert res.n_refitted >= 1 and res.n_not_converged == 4
        assert res.n_negative == sum(x < 0 for x in res.t_star)
        assert any(f"{res.n_refitted} of 4 bootstrap replicates" in n and "refitted with 2x the starts" in n
                   for n in res.notes)


class TestAgainstStepMix:
    @pytest.mark.slow
    def test_statistic_and_p_value_agree_with_stepmix(self):
        """On weakly two-class LCA data StepMix's statistic is ours on its fits (1e-8), and its parametric-bootstrap p-value and mean T* are within Monte-Carlo error of ours."""
        import contextlib
        import io
        import warnings

        from stepmix import StepMix
        from stepmix.bootstrap import bootstrap

        rng = stream(8, "test-data")
        z = rng.random(300) < 0.5
        Y = (rng.random((300, 5)) < np.where(z[:, None], 0.6, 0.4)).astype(np.int64)
        models = []
        for k in (1, 2):
            m = LatentClassModel(k)
            m.setup(LatentClassModel.meta_from_array(Y))
            models.append(m)
        B = 20
        kw = dict(measurement="binary", verbose=0, progress_bar=0, n_init=2, max_iter=500)
        quiet = contextlib.redirect_stderr(io.StringIO())
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet:
            warnings.simplefilter("ignore")
            sm = [StepMix(n_components=k, **kw).fit(Y) for k in (1, 2)]
            # what stepmix.bootstrap.blrt does: both models refitted to data simulated by the
            # smaller one from the same random state, then p = #{T* > T} / B
            boot = [bootstrap(m, Y, n_repetitions=B, identify_classes=False, sampler=sm[0],
                              random_state=4, parametric=True, progress_bar=False)[1]
                    for m in sm]
        t_sm = 2 * (boot[1]["LL"].to_numpy() - boot[0]["LL"].to_numpy())
        T_sm = 2 * (sm[1].score(Y) - sm[0].score(Y)) * Y.shape[0]
        p_sm = float(np.mean(t_sm > T_sm))
        # the same fits give the same statistic
        lls = []
        for model, fitted in zip(models, sm):
            par = fitted.get_parameters()
            pis = np.asarray(par["measurement"]["pis"])
            lls.append(model.loglik({"Y": Y}, {"weight": np.asarray(par["weights"]),
                                               "prob": np.stack([1 - pis, pis], axis=-1)}))
        assert 2 * (lls[1] - lls[0]) == pytest.approx(T_sm, rel=1e-8)
        tol = 1e-10 / abs(sm[0].score(Y))  # StepMix's abs_tol on the mean loglik, as ours
        fit_opts = dict(FIT, tol=tol, max_iter=500)
        fits = [fit_em(m, {"Y": Y}, seed=1, **fit_opts).to_dict() for m in models]
        ours = blrt_test(models[0], models[1], {"Y": Y}, fits[0], fits[1], n_replicates=B,
                         seed=3, early_stop=False, fit_options=fit_opts)
        assert ours.statistic >= T_sm - 1e-6  # our search reaches at least StepMix's maximum
        p_ours = float(np.mean(np.array(ours.t_star) >= ours.statistic))
        p = 0.5 * (p_ours + p_sm)
        assert abs(p_ours - p_sm) <= 3 * np.sqrt(2 * max(p * (1 - p), 0.05) / B)
        ts = np.array(ours.t_star)
        sd = np.sqrt(0.5 * (ts.var(ddof=1) + t_sm.var(ddof=1)))
        assert abs(ts.mean() - t_sm.mean()) <= 4 * sd * np.sqrt(2 / B)


def lca_null_case(n, seed, items=5):
    """Independent binary items (one class) and the LCA fits with 1 and 2 classes, the
    larger from the search plus splits of the smaller, as a replicate's."""
    rng = stream(seed, "test-data")
    Y = (rng.random((n, items)) < np.linspace(0.3, 0.7, items)).astype(np.int64)
    models = []
    for k in (1, 2):
        m = LatentClassModel(k)
        m.setup(LatentClassModel.meta_from_array(Y))
        models.append(m)
    data = {"Y": Y}
    small = fit_em(models[0], data, seed=seed, **FIT)
    big = _fit(models[1], data, FIT, seed, split_starts(models[0], models[1], data, small.params))
    return models, data, [small.to_dict(), big.to_dict()]


class TestSize:
    @pytest.mark.slow
    def test_size_on_one_class_data(self):
        """Over 200 one-class LCA data sets (n = 200, 5 items) the 1 against 2 classes BLRT (B = 19, exact curtailment) rejects at alpha = 0.05 in 2% to 9% of them (12 reached)."""
        rejections = 0
        for d in range(200):
            res = run(lca_null_case(200, 100 + d), n_replicates=19, seed=d)
            assert res.n_failed == 0
            rejections += res.reject
        assert 0.02 <= rejections / 200 <= 0.09
