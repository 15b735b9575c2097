"""Checks made before a run does any work, so a bad input costs seconds, not a whole fit.

Each raises a one-sentence error (exit 2) naming the flag and the value: the task name,
the model (its file and class), what the family needs (a data file, supported
standard-error methods), the data file, and the two folders (a file in the way; an
output folder that cannot be written).  They run before the progress tracker starts, so
a missing data file is exit 2 whatever saved progress says.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..config import RunOptions
from ..models.base import MixtureModel
from ..progress.paths import validate_task_name
from ..utils.errors import UsageError
from ..utils.messages import register, t
from .phases import check_model_needs, model_class

__all__ = ["check_before_run", "check_folder", "check_writable", "check_data_source",
           "check_partitioned_source",
           "check_weight_options"]

register({
    "checks.not_a_folder": {
        "en": "{flag} {path} cannot be a folder because {blocker} is a file; choose another path.",
        "zh": "{flag} {path} 无法作为文件夹，因为 {blocker} 是一个文件；请选择其他路径。"},
    "checks.not_writable": {
        "en": "{flag} {path} cannot be written ({reason}); choose a folder you can write to.",
        "zh": "{flag} {path} 无法写入（{reason}）；请选择可写的文件夹。"},
    "checks.sampling_blrt": {
        "en": "--blrt simulates independent rows, which sampling weights (--weight-type sampling) "
              "do not describe; run without --blrt (and choose K with --select bic or another "
              "criterion), or use --weight-type frequency if each row stands for w identical rows.",
        "zh": "--blrt 模拟的是相互独立的行，而抽样权重（--weight-type sampling）不满足这一点；请去掉 --blrt"
              "（并用 --select bic 或其他准则选择 K），或在每行代表 w 个相同行时使用 --weight-type frequency。"},
    "checks.sampling_vlmr": {
        "en": "The Vuong-Lo-Mendell-Rubin tests assume independent rows, which sampling weights "
              "(--weight-type sampling) do not describe; add --no-vlmr, or use --weight-type "
              "frequency if each row stands for w identical rows.",
        "zh": "Vuong-Lo-Mendell-Rubin 检验假定各行相互独立，而抽样权重（--weight-type sampling）不满足这一点；"
              "请加上 --no-vlmr，或在每行代表 w 个相同行时使用 --weight-type frequency。"},
})


register({
    "checks.partitioned_option": {
        "en": "Standard errors by {method} on partitioned input need {flag} {value} (given: "
              "{given}), as the rows are not in memory; add {flag} {value}.",
        "zh": "分区输入上按 {method} 计算标准误需要 {flag} {value}（当前为 {given}），因为数据不在内存中；"
              "请加上 {flag} {value}。"},
    "checks.partitioned_tests": {
        "en": "The BLRT is not available for partitioned input (it refits data sets of N "
              "simulated rows in memory); drop --blrt and choose K by --select bic (or aic, "
              "sabic, caic, icl).",
        "zh": "分区输入不支持 BLRT（它需要在内存中重拟合 N 行模拟数据）；请去掉 --blrt，"
              "并用 --select bic（或 aic、sabic、caic、icl）选择 K。"},
    "checks.partitioned_gof": {
        "en": "The goodness-of-fit bootstrap (--gof-bootstrap) is not available for partitioned "
              "input; drop --gof-bootstrap.",
        "zh": "分区输入不支持拟合优度自助法（--gof-bootstrap）；请去掉 --gof-bootstrap。"},
})


def check_before_run(options: RunOptions) -> type[MixtureModel]:
    """Every check a run needs before it starts; returns the model class."""
    validate_task_name(options.task_name)
    cls = model_class(options)
    check_model_needs(cls, options)
    check_weight_options(options)
    from ..data.covariates import check_covariate_options
    check_covariate_options(options)   # --covariates (one step): columns, reference, in memory
    if options.structural is not None:   # three-step estimation: its columns, in memory
        from .structural import check_structural_options
        check_structural_options(options)
    if options.partitioned:
        check_partitioned_source(options)
    else:
        check_data_source(options.data)
    if not options.no_progress_tracking:
        check_folder("--progress-dir", Path(options.progress_dir))
    check_writable("--output-dir", options.results_dir)
    return cls


def check_weight_options(options: RunOptions) -> None:
    """UsageError for a test of K that sampling weights do not allow (as Mplus refuses
    TECH11/TECH14 with complex samples): the BLRT, and the VLMR/LMR tests, both of which
    treat the rows as independent draws; frequency weights are fine (rows replicated)."""
    if options.weights is None or options.weight_type != "sampling" or not options.enumerating:
        return
    if options.blrt > 0:
        raise UsageError(t("checks.sampling_blrt"))
    if options.vlmr:
        raise UsageError(t("checks.sampling_vlmr"))


def check_data_source(source: str | None) -> None:
    """The loader's own DataError when ``--data`` is not one readable file or built-in
    set (missing, a folder, a pattern...), before any work."""
    from ..data.loading import resolve_source

    resolve_source(source)


def check_partitioned_source(options: RunOptions) -> None:
    """The partitioned reader's own DataError when ``--data`` holds no readable Parquet
    files (or files whose columns differ), before any work; a run that would need every
    row in memory (a standard-error method or test that resamples rows) is refused."""
    from ..data.partitions import PartitionedSource

    PartitionedSource.open(str(options.data))
    from ..inference import SE_METHODS

    for method in options.se_methods():
        for name, value in SE_METHODS[method].partitioned_options.items():
            if getattr(options, name) != value:
                raise UsageError(t("checks.partitioned_option", method=method,
                                   flag="--" + name.replace("_", "-"), value=value,
                                   given=getattr(options, name)))
    if options.enumerating and options.blrt > 0:
        raise UsageError(t("checks.partitioned_tests"))
    if options.gof_bootstrap > 0:
        raise UsageError(t("checks.partitioned_gof"))


def check_folder(flag: str, path: Path) -> None:
    """UsageError unless ``path`` is, or can be made, a folder (no file in the way)."""
    blocker = Path(path)
    while not blocker.exists() and blocker != blocker.parent:
        blocker = blocker.parent
    if blocker.exists() and not blocker.is_dir():
        raise UsageError(t("checks.not_a_folder", flag=flag, path=path, blocker=blocker))


def check_writable(flag: str, path: Path) -> None:
    """UsageError naming the flag unless the folder ``path`` can be created and written.

    Leaves no trace: the probe file and the folders made for it are removed again (the
    writers create the folder when there are results), so a run refused later (exit 3)
    or interrupted before its output leaves no empty folder behind."""
    check_folder(flag, path)
    created: list[Path] = []
    try:
        for folder in reversed(_missing_folders(Path(path))):
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by someone else: not ours to remove
                continue
            created.append(folder)
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(t("checks.not_writable", flag=flag, path=path, reason=reason)) from None
    finally:
        for folder in reversed(created):  # deepest first; one that is no longer empty stays
            try:
                folder.rmdir()
            except OSError:
                pass


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing
