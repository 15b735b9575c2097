"""Phase ``structural_estimation``: three-step estimation after the standard errors.

With ``--structural covariates|distal`` the measurement model of ``model_estimation`` (with
several K: the selected K's) is held fixed; step 2 assigns the rows and computes the
classification-error matrix D, step 3 estimates the structural model with ``--correction``
(:mod:`src.structural`).  Its standard errors (``--structural-se``):

* ``corrected`` (default): Bakk, Oberski & Vermunt (2014), step 3's sandwich plus step 1's
  covariance (the primary method of ``standard_error_computation``) carried through D;
  without measurement standard errors (``--se-method none``) the step-3 sandwich, with a note;
* ``bootstrap``: all three steps on ``--n-bootstrap`` resampled data sets, replicates on the
  run's executor and checkpointed one by one in this phase (a killed run resumes);
* ``step3``: the sandwich of step 3 alone (treats step 1 as known).

The result (stored by the tracker) holds D, the estimates, their standard errors and
covariance, Wald tests and the notes; ``result_output`` writes them (:mod:`src.output.structural`).
Partitioned input is refused in one sentence (step 3 needs the rows in memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import RunOptions
from ..structural import RESAMPLED
from ..utils.errors import DataError, ModelError
from ..utils.messages import register, t
from .phases import Prepared

__all__ = ["estimate_structural", "needs_workers", "wald_tests", "check_structural_options"]

register({
    "structural.partitioned": {
        "en": "--structural needs the rows in memory, so it is not available with partitioned input (a folder or glob of Parquet files, or --stream); give a single file.",
        "zh": "--structural 需要全部数据在内存中，因此不能用于分区输入（Parquet 文件夹或通配符，或 --stream）；请提供单个文件。"},
    "structural.no_measurement_se": {
        "en": "The measurement model has no standard errors (--se-method none), so the structural standard errors are step 3's sandwich alone (they treat step 1 as known); give --se-method or --structural-se bootstrap for ones that account for it.",
        "zh": "测量模型没有标准误（--se-method none），因此结构模型标准误仅为第 3 步的三明治标准误（视第 1 步为已知）；如需计入第 1 步的不确定性，请给出 --se-method 或使用 --structural-se bootstrap。"},
    "structural.boot_left_out": {
        "en": "{n} of {B} three-step bootstrap replicates were left out{first}.",
        "zh": "{B} 次三步法自助重复中有 {n} 次被排除{first}。"},
    "structural.singular_D": {
        "en": "The classification-error matrix D is singular (the assignments cannot tell the classes apart), so the BCH correction cannot be computed; use --correction ml or fewer classes.",
        "zh": "分类误差矩阵 D 奇异（归类无法区分各类别），无法计算 BCH 校正；请使用 --correction ml 或减少类别数。"},
})


def check_structural_options(options: RunOptions) -> None:
    """Before any work: ``--structural``'s columns given and not model, id or weight columns
    (UsageError), and the rows in memory (ModelError for partitioned input)."""
    from ..structural.data import check_structural_columns

    check_structural_columns(options, None, str(options.data))
    if options.structural == "covariates":   # step 3's reference: a class of every K
        from ..data.covariates import check_reference_class
        check_reference_class(options.reference_class, min(options.k_list()))
    if options.partitioned:
        raise ModelError(t("structural.partitioned"))


def needs_workers(options: RunOptions, done: bool) -> bool:
    """Whether the phase has replicates for worker processes."""
    return (getattr(options, "structural", None) is not None and not done
            and options.structural_se == RESAMPLED)


def wald_tests(result: dict[str, Any], cov_rep: np.ndarray) -> list[dict[str, Any]]:
    """Wald tests of step 3 (chi-square): covariates, each covariate's coefficients all 0;
    distal outcomes, equal means (Gaussian) or equal probabilities (categorical) in every
    class.  ``cov_rep``: the covariance of the reported estimates."""
    from scipy import stats

    names, est = list(result["names"]), np.asarray(result["estimates"], dtype=float)
    K = int(np.asarray(result["D"]).shape[0])
    out: list[dict[str, Any]] = []

    def test(label: str, rows: np.ndarray) -> None:
        """H0: rows @ est = 0."""
        b = rows @ est
        V = rows @ cov_rep @ rows.T
        try:
            stat = float(b @ np.linalg.solve(V, b))
        except np.linalg.LinAlgError:
            stat = float("nan")
        df = int(np.linalg.matrix_rank(V)) if np.all(np.isfinite(V)) else rows.shape[0]
        p = float(stats.chi2.sf(stat, df)) if np.isfinite(stat) and df > 0 else float("nan")
        out.append({"hypothesis": label, "chi2": stat, "df": df, "p_value": p})

    index = {n: i for i, n in enumerate(names)}
    if result["kind"] == "covariates":
        labels = []
        for n in names:
            lab = n[n.index(",") + 1:-1]
            if lab not in labels:
                labels.append(lab)
        for lab in labels[1:]:   # not the intercept
            which = [i for i, n in enumerate(names) if n.endswith(f",{lab}]")]
            rows = np.eye(len(names))[which]
            test(f"beta[*,{lab}] = 0", rows)
        return out
    for col in result["columns"]:
        if result["distal_type"] == "gaussian":
            which = [index[f"distal.mean[{k + 1},{col}]"] for k in range(K)]
            label = f"mean[1,{col}] = ... = mean[{K},{col}]"
        else:
            codes = [n.rsplit(",", 1)[1][:-1] for n in names
                     if n.startswith(f"distal.prob[1,{col},")]
            which = [[index[f"distal.prob[{k + 1},{col},{c}]"] for c in codes[:-1]]
                     for k in range(K)]
            label = f"prob[1,{col},.] = ... = prob[{K},{col},.]"
        rows = []
        for k in range(1, K):
            for a, b in zip(np.atleast_1d(which[0]), np.atleast_1d(which[k])):
                r = np.zeros(len(names))
                r[b], r[a] = 1.0, -1.0
                rows.append(r)
        test(label, np.array(rows))
    return out


def estimate_structural(prepared: Prepared, fit: dict[str, Any],
                        selection: dict[str, Any] | None, se: dict[str, Any],
                        options: RunOptions, checkpoint: Any = None, reporter: Any = None,
                        executor: Any = None) -> dict[str, Any]:
    """Phase ``structural_estimation`` (module docstring): a dict the tracker stores."""
    from ..output.estimates import primary_method
    from ..structural.bootstrap import structural_bootstrap
    from ..structural.corrected import corrected_covariance
    from ..structural.data import StructuralData
    from ..structural.run import three_step

    if prepared.partitioned:
        raise ModelError(t("structural.partitioned"))
    if selection is not None:
        from .enumeration import prepared_for
        k = int(selection["selected"])
        prepared = prepared_for(prepared, options, k)
        fit, se = fit["fits"][str(k)], se["by_k"].get(str(k), {})
    model, data = prepared.model, prepared.data
    params = {key: np.asarray(v) for key, v in fit["params"].items()}
    source = str(prepared.record.get("source") or "the data")
    sdata = StructuralData.from_frame(prepared.structural, options.structural,
                                      options.distal_type, source=source,
                                      positions=prepared.row_positions)
    K = int(model.n_components)
    if options.structural == "covariates":   # --reference-class (the one-step model's option)
        from ..data.covariates import check_reference_class
        check_reference_class(options.reference_class, K)
        sdata.reference = int(options.reference_class) - 1
    sdata.check(K, options.correction)
    notes = sdata.notes(prepared.row_positions)
    if reporter is not None:
        for note in notes:
            reporter.message(note)
    try:
        result = three_step(model, data, params, sdata, correction=options.correction,
                            assignment=options.assignment, weight_type=options.weight_type,
                            chunk_size=options.chunk_size)
    except ValueError as exc:
        if "singular" in str(exc):
            raise ModelError(t("structural.singular_D")) from None
        raise DataError(str(exc)) from None
    sm = sdata.model(K, options.correction)
    J = sm.jacobian()
    method = options.structural_se
    measurement = primary_method(se, options) if se else None
    replicates = None
    extra: dict[str, Any] = {}
    if method == "corrected" and measurement is None:
        notes.append(t("structural.no_measurement_se"))
        method = "step3"
    if method == "step3":
        cov = J @ result["cov_free"] @ J.T
    elif method == "corrected":
        cov_free, more = corrected_covariance(
            model, data, params, sdata, sm, result["theta"], result["cov_free"],
            np.asarray(se[measurement]["cov_free"], dtype=float),
            correction=options.correction, assignment=options.assignment,
            chunk_size=options.chunk_size)
        notes += more
        cov = J @ cov_free @ J.T
        extra["measurement_se_method"] = measurement
    else:
        def progress(index: int, status: str, done: int, total: int) -> None:
            if reporter is not None:
                reporter.unit("structural", done, total, kind="replicate")

        boot = structural_bootstrap(
            model, data, params, sdata, n_bootstrap=options.n_bootstrap, seed=options.seed,
            correction=options.correction, assignment=options.assignment,
            n_reported=len(result["names"]), weight_type=options.weight_type, tol=options.tol,
            max_iter=options.max_iter, accelerate=options.accelerate,
            chunk_size=options.chunk_size, checkpoint=checkpoint, executor=executor,
            on_replicate=progress)
        replicates = boot["replicates"]
        method = RESAMPLED
        cov = (np.cov(replicates, rowvar=False, ddof=1).reshape(len(result["names"]), -1)
               if replicates.shape[0] >= 2 else np.full((len(result["names"]),) * 2, np.nan))
        if boot["n_failed"]:
            first = f" ({boot['first_error']})" if boot["first_error"] else ""
            notes.append(t("structural.boot_left_out", n=boot["n_failed"], B=boot["n_bootstrap"],
                           first=first))
        extra.update(n_bootstrap=boot["n_bootstrap"], n_ok=boot["n_ok"],
                     n_failed=boot["n_failed"])
    cov = 0.5 * (cov + cov.T)
    se_rep = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    se_rep[~np.isfinite(np.diag(cov))] = np.nan
    result.update(se_method=method, se=se_rep, cov=cov, replicates=replicates,
                  notes=[*result["notes"], *notes], k=K, extra=extra)
    result["tests"] = wald_tests(result, cov)
    if reporter is not None:
        for w in result["warnings"]:
            reporter.message(w)
    return result
