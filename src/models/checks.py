"""Checks of what a model's methods return, so a broken user model fails at once and clearly.

The EM driver calls these on the first evaluation of every start (and on the starting values),
where a wrong shape, a NaN or an exception would otherwise turn into thousands of NumPy
warnings and a vague error much later.  Each failure is a :class:`ModelError` (exit 2) whose
one sentence names the class, the method and what was wrong ("first at row 17, class 2").

* ``log_joint``: a numeric array of shape (n, K); NaN and +inf are errors; -inf is allowed
  (a class that cannot produce a row) as long as every row has a finite value somewhere.
* ``init_params`` / ``m_step``: a dict with every declared parameter, of shape
  ``(K,) + spec.shape``, finite (user models: also inside the declared constraints).
* ``e_step_stats`` / ``suff_stats``: a (statistics, log-likelihood) pair; statistics finite
  and of the same shapes for every chunk of rows (so they add up).

* the names a family declares (``summaries``, ``figures``): checked when its class is defined
  (:func:`check_declarations`, called by ``MixtureModel.__init_subclass__``), so a misspelt
  name fails when the model is loaded, not when the results are written.

Exceptions raised inside a *user* model's method become a ModelError naming the method
(the innermost frame of the model); built-in models keep their own errors and tracebacks.
The checks cost the built-in models only a few comparisons on values already computed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from src.utils.errors import ModelError, PipelineError
from src.utils.messages import register, t

if TYPE_CHECKING:
    from .base import MixtureModel

__all__ = ["is_builtin", "guarded", "check_log_joint", "check_params", "check_e_step_stats",
           "diagnose_loglik", "check_declarations"]

register({
    "model.raised": {
        "en": "{model}.{method} raised {error}; fix the model class (rerun with --debug to see "
              "the traceback).",
        "zh": "{model}.{method} 抛出异常 {error}；请修正该模型类（使用 --debug 重新运行可查看调用栈）。"},
    "model.got_array": {"en": "an array of dtype {dtype}", "zh": "dtype 为 {dtype} 的数组"},
    "model.got_object": {"en": "a {type}", "zh": "{type} 类型的对象"},
    "model.log_joint_type": {
        "en": "{model}.{method} returned {got}, expected a float array of shape {expected}; fix "
              "the model class.",
        "zh": "{model}.{method} 返回了 {got}，应为形状 {expected} 的浮点数组；请修正该模型类。"},
    "model.params_type": {
        "en": "{model}.{method} returned {got}, expected a dict of arrays named {names}; fix the "
              "model class.",
        "zh": "{model}.{method} 返回了 {got}，应为以 {names} 为键的数组字典；请修正该模型类。"},
    "model.param_type": {
        "en": "{model}.{method} returned {got} for {name!r}, expected an array of numbers; fix "
              "the model class.",
        "zh": "{model}.{method} 为 {name!r} 返回了 {got}，应为数值数组；请修正该模型类。"},
    "model.stats_type": {
        "en": "{model}.{method} returned {got}, expected a pair (dict of statistics, "
              "log-likelihood); fix the model class.",
        "zh": "{model}.{method} 返回了 {got}，应为二元组（统计量字典，对数似然）；请修正该模型类。"},
    "model.stat_type": {
        "en": "{model}.{method} returned {got} for the statistic {name!r}, expected an array of "
              "numbers; fix the model class.",
        "zh": "{model}.{method} 为统计量 {name!r} 返回了 {got}，应为数值数组；请修正该模型类。"},
    "model.loglik_type": {
        "en": "{model}.{method} returned {got} as the log-likelihood, expected a number; fix the "
              "model class.",
        "zh": "{model}.{method} 返回的对数似然是 {got}，应为一个数；请修正该模型类。"},
    "model.bad_shape": {
        "en": "{model}.{method} returned shape {got}, expected {expected}; fix the model class.",
        "zh": "{model}.{method} 返回的形状为 {got}，应为 {expected}；请修正该模型类。"},
    "model.log_joint_not_finite": {
        "en": "{model}.{method} returned {value} where finite values are needed (first at row "
              "{row} (0-based), class {k}; {count} in all; -inf is allowed but NaN and +inf are not); fix "
              "the model class or its starting values.",
        "zh": "{model}.{method} 在需要有限值的位置返回了 {value}（首次出现在第 {row} 行（从 0 开始计）、第 {k} 类；"
              "共 {count} 处；允许 -inf，但不允许 NaN 和 +inf）；请修正该模型类或其初始值。"},
    "model.row_impossible": {
        "en": "{model}.{method} returned -inf for every class at row {row} (0-based; {count} rows in all), "
              "so that row has probability zero at the starting values; fix the model class or "
              "its starting values.",
        "zh": "{model}.{method} 在第 {row} 行（从 0 开始计）对所有类别都返回 -inf（共 {count} 行），即该行在初始值下"
              "概率为零；请修正该模型类或其初始值。"},
    "model.missing_param": {
        "en": "{model}.{method} returned no parameter {name!r} (declared by param_specs: "
              "{names}); fix the model class.",
        "zh": "{model}.{method} 没有返回参数 {name!r}（param_specs 声明的参数为：{names}）；请修正该模型类。"},
    "model.param_shape": {
        "en": "{model}.{method} returned {name!r} of shape {got}, expected {expected}; fix the "
              "model class.",
        "zh": "{model}.{method} 返回的 {name!r} 形状为 {got}，应为 {expected}；请修正该模型类。"},
    "model.param_not_finite": {
        "en": "{model}.{method} returned {value} in {entry} ({count} in all); fix the model "
              "class.",
        "zh": "{model}.{method} 在 {entry} 中返回了 {value}（共 {count} 处）；请修正该模型类。"},
    "model.param_outside": {
        "en": "{model}.{method} returned parameters outside their declared constraints ({detail}); "
              "fix the model class.",
        "zh": "{model}.{method} 返回的参数不满足所声明的约束（{detail}）；请修正该模型类。"},
    "model.stat_not_finite": {
        "en": "{model}.{method} returned {value} in the statistic {name!r} for rows {first} to "
              "{last}; fix the model class.",
        "zh": "{model}.{method} 在第 {first} 至 {last} 行的统计量 {name!r} 中返回了 {value}；请修正该模型类。"},
    "model.stat_shape": {
        "en": "{model}.{method} returned the statistic {name!r} with shape {got} for rows {first} "
              "to {last} but {expected} for the first rows; statistics must have the same shape "
              "for every chunk of rows so that they add up.",
        "zh": "{model}.{method} 对第 {first} 至 {last} 行返回的统计量 {name!r} 形状为 {got}，而对前面的行"
              "为 {expected}；统计量对每一块数据行必须形状相同，才能相加。"},
    "model.loglik_not_finite": {
        "en": "{model}.{method} returned a log-likelihood of {value} for rows {first} to {last} "
              "although log_joint is finite there; fix the model class.",
        "zh": "{model}.{method} 对第 {first} 至 {last} 行返回的对数似然为 {value}，而 log_joint 在这些行"
              "是有限的；请修正该模型类。"},
    "model.unknown_names": {
        "en": "{model}.{attribute} declares {unknown}, not among the known {attribute} "
              "({known}); fix the model class.",
        "zh": "{model}.{attribute} 声明了 {unknown}，不在已知的 {attribute}（{known}）之中；请修正该模型类。"},
    "model.names_type": {
        "en": "{model}.{attribute} is {got}, expected a tuple of names from {known}; fix the "
              "model class.",
        "zh": "{model}.{attribute} 是 {got}，应为由 {known} 中的名称组成的元组；请修正该模型类。"},
})

_BUILTIN_CLASSES = {"src.models.gmm:GaussianMixtureModel", "src.models.lca:LatentClassModel",
                    "src.models.mixreg:MixtureRegressionModel"}


_COVARIATE_CLASSES = {"src.models.covariates:CovariateMixture",
                      "src.models.covariates:_FlaggedCovariateMixture"}


def is_builtin(model: "MixtureModel") -> bool:
    """True for the built-in families themselves (not for user subclasses of them), and for
    the covariate model (:mod:`src.models.covariates`) around one of them."""
    cls = type(model)
    if f"{cls.__module__}:{cls.__qualname__}" in _COVARIATE_CLASSES:
        return is_builtin(model.inner)
    return f"{cls.__module__}:{cls.__qualname__}" in _BUILTIN_CLASSES


def _name(model: "MixtureModel") -> str:
    return type(model).__name__


def _failing_method(exc: BaseException, model: "MixtureModel", default: str) -> str:
    """The innermost method of ``model`` on the exception's traceback (else ``default``)."""
    found = default
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self", tb.tb_frame.f_locals.get("cls"))
        if owner is model or owner is type(model):
            found = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return found


@contextmanager
def guarded(model: "MixtureModel", method: str) -> Iterator[None]:
    """Turn an exception raised inside a user model into a ModelError naming the method.

    Project errors (already one sentence) pass through; so does everything raised by a
    built-in model, whose failure is a bug to be seen with its traceback.
    """
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:
        if isinstance(exc, MemoryError) or is_builtin(model):
            raise
        text = " ".join(str(exc).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise ModelError(t("model.raised", model=_name(model),
                           method=_failing_method(exc, model, method), error=error)) from exc


def _type_name(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return t("model.got_array", dtype=str(x.dtype))
    return t("model.got_object", type=type(x).__name__)


def check_log_joint(model: "MixtureModel", lj: Any, n_rows: int, first_row: int = 0,
                    method: str = "log_joint", values: bool = True) -> None:
    """Raise ModelError unless ``lj`` is a numeric (n_rows, K) array usable as log-densities.

    ``first_row``: 0-based index in the data of ``lj``'s first row (rows are named 1-based).
    ``values=False`` checks the type and shape only.
    """
    K = model.n_components
    expected = f"(n, K) = ({n_rows}, {K})"
    if not isinstance(lj, np.ndarray) or lj.dtype.kind not in "fiu":
        raise ModelError(t("model.log_joint_type", model=_name(model), method=method,
                           got=_type_name(lj), expected=expected))
    if lj.shape != (n_rows, K):
        raise ModelError(t("model.bad_shape", model=_name(model), method=method,
                           got=str(tuple(lj.shape)), expected=expected))
    if not values:
        return
    finite = np.isfinite(lj)
    if finite.all():
        return
    for value, bad in (("NaN", np.isnan(lj)), ("+inf", lj == np.inf)):
        if bad.any():
            row, k = np.argwhere(bad)[0]
            raise ModelError(t("model.log_joint_not_finite", model=_name(model), method=method,
                               value=value, row=first_row + int(row), k=int(k) + 1,
                               count=int(bad.sum())))
    impossible = ~finite.any(axis=1)
    if impossible.any():
        raise ModelError(t("model.row_impossible", model=_name(model), method=method,
                           row=first_row + int(np.argmax(impossible)),
                           count=int(impossible.sum())))


def check_params(model: "MixtureModel", params: Any, method: str) -> None:
    """Raise ModelError unless ``params`` holds every declared parameter, shaped and finite.

    User models are also checked against the declared constraints (``in_parameter_space``).
    """
    specs = model.param_specs()
    K = model.n_components
    names = ", ".join(s.name for s in specs)
    if not isinstance(params, Mapping):
        raise ModelError(t("model.params_type", model=_name(model), method=method,
                           got=_type_name(params), names=names))
    for spec in specs:
        if spec.name not in params:
            raise ModelError(t("model.missing_param", model=_name(model), method=method,
                               name=spec.name, names=names))
        raw = params[spec.name]
        try:
            v = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            raise ModelError(t("model.param_type", model=_name(model), method=method,
                               got=_type_name(raw), name=spec.name)) from None
        want = (K,) + tuple(spec.shape)
        if v.shape != want:
            symbolic = "(K,)" if not spec.shape else \
                "(" + ", ".join(["K"] + [str(d) for d in spec.shape]) + ")"
            raise ModelError(t("model.param_shape", model=_name(model), method=method,
                               name=spec.name, got=str(tuple(v.shape)),
                               expected=f"{symbolic} = {want}"))
        bad = ~np.isfinite(v)
        if bad.any():
            idx = np.argwhere(bad)[0]
            x = v[tuple(idx)]
            entry = f"{spec.name}[{','.join(str(int(i) + 1) for i in idx)}]"
            raise ModelError(t("model.param_not_finite", model=_name(model), method=method,
                               value="NaN" if np.isnan(x) else ("+inf" if x > 0 else "-inf"),
                               entry=entry, count=int(bad.sum())))
    if not is_builtin(model) and not model.in_parameter_space(dict(params)):
        detail = model.parameterisation().violation(params) or "in_parameter_space is False"
        raise ModelError(t("model.param_outside", model=_name(model), method=method,
                           detail=detail))


def check_e_step_stats(model: "MixtureModel", out: Any, rows: tuple[int, int],
                       reference: Mapping[str, np.ndarray] | None,
                       method: str = "e_step_stats") -> tuple[Mapping[str, Any], float]:
    """Check one chunk's ``(stats, loglik)``; ``reference``: the first chunk's statistics.

    Returns the pair.  A non-finite log-likelihood is left to :func:`diagnose_loglik`.
    """
    first, last = rows[0] + 1, rows[1]
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Mapping)):
        raise ModelError(t("model.stats_type", model=_name(model), method=method,
                           got=_type_name(out)))
    stats, ll = out
    try:
        ll = float(ll)
    except (TypeError, ValueError):
        raise ModelError(t("model.loglik_type", model=_name(model), method=method,
                           got=_type_name(ll))) from None
    for name, value in stats.items():
        v = np.asarray(value)
        if v.dtype.kind not in "fiub":
            raise ModelError(t("model.stat_type", model=_name(model), method=method,
                               got=_type_name(v), name=name))
        if reference is not None and name in reference and \
                np.shape(reference[name]) != v.shape:
            raise ModelError(t("model.stat_shape", model=_name(model), method=method, name=name,
                               got=str(v.shape), expected=str(np.shape(reference[name])),
                               first=first, last=last))
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            value_text = "NaN" if np.isnan(v).any() else "inf"
            raise ModelError(t("model.stat_not_finite", model=_name(model), method=method,
                               value=value_text, name=name, first=first, last=last))
    return stats, ll


def diagnose_loglik(model: "MixtureModel", data: Mapping[str, np.ndarray], params: Mapping[str, Any],
                    rows: tuple[int, int], ll: float, method: str = "e_step_stats") -> None:
    """A chunk's log-likelihood is not finite: raise a ModelError saying where and why.

    Evaluates ``log_joint`` on the chunk (only on this failure path) to name the row and
    class; if it is usable, the fused E-step itself is blamed.
    """
    with guarded(model, "log_joint"):
        lj = model.log_joint(data, dict(params))
    check_log_joint(model, lj, rows[1] - rows[0], first_row=rows[0])
    raise ModelError(t("model.loglik_not_finite", model=_name(model), method=method,
                       value=repr(ll), first=rows[0] + 1, last=rows[1]))


def check_declarations(cls: type) -> None:
    """Raise ModelError unless ``cls.summaries`` and ``cls.figures`` are tuples (or lists)
    of known names (:data:`src.models.base.SUMMARY_NAMES`, :data:`~src.models.base.FIGURE_NAMES`).

    Called when a model class is defined, so a user model with a misspelt name fails when
    it is loaded, with one sentence naming the class, the attribute and the known names."""
    from .base import FIGURE_NAMES, SUMMARY_NAMES

    for attribute, known in (("summaries", SUMMARY_NAMES), ("figures", FIGURE_NAMES)):
        value = getattr(cls, attribute, ())
        known_text = ", ".join(known)
        if value is None:
            value = ()
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            got = repr(value) if isinstance(value, str) else _type_name(value)
            raise ModelError(t("model.names_type", model=cls.__name__, attribute=attribute,
                               got=got, known=known_text))
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ModelError(t("model.unknown_names", model=cls.__name__, attribute=attribute,
                               unknown=", ".join(repr(v) for v in unknown), known=known_text))
