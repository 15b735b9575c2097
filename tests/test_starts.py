"""The multi-stage search for starting values (src/estimation/starts.py and fit_em).

Hard partitions against scipy and scikit-learn on the same data and draws, the iris fit
against mclust's published VVV maximum, extra starts, replication, resume mid-candidates
and worker-count invariance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from src.estimation import starts
from src.estimation.em import fit_em, replication_summary
from src.estimation.results import FitResult
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.utils.checkpointing import CheckpointInvalid
from src.utils.rng import stream
from tests.test_em import Gauss1D, MemoryCheckpointer, gauss_data

ROOT = Path(__file__).resolve().parent.parent
#: mclust 6's log-likelihood of Mclust(iris[, 1:4], G = 3, modelNames = "VVV")
MCLUST_IRIS_VVV3 = -180.18548


def iris_model(K: int = 3):
    X = pd.read_csv(ROOT / "src/data/builtin/iris.csv").iloc[:, :4].to_numpy(float)
    m = GaussianMixtureModel(K)
    m.setup(GaussianMixtureModel.meta_for_array(X))
    return m, {"X": X}


def blobs(n=240, seed=3):
    rng = stream(seed, "test-blobs")
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 0.5, 0.0], [0.0, 3.0, 1.0]])
    z = rng.integers(3, size=n)
    X = centres[z] + rng.standard_normal((n, 3)) * np.array([0.6, 0.9, 0.5])
    m = GaussianMixtureModel(3)
    m.setup(GaussianMixtureModel.meta_for_array(X))
    return m, {"X": X}


def same_partition(a, b) -> bool:
    """True when two label vectors group the rows alike (up to the labels' names)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_builtin_iris_is_r_iris():
    """builtin:iris holds R's iris: 150 rows, 50 per species, R's column means and its rows 35 and 38 (which UCI's copy gets wrong)."""
    from src.data.loading import load_table

    frame, record = load_table("builtin:iris")
    assert frame.shape == (150, 5) and record["source"] == "builtin:iris"
    assert frame["Species"].value_counts().to_dict() == {"setosa": 50, "versicolor": 50, "virginica": 50}
    np.testing.assert_allclose(frame.iloc[:, :4].mean().to_numpy(),
                               [5.843333, 3.057333, 3.758, 1.199333], atol=1e-6)
    assert frame.iloc[34, :4].tolist() == [4.9, 3.1, 1.5, 0.2]
    assert frame.iloc[37, :4].tolist() == [4.9, 3.6, 1.4, 0.1]


class TestHardPartitions:
    def test_hierarchical_start_is_scipy_ward_cut(self):
        """The hierarchical candidate's partition is scipy's fcluster of Ward's linkage at K, on the same features."""
        model, data = blobs()
        F = starts.features(model, data)
        labels = starts.ward_labels(F, 3)
        expected = fcluster(linkage(F, method="ward"), 3, criterion="maxclust")
        assert same_partition(labels, expected) and len(set(labels.tolist())) == 3

    def test_hierarchical_start_is_deterministic_and_its_m_step_is_the_clusters_moments(self):
        """Candidate 1 (hierarchical) is the same for every seed on small data, and its starting values are the clusters' weights, means and covariances (+ reg_covar)."""
        model, data = blobs()
        p1, kind = starts.candidate_params(model, data, seed=1, i=0)
        p2, _ = starts.candidate_params(model, data, seed=99, i=0)
        assert kind == "hierarchical"
        assert all(np.array_equal(p1[k], p2[k]) for k in p1)
        X = data["X"]
        F = (X - X.mean(axis=0)) / X.std(axis=0)
        lab = fcluster(linkage(F, method="ward"), 3, criterion="maxclust")
        for c in np.unique(lab):
            rows = X[lab == c]
            k = int(np.argmin(np.abs(p1["mean"] - rows.mean(axis=0)).sum(axis=1)))
            np.testing.assert_allclose(p1["mean"][k], rows.mean(axis=0), rtol=1e-10)
            np.testing.assert_allclose(p1["cov"][k], np.cov(rows.T, bias=True) + 1e-6 * np.eye(3),
                                       rtol=1e-9, atol=1e-12)
            assert p1["weight"][k] == pytest.approx(rows.shape[0] / X.shape[0], rel=1e-9)

    def test_hierarchical_subsample_comes_from_the_candidate_stream(self):
        """With more rows than HC_SUBSAMPLE, the hierarchical start is Ward's clusters of rows drawn from the candidate's own stream."""
        X = stream(5, "test-big").standard_normal((starts.HC_SUBSAMPLE + 300, 2)) * [1.0, 3.0]
        model, data = GaussianMixtureModel(4), {"X": X}
        model.setup(GaussianMixtureModel.meta_for_array(X))
        got, kind = starts.candidate_params(model, data, seed=7, i=0)
        rows = np.sort(stream(7, "candidate", 0).choice(X.shape[0], size=starts.HC_SUBSAMPLE,
                                                        replace=False))
        sub = X[rows]
        F = (sub - sub.mean(axis=0)) / sub.std(axis=0)
        lab = fcluster(linkage(F, method="ward"), 4, criterion="maxclust")
        means = np.array([sub[lab == c].mean(axis=0) for c in np.unique(lab)])
        order = [int(np.argmin(np.abs(got["mean"] - m).sum(axis=1))) for m in means]
        assert kind == "hierarchical" and sorted(order) == [0, 1, 2, 3]
        np.testing.assert_allclose(got["mean"][order], means, rtol=1e-10)

    def test_cut_gives_exactly_k_clusters_when_heights_tie(self):
        """Duplicated rows (merges at height 0) still give exactly K clusters."""
        F = np.repeat(np.array([[0.0], [1.0], [5.0]]), 4, axis=0)
        assert len(set(starts.ward_labels(F, 5).tolist())) == 5

    def test_kmeanspp_matches_a_direct_implementation(self):
        """k-means++ centres equal a direct D^2-sampling loop drawing from the same generator."""
        model, data = blobs()
        F = starts.features(model, data)
        got = starts.kmeanspp_centres(F, 5, stream(2, "candidate", 1))
        rng = stream(2, "candidate", 1)
        chosen = [int(rng.integers(F.shape[0]))]
        for _ in range(4):
            d2 = np.min([((F - F[c]) ** 2).sum(axis=1) for c in chosen], axis=0)
            chosen.append(int(rng.choice(F.shape[0], p=d2 / d2.sum())))
        assert got.tolist() == chosen

    def test_kmeanspp_matches_scikit_learn_with_one_local_trial(self):
        """With one local trial, scikit-learn's kmeans_plusplus picks the same centres from the same RandomState draws."""
        from sklearn.cluster import kmeans_plusplus

        class FromRandomState:  # our two draws, made the way scikit-learn makes them
            def __init__(self, seed):
                self.rs = np.random.RandomState(seed)

            def integers(self, n):
                return self.rs.choice(n, p=np.full(n, 1.0 / n))

            def random(self):
                return self.rs.uniform(size=1)[0]

        model, data = blobs()
        F = starts.features(model, data)
        got = starts.kmeanspp_centres(F, 4, FromRandomState(11))
        _, idx = kmeans_plusplus(F, 4, random_state=np.random.RandomState(11), n_local_trials=1)
        assert got.tolist() == idx.tolist()

    def test_kinds_cycle_and_fall_back_without_features(self):
        """Candidate 1 is hierarchical, then k-means++, random, partition in turn; a model without features gets partitions."""
        assert [starts.candidate_kind(i, True) for i in range(7)] == [
            "hierarchical", "kmeans++", "random", "partition", "kmeans++", "random", "partition"]
        assert [starts.candidate_kind(i, False) for i in range(4)] == [
            "partition", "partition", "random", "partition"]
        res = fit_em(Gauss1D(2), gauss_data(n=300), n_starts=3, n_candidates=8)
        assert set(res.start_kinds) <= {"partition", "random"}

    def test_lca_features_are_the_one_hot_answers(self):
        """LCA's start features are its one-hot answers with a missing answer as zeros."""
        Y = np.array([[0, 1], [1, -1], [2, 0]])
        m = LatentClassModel(2)
        m.setup(LatentClassModel.meta_from_array(Y))
        F = m.start_features({"Y": Y})
        assert F.tolist() == [[1, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 0, 1, 1, 0]]


class TestSearch:
    @pytest.mark.parametrize("seed", [1, 2, 3, 4])
    def test_iris_reaches_mclust_vvv_maximum_with_defaults(self, seed):
        """Iris, 3 full-covariance components, default search: mclust's VVV log-likelihood -180.18548."""
        model, data = iris_model()
        res = fit_em(model, data, seed=seed, accelerate="squarem")
        assert res.loglik == pytest.approx(MCLUST_IRIS_VVV3, abs=1e-4)
        assert res.replication["replicated"] and not res.start_flags[res.best_start]

    def test_candidates_rank_and_final_starts_continue_them(self):
        """The final starts are the best candidates after their short run, best first, numbered by candidate."""
        model, data = iris_model()
        rec = MemoryCheckpointer()
        res = fit_em(model, data, seed=3, n_starts=4, n_candidates=12, candidate_iter=5,
                     checkpoint=rec)
        cands = next(s for s in rec.states if len(s["candidates"]) == 12)["candidates"]
        short = {int(k): v["best_ll"] for k, v in cands.items()}
        best4 = sorted(short, key=lambda i: (-short[i], i))[:4]
        assert res.start_ids == best4
        assert all(n >= 5 for n in res.start_n_iter)
        assert res.search == {"n_candidates": 12, "candidate_iter": 5, "n_starts": 4, "n_extra": 0}

    def test_more_starts_than_candidates_promotes_every_candidate(self):
        """n_starts above n_candidates draws n_starts candidates and runs them all."""
        model, data = iris_model()
        res = fit_em(model, data, seed=1, n_starts=6, n_candidates=3, candidate_iter=2)
        assert sorted(res.start_ids) == list(range(6)) and res.search["n_candidates"] == 6

    def test_zero_candidates_is_the_previous_policy(self):
        """n_candidates 0: start s is random start s from stream(seed, 'start', s), as before."""
        from src.estimation.em import start_params, run_start

        model, data = iris_model()
        res = fit_em(model, data, seed=4, n_starts=3, n_candidates=0)
        assert res.start_ids == [0, 1, 2] and res.start_kinds == ["random"] * 3
        opts = {"tol": 1e-8, "max_iter": 1000, "seed": 4, "accelerate": "none", "chunk_size": 4096}
        one = run_start(model, data, opts, 2)
        assert one["loglik"] == res.start_logliks[2]
        assert np.array_equal(start_params(model, data, 4, 2)["mean"],
                              start_params(model, data, 4, 2)["mean"])

    def test_extra_starts_are_added_never_instead(self):
        """Extra starts run beside the same drawn starts, numbered after the candidates, kind 'extra'."""
        model, data = iris_model()
        base = fit_em(model, data, seed=2, n_starts=3, n_candidates=10, candidate_iter=4)
        extra = [base.params, model.permute(base.params, [2, 0, 1])]
        res = fit_em(model, data, seed=2, n_starts=3, n_candidates=10, candidate_iter=4,
                     extra_starts=extra)
        assert res.start_ids == base.start_ids + [10, 11]
        assert res.start_logliks[:3] == base.start_logliks
        assert res.start_kinds[3:] == ["extra", "extra"]
        assert res.search["n_extra"] == 2
        assert res.start_logliks[3] == pytest.approx(base.loglik, abs=1e-6)
        with pytest.raises(ValueError, match="extra start 1"):
            fit_em(model, data, n_starts=1, extra_starts=[{"weight": np.ones(2) / 2}])

    def test_user_model_without_closed_form_gets_candidates(self):
        """A model with only log_joint (generic M-step) runs the candidate stage from random partitions."""
        from tests.test_em import PoissonMixtureGeneric, poisson_data

        res = fit_em(PoissonMixtureGeneric(2), poisson_data(n=200), n_starts=2, n_candidates=4,
                     candidate_iter=2)
        assert set(res.start_kinds) <= {"partition", "random"} and np.isfinite(res.loglik)


class TestReplication:
    def test_grouping_of_maxima(self):
        """Log-likelihoods within the tolerance of a group's best join it; counts and the best's replication follow."""
        lls = [-10.0, -10.0004, -12.0, -10.0, -12.0009, -15.0, np.nan]
        rep = replication_summary(lls, 0, [0, 1, 2, 3, 4, 5, 6], tol=1e-8, pool_name="unflagged")
        assert rep["tol"] == 1e-3
        assert rep["maxima"] == [[-10.0, 3], [-12.0, 2], [-15.0, 1]]
        assert rep["n_reached"] == 3 and rep["n_pool"] == 6 and rep["replicated"]
        big = replication_summary([-1e6, -1e6 - 0.5], 0, [0, 1], tol=1e-8, pool_name="unflagged")
        assert big["tol"] == pytest.approx(1.0) and big["n_reached"] == 2

    def test_known_distinct_maxima_are_counted(self):
        """Three well separated 1-D clusters, K=2: starts placed at the two splits give those maxima with their counts."""
        rng = stream(8, "test-three")
        x = np.concatenate([rng.normal(-6, 0.5, 150), rng.normal(0, 0.5, 100), rng.normal(6, 0.5, 150)])
        data = {"x": x}
        a = {"weight": np.array([0.375, 0.625]), "mean": np.array([-6.0, 2.4]), "var": np.array([0.25, 9.0])}
        b = {"weight": np.array([0.625, 0.375]), "mean": np.array([-3.6, 6.0]), "var": np.array([9.0, 0.25])}
        fa = fit_em(Gauss1D(2), data, init_params=a)
        fb = fit_em(Gauss1D(2), data, init_params=b)
        assert abs(fa.loglik - fb.loglik) > 1.0
        res = fit_em(Gauss1D(2), data, init_params=a, extra_starts=[a, b, b, b])
        hi, lo = sorted([(fa.loglik, 2), (fb.loglik, 3)], reverse=True)
        got = res.replication["maxima"]
        assert [c for _, c in got] == [hi[1], lo[1]]
        assert got[0][0] == pytest.approx(hi[0], abs=1e-6) and got[1][0] == pytest.approx(lo[0], abs=1e-6)
        assert res.replication["n_reached"] == hi[1] and res.replication["replicated"]

    def test_single_reaching_start_warns(self):
        """When only one start reaches the best maximum the fit warns to increase --n-starts."""
        rng = stream(8, "test-three")
        x = np.concatenate([rng.normal(-6, 0.5, 150), rng.normal(0, 0.5, 100), rng.normal(6, 0.5, 150)])
        a = {"weight": np.array([0.375, 0.625]), "mean": np.array([-6.0, 2.4]), "var": np.array([0.25, 9.0])}
        b = {"weight": np.array([0.625, 0.375]), "mean": np.array([-3.6, 6.0]), "var": np.array([9.0, 0.25])}
        res = fit_em(Gauss1D(2), {"x": x}, init_params=a, extra_starts=[b])
        assert res.replication["n_reached"] == 1 and not res.best_replicated
        assert any("reached by only one of 2 starts" in w and "--n-starts" in w for w in res.warnings)

    def test_fit_result_keeps_the_search_record(self):
        """FitResult's replication, flags, kinds and candidate numbers survive to_dict/from_dict."""
        model, data = iris_model()
        res = fit_em(model, data, seed=1, n_starts=3, n_candidates=6, candidate_iter=3)
        back = FitResult.from_dict(res.to_dict())
        assert back.replication == res.replication and back.start_ids == res.start_ids
        assert back.start_kinds == res.start_kinds and back.start_flags == res.start_flags
        assert back.search == res.search and back.flags == res.flags
        old = {k: v for k, v in res.to_dict().items()
               if k not in ("replication", "flags", "search", "start_ids", "start_kinds", "start_flags")}
        assert FitResult.from_dict(old).replication == {}


class TestResumeAndWorkers:
    def test_resume_mid_candidates_is_bitwise_identical(self):
        """Resuming from any state saved during the candidate or final stage gives the uninterrupted result."""
        model, data = iris_model()
        kw = dict(seed=5, n_starts=3, n_candidates=9, candidate_iter=4, accelerate="squarem")
        rec = MemoryCheckpointer()
        full = fit_em(model, data, checkpoint=rec, **kw)
        mid = [i for i, s in enumerate(rec.states) if 0 < len(s["candidates"]) < 9]
        final = [i for i, s in enumerate(rec.states) if s["finished"] or s["current"]]
        assert mid and final
        for i in mid[::3] + final[:: max(1, len(final) // 5)]:
            again = fit_em(model, data, checkpoint=MemoryCheckpointer(rec.states[i]), **kw)
            assert again.loglik == full.loglik and again.start_logliks == full.start_logliks
            assert again.start_ids == full.start_ids and again.loglik_trace == full.loglik_trace
            assert all(np.array_equal(again.params[k], full.params[k]) for k in full.params)

    def test_saved_candidates_that_do_not_fit_are_refused(self):
        """A saved candidate with other shapes or out of range is refused with CheckpointInvalid naming it from 1."""
        model, data = iris_model()
        kw = dict(seed=5, n_starts=2, n_candidates=4, candidate_iter=2)
        rec = MemoryCheckpointer()
        fit_em(model, data, checkpoint=rec, **kw)
        state = next(s for s in rec.states if len(s["candidates"]) == 2)
        bad = {**state, "candidates": {**state["candidates"], "9": state["candidates"]["0"]}}
        with pytest.raises(CheckpointInvalid, match=r"candidate 10 is out of range \(candidates 1 to 4\)"):
            fit_em(model, data, checkpoint=MemoryCheckpointer(bad), **kw)
        c0 = dict(state["candidates"]["0"])
        c0["params"] = {**c0["params"], "mean": np.zeros((3, 2))}
        bad = {**state, "candidates": {**state["candidates"], "0": c0}}
        with pytest.raises(CheckpointInvalid, match=r"candidate 1 params"):
            fit_em(model, data, checkpoint=MemoryCheckpointer(bad), **kw)
        with pytest.raises(CheckpointInvalid, match="other EM options"):
            fit_em(model, data, checkpoint=MemoryCheckpointer(state), **{**kw, "candidate_iter": 3})

    def test_ranked_candidates_keep_only_their_rank(self):
        """Once ranked, candidates not promoted are saved as their rank only; a saved state that slims a promoted one is refused."""
        model, data = iris_model()
        kw = dict(seed=5, n_starts=2, n_candidates=6, candidate_iter=3)
        rec = MemoryCheckpointer()
        res = fit_em(model, data, checkpoint=rec, **kw)
        last = rec.states[-1]["candidates"]
        assert {int(k) for k, v in last.items() if not v.get("slim")} == set(res.start_ids)
        state = next(s for s in rec.states if s["current"] is not None)
        promoted = str(res.start_ids[0])
        rank_only = {"start": int(promoted), "kind": "kmeans++", "n_eval": 3, "slim": True,
                     "best_ll": state["candidates"][promoted]["best_ll"]}
        slimmed = {**state["candidates"], promoted: rank_only}
        with pytest.raises(CheckpointInvalid, match=f"candidate {int(promoted) + 1} has fields"):
            fit_em(model, data, checkpoint=MemoryCheckpointer({**state, "candidates": slimmed}), **kw)

    def test_one_and_two_workers_give_the_same_fit(self):
        """Candidates and final starts on 2 worker processes give the in-process result bit for bit."""
        from src.parallel.executors import ProcessExecutor

        model, data = iris_model()
        kw = dict(seed=6, n_starts=4, n_candidates=16, candidate_iter=5, accelerate="squarem")
        a = fit_em(model, data, **kw)
        with ProcessExecutor(2) as ex:
            b = fit_em(model, data, executor=ex, **kw)
        assert a.loglik == b.loglik and a.start_logliks == b.start_logliks
        assert a.start_ids == b.start_ids and a.replication == b.replication
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def lca_case(n=2000, K=3):
    """3-class answers to 6 binary items (the driver compresses them: lockstep path)."""
    rng = stream(8, "test-data", 0)
    probs = np.array([np.linspace(0.85, 0.6, 6), np.linspace(0.2, 0.8, 6), np.linspace(0.15, 0.3, 6)])
    z = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    Y = (rng.random((n, 6)) < probs[z]).astype(np.int64)
    model = LatentClassModel(K)
    model.setup(LatentClassModel.meta_from_array(Y))
    return model, {"Y": Y}


class TestLockstep:
    def test_candidates_on_distinct_rows_are_the_row_candidates(self):
        """k-means++ and partition candidates computed on the distinct answer patterns equal those of the rows bit for bit."""
        from tests.test_lca import PlainLCA

        model, data = lca_case()
        plain = PlainLCA(3)
        plain.setup(LatentClassModel.meta_from_array(data["Y"]))
        for i in range(1, 13):
            a, kind_a = starts.candidate_params(model, data, 3, i)
            b, kind_b = starts.candidate_params(plain, data, 3, i)
            assert kind_a == kind_b
            assert all(np.array_equal(a[k], b[k]) for k in a), f"candidate {i + 1} ({kind_a})"

    def test_resume_anywhere_is_bitwise_identical(self):
        """A lockstep fit resumed from any state saved among the candidate groups or the final starts gives the uninterrupted result."""
        model, data = lca_case()
        kw = dict(seed=5, n_starts=4, n_candidates=25, candidate_iter=4, accelerate="squarem")
        rec = MemoryCheckpointer()
        full = fit_em(model, data, checkpoint=rec, **kw)
        assert rec.states[0]["config"]["lockstep"] == 10
        groups = [i for i, s in enumerate(rec.states) if 0 < len(s["candidates"]) < 25]
        assert [len(rec.states[i]["candidates"]) for i in groups] == [10, 20]
        final = [i for i, s in enumerate(rec.states) if s["current"] is not None]
        assert final and all(set(rec.states[i]["current"]) == {"group"} for i in final)
        for i in groups + final[:: max(1, len(final) // 6)]:
            again = fit_em(model, data, checkpoint=MemoryCheckpointer(rec.states[i]), **kw)
            assert again.loglik == full.loglik and again.start_logliks == full.start_logliks
            assert again.start_ids == full.start_ids and again.loglik_trace == full.loglik_trace
            assert again.start_n_iter == full.start_n_iter
            assert all(np.array_equal(again.params[k], full.params[k]) for k in full.params)
        broken = dict(rec.states[final[0]])
        broken["current"] = {"group": {"99": next(iter(broken["current"]["group"].values()))}}
        with pytest.raises(CheckpointInvalid, match="current start 100"):
            fit_em(model, data, checkpoint=MemoryCheckpointer(broken), **kw)

    def test_workers_do_not_change_a_lockstep_fit(self):
        """Given 2 worker processes, a lockstep fit gives the in-process result bit for bit."""
        from src.parallel.executors import ProcessExecutor

        model, data = lca_case(K=2)
        kw = dict(seed=6, n_starts=3, n_candidates=12, candidate_iter=5, accelerate="squarem")
        a = fit_em(model, data, **kw)
        with ProcessExecutor(2) as ex:
            b = fit_em(model, data, executor=ex, **kw)
        assert a.loglik == b.loglik and a.start_logliks == b.start_logliks
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)

    def test_lockstep_only_for_few_distinct_rows(self):
        """Lockstep is for compressible answers of few distinct patterns; more patterns, rows that do not compress, or a user subclass go start by start."""
        from src.estimation.em import LOCKSTEP_MAX_ROWS, lockstep
        from tests.test_lca import PlainLCA

        model, data = lca_case()
        assert lockstep(model, data)
        plain = PlainLCA(3)
        plain.setup(LatentClassModel.meta_from_array(data["Y"]))
        assert not lockstep(plain, data)
        rng = stream(9, "test-data", 1)
        many = {"Y": rng.integers(0, 2, size=(4 * LOCKSTEP_MAX_ROWS, 15))}   # ~28,000 patterns
        big = LatentClassModel(2)
        big.setup(LatentClassModel.meta_from_array(many["Y"]))
        patterns, counts = big.compressed_rows(many)
        assert LOCKSTEP_MAX_ROWS < len(counts) <= 2 * LOCKSTEP_MAX_ROWS
        assert not lockstep(big, many)
        assert not lockstep(GaussianMixtureModel(2), {"X": rng.normal(size=(50, 2))})


def test_partition_starts_never_make_a_row_impossible():
    """Starting values from a partition keep every category's probability above 0, so 3-category answers unseen by a cluster do not end the fit (the fit once stopped with NaN statistics)."""
    from src.estimation.em import fit_em
    from src.estimation.starts import PROBABILITY_FLOOR_SHARE, params_from_labels
    from src.models.lca import LatentClassModel

    rng = stream(4, "test-impossible")
    Y = rng.integers(0, 3, size=(600, 6))
    Y[:300, 0] = 0                     # the first half never answers 1 or 2 on item 1
    model = LatentClassModel(2)
    model.setup(LatentClassModel.meta_from_array(Y))
    labels = (np.arange(600) >= 300).astype(int)
    p = params_from_labels(model, {"Y": Y}, labels)
    assert p["prob"][0, 0, 1] == pytest.approx(PROBABILITY_FLOOR_SHARE / 3)
    assert np.all(p["prob"] > 0)
    np.testing.assert_allclose(p["prob"].sum(axis=2), 1.0)
    assert np.isfinite(fit_em(model, {"Y": Y}, n_starts=2, seed=2).loglik)
