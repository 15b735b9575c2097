"""Bootstrap standard errors: agreement with Louis, failures, alignment, bitwise resume, warm and cold starts."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.inference.align import align_by_posteriors, align_params, align_to
from src.inference.bootstrap import bootstrap_se, message_kind
from src.inference.louis import louis_se
from src.models.gmm import GaussianMixtureModel
from src.utils.checkpointing import CheckpointInvalid
from src.utils.messages import set_language, t
from src.utils.rng import stream
from tests.test_louis import Gauss1D, simple_em


class MemoryCheckpointer:
    """A real Checkpointer that keeps every state in memory (what the tracker would write)."""

    def __init__(self, resume=None):
        self._resume = resume
        self.states = []

    def resume_state(self):
        return self._resume

    def checkpoint(self, state, *, force=False):
        self.states.append(state)
        return True


class ReversedExecutor:
    """Runs tasks in process, last first (shows results do not depend on completion order)."""

    def map_unordered(self, fn, args_list):
        for i in reversed(range(len(args_list))):
            yield i, fn(*args_list[i])


class FlakySample(Gauss1D):
    """Parametric simulation that fails when the replicate's first uniform draw is < 0.3."""

    def sample(self, params, data, rng):
        if rng.random() < 0.3:
            raise RuntimeError("simulated failure")
        return super().sample(params, data, rng)


def separated(n=1500, seed=11):
    rng = stream(seed, "test-data")
    z = rng.random(n) < 0.4
    x = np.where(z, rng.normal(-2.0, 1.0, n), rng.normal(2.0, 0.8, n))
    model = Gauss1D(2)
    init = {"weight": np.array([0.5, 0.5]), "mean": np.array([-1.0, 1.0]),
            "var": np.array([1.0, 1.0])}
    return model, {"x": x}, simple_em(model, {"x": x}, init)


def small(n=300, seed=12):
    return separated(n, seed)


N_MAIN, FAR = 120, np.array([[10.0, 10.0], [10.6, 10.1], [10.2, 10.7]])


def collapsing():
    """120 rows around 0 and a second component on 3 far points: a resample that draws only
    1 or 2 of them makes that component singular, one that draws none leaves it empty."""
    X = np.vstack([stream(31, "test-data").normal(size=(N_MAIN, 2)), FAR])
    model = GaussianMixtureModel(2)
    model.setup(model.meta_for_array(X))
    fit = fit_em(model, {"X": X}, n_starts=3, seed=1, tol=1e-10)
    assert not fit.warnings and fit.params["weight"][1] == pytest.approx(3 / 123)
    return model, {"X": X}, fit.params


def far_points_drawn(seed, B):
    """How many distinct far points each nonparametric replicate draws (its own stream)."""
    n = N_MAIN + len(FAR)
    out = []
    for r in range(B):
        idx = stream(seed, "bootstrap", r).integers(0, n, size=n)
        out.append(len(set(idx[idx >= N_MAIN].tolist())))
    return np.array(out)


def same(a, b):
    for key in ("se", "ci_lower", "ci_upper", "cov_free", "estimates"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.notes == b.notes and a.extra == b.extra


class TestAgainstLouis:
    @pytest.mark.parametrize("kind", ["nonparametric", "parametric"])
    def test_within_monte_carlo_error(self, kind):
        """B=200 bootstrap SEs are within 3 Monte-Carlo SDs (SE/sqrt(2B)) plus 10% of Louis'."""
        model, data, params = separated()
        B = 200
        boot = bootstrap_se(model, data, params, n_bootstrap=B, kind=kind, seed=5)
        ref = louis_se(model, data, params).se
        free = ref > 0  # weight[1] and weight[2] share one free parameter; all SEs positive here
        allowance = 3 * ref / np.sqrt(2 * B) + 0.10 * ref  # 10%: finite-sample difference (n=1500)
        assert np.all(np.abs(boot.se - ref)[free] <= allowance[free])
        assert boot.extra["n_ok"] == B and not boot.notes
        assert np.all(boot.ci_lower < boot.estimates) and np.all(boot.estimates < boot.ci_upper)


class TestFailures:
    def test_failed_replicates_counted_and_warned(self):
        """Failing replicates are left out, counted exactly, and a >5% share is a warning."""
        model, data, params = small()
        model = FlakySample(2)
        B, seed = 40, 3
        expect = sum(stream(seed, "bootstrap", r).random() < 0.3 for r in range(B))
        res = bootstrap_se(model, data, params, n_bootstrap=B, kind="parametric", seed=seed)
        assert res.extra["n_failed"] == res.extra["n_errors"] == expect > 0
        assert res.extra["n_ok"] == B - expect
        assert any(f"{expect} of {B} bootstrap replicates were left out" in n for n in res.notes)
        assert any(n.startswith("Warning:") for n in res.notes)
        assert np.all(np.isfinite(res.se))

    def test_no_convergence_gives_nan_and_note(self):
        """max_iter=1 with tol=0: no replicate converges; NaN SEs and notes, no crash."""
        model, data, params = small()
        res = bootstrap_se(model, data, params, n_bootstrap=5, tol=0.0, max_iter=1)
        assert np.all(np.isnan(res.se)) and res.extra["n_not_converged"] == 5
        assert any("did not converge" in n for n in res.notes)
        assert res.extra["n_warned"] == 5
        assert res.extra["n_warned_by_kind"] == {"em.not_converged": 5}


class TestWarnedReplicates:
    def test_collapsing_replicates_are_counted_by_kind(self):
        """Replicates whose refit collapses or empties a component are counted by kind, exactly as their resamples predict."""
        set_language("en")
        try:
            model, data, params = collapsing()
            B, seed = 40, 3
            drawn = far_points_drawn(seed, B)
            res = bootstrap_se(model, data, params, n_bootstrap=B, seed=seed)
        finally:
            set_language(None)
        singular, empty = int(np.sum((drawn == 1) | (drawn == 2))), int(np.sum(drawn == 0))
        assert singular > 0 and empty > 0 and singular + empty < B  # some, not all, warn
        assert res.extra["n_warned"] == singular + empty
        assert res.extra["n_warned_by_kind"] == {"gmm.singular": singular,
                                                 "gmm.empty_component": empty}
        assert res.extra["n_ok"] == B  # warned replicates converged: they are kept
        note = [n for n in res.notes if "warned" in n]
        assert len(note) == 1 and note[0].startswith(f"{singular + empty} of {B} bootstrap replicates")
        assert f"{singular} × “Gaussian component 2 has collapsed" in note[0]

    def test_counts_survive_an_interruption(self):
        """Stopped after 15 replicates and resumed, the warning counts and notes equal the uninterrupted run's."""
        model, data, params = collapsing()
        kw = dict(n_bootstrap=30, seed=3)
        full = bootstrap_se(model, data, params, **kw)
        ck = MemoryCheckpointer()

        def stop(r, status, n_done, n_total):
            if n_done == 15:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            bootstrap_se(model, data, params, checkpoint=ck, on_replicate=stop, **kw)
        saved = ck.states[-1]["replicates"]
        assert any(rec["warnings"] for rec in saved.values())  # in the checkpointed state
        resumed = bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]),
                               **kw)
        assert full.extra["n_warned"] > 0
        same(resumed, full)

    def test_kinds_do_not_depend_on_the_language(self):
        """Replicates warned in English and resumed in Chinese give the same counts and a Chinese note."""
        model, data, params = collapsing()
        kw = dict(n_bootstrap=20, seed=3)
        ck = MemoryCheckpointer()

        def stop(r, status, n_done, n_total):
            if n_done == 10:
                raise KeyboardInterrupt

        try:
            set_language("en")
            english = bootstrap_se(model, data, params, **kw)
            with pytest.raises(KeyboardInterrupt):
                bootstrap_se(model, data, params, checkpoint=ck, on_replicate=stop, **kw)
            set_language("zh")
            mixed = bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]),
                                 **kw)
            zh_text = t("gmm.singular", k=2, reg=1e-6)
            set_language("en")
            en_text = t("gmm.singular", k=2, reg=1e-6)
        finally:
            set_language(None)
        assert mixed.extra == english.extra and english.extra["n_warned"] > 0
        note = [n for n in mixed.notes if "自助法" in n and "警告" in n]
        assert len(note) == 1 and zh_text.rstrip("。") in note[0]
        assert message_kind(zh_text)[0] == message_kind(en_text)[0] == "gmm.singular"
        assert message_kind("a user model's own sentence") == ("a user model's own sentence",) * 2

    def test_bad_kind_rejected(self):
        """An unknown bootstrap kind is a ValueError naming the option."""
        model, data, params = small()
        with pytest.raises(ValueError, match="bootstrap kind"):
            bootstrap_se(model, data, params, n_bootstrap=5, kind="wild")


class TestAlignment:
    def test_permuted_classes_are_recovered(self):
        """A relabelled, slightly perturbed copy of the estimate is mapped back to its labels."""
        model = Gauss1D(3)
        ref = {"weight": np.array([0.2, 0.3, 0.5]), "mean": np.array([-5.0, 0.0, 400.0]),
               "var": np.array([1.0, 2.0, 900.0])}
        perm = np.array([2, 0, 1])
        rep = model.permute(ref, perm)
        rep["mean"] = rep["mean"] + np.array([3.0, -0.5, 0.4])  # within-class noise
        assert list(align_to(ref, rep)) == [1, 2, 0]
        back = align_params(model, ref, rep)
        np.testing.assert_allclose(back["var"], ref["var"])

    def test_entries_in_tiny_units_still_count(self):
        """Classes told apart only by variances of order 1e-16 (data in tiny units) are still matched."""
        model = Gauss1D(3)
        ref = {"weight": np.full(3, 1 / 3), "mean": np.zeros(3), "var": np.array([1.0, 4.0, 9.0]) * 1e-16}
        rep = model.permute(ref, np.array([2, 0, 1]))
        rep["var"] = rep["var"] * 1.05
        assert list(align_to(ref, rep)) == [1, 2, 0]


    def test_posteriors_match_classes_a_nearly_equal_entry_would_swap(self):
        """Old Faithful's replicate with its waiting-time variances moved apart is matched by the rows its classes hold, where the parameter distance (dominated by the two nearly equal variances) swaps it."""
        import pandas as pd

        frame = pd.read_csv("src/data/builtin/faithful.csv")[["eruptions", "waiting"]]
        data, meta = GaussianMixtureModel.prepare_data(frame, {})
        model = GaussianMixtureModel(2)
        model.setup(meta)
        est = fit_em(model, data, seed=1, n_starts=2)
        ref = est.params
        rep = {k: np.array(v, copy=True) for k, v in ref.items()}
        rep["cov"][0, 1, 1] *= 1.3  # sampling noise in the waiting-time variances ...
        rep["cov"][1, 1, 1] *= 0.75
        swapped = model.permute(rep, np.array([1, 0]))  # ... and the classes listed the other way
        assert list(align_to(ref, swapped)) == [0, 1]  # the parameter distance keeps the swap
        back = align_by_posteriors(model, data, ref, swapped)
        np.testing.assert_array_equal(back["mean"], rep["mean"])

    def test_faithful_bootstrap_agrees_with_louis(self):
        """The pipeline's default bootstrap (50 replicates from the estimate) on Old Faithful gives the means' standard errors within 40% of Louis' and every other within a factor 2 (variances of a non-Gaussian cluster are wider by the bootstrap); matched by parameters, a mean's was 13x."""
        import pandas as pd

        frame = pd.read_csv("src/data/builtin/faithful.csv")[["eruptions", "waiting"]]
        data, meta = GaussianMixtureModel.prepare_data(frame, {})
        model = GaussianMixtureModel(2)
        model.setup(meta)
        est = fit_em(model, data, seed=1, n_starts=2)
        boot = bootstrap_se(model, data, est.params, n_bootstrap=50, seed=20241101,
                            accelerate="squarem")
        louis = louis_se(model, data, est.params)
        ratio = boot.se / louis.se
        shown = dict(zip(boot.names, np.round(ratio, 2)))
        means = np.array([n.startswith("mean") for n in boot.names])
        assert np.all((ratio[means] > 0.7) & (ratio[means] < 1.4)), shown
        assert np.all((ratio > 0.5) & (ratio < 2.0)), shown


class TestResume:
    def test_resume_from_every_state_is_identical(self):
        """Resuming from any checkpointed state computes only missing replicates, same output."""
        model, data, params = small()
        kw = dict(n_bootstrap=12, seed=9)
        full_ck = MemoryCheckpointer()
        full = bootstrap_se(model, data, params, checkpoint=full_ck, **kw)
        assert len(full_ck.states) == 13  # one per replicate plus the final forced one
        for cut in (0, 4, 11):
            state = full_ck.states[cut]
            calls = []
            res = bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(state),
                               on_replicate=lambda r, *a: calls.append(r), **kw)
            same(res, full)
            assert sorted(calls) == [r for r in range(12) if str(r) not in state["replicates"]]

    def test_interrupted_run_resumes_identically(self):
        """A run stopped by an exception after 5 replicates resumes to the same result."""
        model, data, params = small()
        kw = dict(n_bootstrap=10, seed=4)
        full = bootstrap_se(model, data, params, **kw)
        ck = MemoryCheckpointer()

        def stop(r, status, n_done, n_total):
            if n_done == 5:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            bootstrap_se(model, data, params, checkpoint=ck, on_replicate=stop, **kw)
        resumed = bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]),
                               **kw)
        same(resumed, full)

    def test_order_does_not_matter(self):
        """Completing replicates in reverse order gives bitwise the same result."""
        model, data, params = small()
        a = bootstrap_se(model, data, params, n_bootstrap=8, seed=2)
        b = bootstrap_se(model, data, params, n_bootstrap=8, seed=2, executor=ReversedExecutor())
        same(a, b)

    def test_other_options_refuse_to_resume(self):
        """A state saved with another seed is refused with a sentence, not silently reused."""
        model, data, params = small()
        ck = MemoryCheckpointer()
        bootstrap_se(model, data, params, n_bootstrap=3, seed=1, checkpoint=ck)
        with pytest.raises(ValueError, match="other options"):
            bootstrap_se(model, data, params, n_bootstrap=3, seed=2,
                         checkpoint=MemoryCheckpointer(ck.states[-1]))


class TestRandomStart:
    def test_cold_agrees_with_warm_within_monte_carlo_error(self):
        """Replicates refitted from random starts give SEs within Monte-Carlo error of those refitted from the estimate."""
        model, data, params = separated(600)
        B = 20
        warm_ck, cold_ck = MemoryCheckpointer(), MemoryCheckpointer()
        warm = bootstrap_se(model, data, params, n_bootstrap=B, seed=5, checkpoint=warm_ck)
        cold = bootstrap_se(model, data, params, n_bootstrap=B, seed=5, start="random",
                            n_starts=2, checkpoint=cold_ck)
        assert cold.extra["n_ok"] == B and not cold.notes
        assert np.all(np.abs(cold.se - warm.se) <= 3 * warm.se / np.sqrt(2 * B))
        assert (cold.extra["bootstrap_start"], cold.extra["bootstrap_n_starts"]) == ("random", 2)
        assert warm.extra["bootstrap_start"] == "estimate" and "bootstrap_n_starts" not in warm.extra
        iters = [np.mean([rec["n_iter"] for rec in ck.states[-1]["replicates"].values()])
                 for ck in (warm_ck, cold_ck)]
        assert iters[1] > 2 * iters[0]  # cold replicates climb from afar: they did the work

    def test_cold_replicates_depend_on_their_index_only(self):
        """Random-start replicates completed in reverse order give bitwise the same result."""
        model, data, params = small()
        kw = dict(n_bootstrap=6, seed=2, start="random", n_starts=2)
        same(bootstrap_se(model, data, params, **kw),
             bootstrap_se(model, data, params, executor=ReversedExecutor(), **kw))

    def test_start_survives_resume(self):
        """An interrupted random-start run resumes to the uninterrupted result; a state of the other start or another start search (n_starts, n_candidates, candidate_iter) is refused."""
        model, data, params = small()
        kw = dict(n_bootstrap=6, seed=4, start="random", n_starts=2)
        full = bootstrap_se(model, data, params, **kw)
        ck = MemoryCheckpointer()

        def stop(r, status, n_done, n_total):
            if n_done == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            bootstrap_se(model, data, params, checkpoint=ck, on_replicate=stop, **kw)
        assert ck.states[-1]["config"]["start"] == "random"
        same(bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]), **kw),
             full)
        for other in (dict(kw, start="estimate"), dict(kw, n_starts=3), dict(kw, n_candidates=7),
                      dict(kw, candidate_iter=3)):
            with pytest.raises(ValueError, match="other options"):
                bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]),
                             **other)

    def test_warm_start_ignores_n_starts(self):
        """A from-the-estimate state resumes whatever n_starts is, since its replicates do not use it."""
        model, data, params = small()
        ck = MemoryCheckpointer()
        first = bootstrap_se(model, data, params, n_bootstrap=3, seed=1, n_starts=2, checkpoint=ck)
        calls = []
        again = bootstrap_se(model, data, params, n_bootstrap=3, seed=1, n_starts=7,
                             checkpoint=MemoryCheckpointer(ck.states[-1]),
                             on_replicate=lambda *a: calls.append(a))
        same(again, first)
        assert calls == []

    def test_bad_start_rejected(self):
        """An unknown start policy is a ValueError naming the option."""
        model, data, params = small()
        with pytest.raises(ValueError, match="bootstrap start"):
            bootstrap_se(model, data, params, n_bootstrap=3, start="cold")


class TestCountingAndSavedState:
    def test_error_note_counts_replicates_from_one(self):
        """The note on failed replicates names the first failure as users count it, from 1."""
        set_language("en")
        try:
            model, data, params = small()
            B, seed = 40, 3
            first = next(r for r in range(B) if stream(seed, "bootstrap", r).random() < 0.3)
            res = bootstrap_se(FlakySample(2), data, params, n_bootstrap=B, kind="parametric",
                               seed=seed)
        finally:
            set_language(None)
        assert any(f"(first, replicate {first + 1}: RuntimeError" in n for n in res.notes)

    @pytest.mark.parametrize("bad", ["a single string", [1, 2], None])
    def test_saved_warnings_must_be_sentences(self, bad):
        """A saved replicate whose warnings are not a list of strings is refused, naming it from 1."""
        model, data, params = small()
        ck = MemoryCheckpointer()
        bootstrap_se(model, data, params, n_bootstrap=3, seed=1, checkpoint=ck)
        state = ck.states[-1]
        state["replicates"]["0"]["warnings"] = bad
        with pytest.raises(CheckpointInvalid, match="replicate 1's warnings"):
            bootstrap_se(model, data, params, n_bootstrap=3, seed=1,
                         checkpoint=MemoryCheckpointer(state))

    def test_saved_state_without_warnings_resumes(self):
        """A replicate saved without the optional warnings field is still accepted."""
        model, data, params = small()
        ck = MemoryCheckpointer()
        first = bootstrap_se(model, data, params, n_bootstrap=3, seed=1, checkpoint=ck)
        state = ck.states[-1]
        for rec in state["replicates"].values():
            del rec["warnings"]
        same(bootstrap_se(model, data, params, n_bootstrap=3, seed=1,
                          checkpoint=MemoryCheckpointer(state)), first)
