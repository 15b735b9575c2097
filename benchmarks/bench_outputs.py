"""What writing the conclusions costs: issue 10's target "writing all outputs and plots for
N = 1e5 adds at most 10% to a default run".

Each measurement is one run of the main pipeline in a fresh process (as a user's run: imports,
matplotlib's first import and font cache lookups included), with the script's defaults
(10 starts from 50 candidates, SQUAREM, Louis standard errors, ``--formats md,html``, plots)
and one BLAS thread (the pipeline limits BLAS itself; ``OPENBLAS_NUM_THREADS=1`` and friends
are set for the child too).  The child parses the flags as the script does
(``src.pipeline.cli.parse``) and calls ``src.pipeline.run`` with a Reporter that notes when each
phase starts and ends, so the phases are timed inside the run; before its imports it starts
the drawing process as the script does (``src.output.launch.start_early``, when the flags may
draw), and like the script it loads its modules with garbage collection off and freezes them
after:

* ``output`` = the ``result_output`` phase (posteriors.csv, classification quality, the family's
  summaries, figures, estimates/covariance/fit.json, report.md and report.html, the manifest);
* ``rest`` = the rest of ``src.pipeline.run`` (``data_preparation``, ``model_estimation``,
  ``standard_error_computation``, and between them the checks, fingerprints and re-reading of
  the data); ``run`` = the whole of ``src.pipeline.run``; ``wall`` = the child process from
  exec to exit, measured by the parent;
* inside ``output``: ``figures`` (the time inside ``src.output.plots.figures``: drawing in the
  run's process, or waiting for and taking the drawing process's PNGs) and ``csv`` (inside
  ``src.output.posteriors.posteriors_csv``: writing it, or waiting for the thread that began
  it with the estimate); ``mpl`` says whether matplotlib was imported in the run's own
  process (not with the drawing process).

Settings: ``default`` (plots, md+html); ``minimal`` = ``--no-plots --formats md`` (estimates,
covariance, posteriors.csv, fit.json and report.md only); ``none`` = the same run without
any result file (``--no-plots`` and the ``result_output`` phase replaced by one that writes
nothing, and nothing handed off for it: ``src.output.background.submit_fit`` does nothing,
so no ``posteriors.csv`` thread runs for a file never written): the run the outputs are
added to.

``cpu`` = CPU seconds of the run's process and its drawing process (``getrusage`` of the
finished children); ``others`` = CPUs the rest of the machine kept busy during the
measurement (``/proc/stat`` busy time minus ``cpu``, per second of wall time; the table shows
the largest over rounds).  On a shared machine ``--max-others 0.3`` measures again (up to
``--retries`` times, ``--retry-wait`` seconds apart) while others used more.

Two ratios.  **output / rest** (same run: the output phase against the rest of it; blind to
work moved out of the output phase into the others).  **added** = (run of default - run of
none) / run of none, medians over rounds: the issue's "adds at most 10%" in wall time of the
whole run, work moved between phases included; noisier (two processes; the Gaussian fits vary
by a few tenths of a second under load).  Interpreter start-up and imports before
``run()`` are counted in neither (the same work for every setting, but the drawing process
starts beside the imports: its start-up is in neither ratio).  **added, process** = the same
with ``wall`` (the child from exec to exit, the parent's clock): what a user timing the
command sees, the drawing process's start-up beside the imports included.  **added beside
the fit** = *added* with the fit phase left out of the difference (still over the whole none
run): the fit is the same deterministic work in both settings, yet its duration varies by
+-20% between rounds on a shared VM, which swamps a 10% difference; this reading is steadier
and leaves out only what the outputs may cost the fit itself (the drawing process's first
stages on the other core; the table's *fit s* shows it).  **added, process, beside the
fit**: *added, process* so, over the whole none process.  Each round runs every case in
every setting, the order alternating between rounds; tables give medians over rounds (min-max
of the ratio).

Cases (data simulated once from ``src.utils.rng.stream(SEED, "bench-outputs", i)``, i the case's
position in CASES, and written as CSV, N = 1e5 unless ``--n``): ``gmm2``, ``gmm5`` (2 and 5
columns, 2 well separated correlated Gaussian classes), ``lca10`` (10 binary items, 2
classes); ``lca20k3`` (20 binary items, 3 classes, K = 3: ~1e5 distinct answer patterns,
a fit of seconds; not run unless named).  Others K = 2 (the default).

``--code NAME=PATH`` (repeatable) compares versions of the project: each child runs the code
under PATH (e.g. ``git archive <commit> | tar -x -C PATH``), every round runs every version
in turn, so before/after ratios come from the same minutes of a shared machine.  Default:
this checkout, named ``here``.  ``--python NAME=EXE`` runs version NAME's children with
another interpreter (a virtual environment with other versions of the libraries: name the
same PATH twice, e.g. ``--code mpl311=. --code mpl310=. --python mpl310=/tmp/v310/bin/python``).

``--profile CASE`` instead runs one default run of CASE under cProfile and prints where the
``result_output`` phase spends its time (cumulative seconds of the functions inside it);
``--pieces CASE`` prints the warm cost of each piece of the output work (one process,
minimum of several calls): the phase's floors.

Bytecode: the children load the project's modules (and the libraries') from a bytecode
cache in the working folder (``PYTHONPYCACHEPREFIX``, filled before anything is measured),
as an installed package would; an environment with ``PYTHONDONTWRITEBYTECODE=1`` and no
``__pycache__`` otherwise compiles every module in every run (``--no-bytecode``: measure
that way).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_outputs.py [--rounds 3] [--n 1e5]
[--cases gmm2,gmm5,lca10] [--settings default,minimal,none] [--code before=/tmp/old --code
after=.] [--json out.json]`` (about 10 minutes at 3 rounds on 2 cores, per version).
"""

from __future__ import annotations

import gc
import sys

if "--child" in sys.argv:   # as the script: no collection while the modules load
    gc.disable()

import argparse  # noqa: E402
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261202
CASES = ("gmm2", "gmm5", "lca10", "lca20k3")
#: K of each case (the default, 2, when not named)
COMPONENTS = {"lca20k3": 3}
PHASES = ("data_preparation", "model_estimation", "standard_error_computation", "result_output")
MINIMAL = ("--no-plots", "--formats", "md")
SETTINGS = {"default": (), "minimal": MINIMAL, "none": ("--no-plots",)}
ONE_THREAD = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# ----------------------------------------------------------------------- data
def simulate(case: str, n: int) -> "object":
    """The case's data as a pandas DataFrame (a fixed stream per case)."""
    import pandas as pd

    if case not in CASES:
        raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")

    from src.utils.rng import stream

    rng = stream(SEED, "bench-outputs", CASES.index(case))
    if case.startswith("gmm"):
        d = int(case[3:])
        z = rng.random(n) < 0.4
        means = np.stack([np.zeros(d), np.full(d, 2.5)])
        A = [np.eye(d) + 0.3 * rng.standard_normal((d, d)) for _ in range(2)]
        X = means[z.astype(int)] + np.einsum(
            "nij,nj->ni", np.stack(A)[z.astype(int)], rng.standard_normal((n, d)))
        return pd.DataFrame(X, columns=[f"x{j + 1}" for j in range(d)])
    if case == "lca10":
        items = 10
        probs = np.stack([np.linspace(0.15, 0.45, items), np.linspace(0.85, 0.55, items)])
        z = (rng.random(n) < 0.35).astype(int)
        Y = (rng.random((n, items)) < probs[z]).astype(int) + 1
        return pd.DataFrame(Y, columns=[f"item{j + 1}" for j in range(items)])
    if case == "lca20k3":   # ~1e5 distinct answer patterns: EM over (nearly) every row
        items = 20
        probs = np.stack([np.linspace(0.15, 0.45, items), np.linspace(0.85, 0.55, items),
                          np.tile([0.2, 0.8], items // 2)])
        z = np.minimum((rng.random(n) * 3).astype(int), 2)
        Y = (rng.random((n, items)) < probs[z]).astype(int) + 1
        return pd.DataFrame(Y, columns=[f"item{j + 1}" for j in range(items)])
    raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")


def case_args(case: str, path: Path) -> list[str]:
    model = "lca" if case.startswith("lca") else "gmm"
    k = COMPONENTS.get(case)
    return ["--model", model, "--data", str(path), *(["--components", str(k)] if k else [])]


# ---------------------------------------------------------------------- child
class _WhenImported:
    """A meta-path finder that calls ``patches[name](module)`` right after module ``name``
    is executed (the first time anything imports it)."""

    def __init__(self, patches):
        self.patches = dict(patches)

    def find_spec(self, name, path, target=None):
        patch = self.patches.pop(name, None)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def child(argv: list[str], profile: bool) -> None:
    """One run of the pipeline in this process; prints {phase: seconds} as JSON."""
    t_exec = time.perf_counter()
    sys.path.insert(0, os.environ.get("BENCH_CODE", str(ROOT)))
    try:   # as the script does before its imports (versions without it: ImportError)
        from src.output.launch import start_early
    except ImportError:
        pass
    else:
        start_early(argv)
    from src.pipeline import cli, run
    from src.utils.console import Reporter

    class PhaseClock(Reporter):
        """A Reporter that also notes each phase's start and end (perf_counter)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.times: dict[str, list[float]] = {}

        def phase_started(self, phase):
            self.times[phase] = [time.perf_counter()]
            super().phase_started(phase)

        def phase_finished(self, phase):
            super().phase_finished(phase)
            self.times[phase].append(time.perf_counter())

    # what the figures and posteriors.csv cost inside result_output: the functions are
    # wrapped when their modules are first imported (by the run, so no import moves out of
    # the phase that needs it)
    inner: dict[str, float] = {}

    def timed(name, fn):
        def call(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                inner[name] = inner.get(name, 0.0) + time.perf_counter() - t
        return call

    def wrap_figures(module):
        module.figures = timed("figures", module.figures)

    def wrap_csv(module):
        module.posteriors_csv = timed("csv", module.posteriors_csv)

    sys.meta_path.insert(0, _WhenImported({"src.output.plots": wrap_figures,
                                           "src.pipeline.conclusions": wrap_csv}))
    import src.pipeline.tracked as tracked
    if os.environ.get("BENCH_NO_OUTPUT"):   # setting "none": result_output writes nothing
        def no_output(prepared, fit, selection, se, options, *a, **kw):
            return {"output_dir": str(options.results_dir), "files": [], "written_at": 0.0}
        tracked._output_phase = no_output
        from src.output import background   # (nor is anything begun for it)
        background.submit_fit = lambda *a, **kw: False
    gc.freeze()   # as the script does once its modules are loaded
    gc.enable()
    _, options = cli.parse(argv)
    reporter = PhaseClock(stream=open(os.devnull, "w"), live=False)
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    run(options, reporter)
    t1 = time.perf_counter()
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["BENCH_PROFILE_OUT"])
    out = {p: b - a for p, (a, b) in reporter.times.items()}
    out["run"] = t1 - t0
    out.update(inner)
    out["mpl"] = "matplotlib" in sys.modules
    out["imports"] = t0 - t_exec
    drawing = sys.modules.get("src.output.background")
    last = getattr(drawing, "last_source", None)
    if last is not None:   # where the figures and posteriors.csv were made (helper/thread/here)
        out["fig_src"], out["csv_src"] = last("figures"), last("posteriors.csv")
    print(json.dumps(out))
    try:   # as the script ends (versions without it: the interpreter's teardown)
        from src.utils.exiting import exit_now
    except ImportError:
        return
    exit_now(0)


def _busy_cpu_seconds() -> float | None:
    """Seconds of CPU time the whole machine spent busy since boot (/proc/stat; None
    elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (and theirs: the drawing process)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: where the children keep the project's compiled modules (None: as the environment says;
#: ``--no-bytecode``: compiled afresh by every process, as with PYTHONDONTWRITEBYTECODE=1
#: and no ``__pycache__``)
PYCACHE: list[Path | None] = [None]
#: version name -> the interpreter its runs use (``--python``; default: this one)
PYTHONS: dict[str, str] = {}


def child_env(code: Path) -> dict[str, str]:
    """The environment of a child running the project under ``code``: one BLAS thread, and
    the project's modules loaded from compiled bytecode as an installed package's are
    (``PYTHONPYCACHEPREFIX``, filled by :func:`compile_code`) unless ``--no-bytecode``."""
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(code), "BENCH_CODE": str(code),
           "LANG": "C.UTF-8"}
    if PYCACHE[0] is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE[0])
    return env


def compile_code(code: Path, python: str = sys.executable) -> None:
    """Compile the project under ``code`` into the bytecode cache (before any measurement,
    with one unmeasured run of each case for the libraries' modules, which the cache prefix
    holds too: no run pays for compiling, as none would after ``pip install``)."""
    if PYCACHE[0] is not None:
        subprocess.run([python, "-m", "compileall", "-q", str(code / "src"),
                        str(Path(__file__).resolve())], env=child_env(code), check=True,
                       stdout=subprocess.DEVNULL)


def run_child(argv: list[str], cwd: Path, *, profile_out: Path | None = None,
              code: Path = ROOT, no_output: bool = False, python: str = sys.executable
              ) -> dict:
    env = child_env(code)
    env.pop("BENCH_NO_OUTPUT", None)
    if no_output:
        env["BENCH_NO_OUTPUT"] = "1"
    cmd = [python, str(Path(__file__).resolve()), "--child"]
    if profile_out is not None:
        env["BENCH_PROFILE_OUT"] = str(profile_out)
        cmd.append("--child-profile")
    busy0, own0 = _busy_cpu_seconds(), _children_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    busy1, own = _busy_cpu_seconds(), _children_cpu_seconds() - own0
    busy = busy1 - busy0 if busy0 is not None and busy1 is not None else None
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    times["wall"] = wall
    times["cpu"] = own   # the run's process and its drawing process
    # CPUs the rest of the machine kept busy meanwhile (0: the run had the machine alone)
    times["others"] = max(busy - own, 0.0) / wall if busy is not None and wall > 0 else None
    return times


def measure(case: str, data: Path, setting: str, work: Path, code: Path = ROOT,
            python: str = sys.executable) -> dict:
    """A fresh run of ``case`` in ``work`` in ``setting`` (:data:`SETTINGS`) with the
    project's code under ``code``, run by ``python``."""
    folder = work / f"{case}-{setting}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = [*case_args(case, data), "--no-progress-tracking", *SETTINGS[setting]]
    times = run_child(argv, folder, code=code, no_output=setting == "none", python=python)
    times["rest"] = times["run"] - times["result_output"]
    times["output"] = times["result_output"]
    times["ratio"] = times["output"] / times["rest"]
    results = folder / "results" / "main_estimation"
    times["files"] = sorted(p.name for p in results.iterdir()) if results.is_dir() else []
    return times


PIECES = r"""
import gc, os, statistics, subprocess, sys, time
from pathlib import Path
import numpy as np
from src.pipeline import cli, run
from src.utils.console import Reporter

work = Path(sys.argv[1])
_, options = cli.parse(sys.argv[2:] + ["--no-plots", "--output-dir", str(work / "run")])
res = run(options, Reporter(stream=open(os.devnull, "w"), live=False))
prep, fit, se = res["prepared"], res["fit"], res["se"]
model, data = prep.model, prep.data
params = {k: np.asarray(v) for k, v in fit["params"].items()}
out = {}

def best(name, fn, n=7):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    out[name] = min(times)
    return value

from src.inference.classification import classification_summary, posteriors_of
from src.inference.summaries import model_summaries
from src.output.estimates import covariance_rows, interval_summary
from src.output.posteriors import csv_of_posteriors
from src.output.plots import figure_specs
from src.output.plots.spec import finish, render, start
from src.output.writers import MANIFEST, manifest_bytes, result_files
from src.pipeline.conclusions import conclusions_of
from src.progress.atomic import write_file_set

post = best("posteriors (E-step)", lambda: posteriors_of(model, data, params, options.chunk_size))
best("classification summary", lambda: classification_summary(
    model, data, params, chunk_size=options.chunk_size, resp=post))
primary = next(iter(se), None)
best("family summaries (G2/X2, SDs)", lambda: model_summaries(
    model, data, params, n_params=int(fit["n_params"]), se=se[primary] if primary else None,
    ci_level=options.ci_level, seed=options.seed))
best("interval summary", lambda: interval_summary(model, se, options))
best("covariance.csv rows", lambda: covariance_rows(se, options, model=model))
csv = best("posteriors.csv bytes", lambda: csv_of_posteriors(
    np.asarray(prep.row_labels), post.tau, post.inverse, None, options.chunk_size))
found = conclusions_of(prep, fit, se, options)
files = best("every file's bytes (no figure)", lambda: result_files(
    model, prep.record, fit, se, options, fingerprint={}, conclusions=found))
specs = figure_specs(model, data, params, post)
gc.disable()
for name, spec in specs.items():
    render(spec)   # matplotlib warm: fonts, caches
    def stages(spec=spec):
        (m1, a1), (m2, a2) = spec.first(), spec.second()
        t = time.perf_counter()
        try:   # as the drawing process runs it, ahead of the estimate
            drawing = start(spec.kind, m1, a1, ahead=True)
        except TypeError:   # (versions before the first stage knew)
            drawing = start(spec.kind, m1, a1)
        t1 = time.perf_counter()
        png = finish(drawing, m2, a2)[0]
        return t1 - t, time.perf_counter() - t1, png
    runs = [stages() for _ in range(5)]
    out[f"{name} stage 1"] = min(r[0] for r in runs)
    out[f"{name} stage 2"] = min(r[1] for r in runs)
    files[name] = runs[0][2]
gc.enable()
manifest = manifest_bytes("bench", files)
folders = iter(range(1000))

def fresh_set():
    folder = work / f"set{next(folders)}"
    folder.mkdir()
    return write_file_set(folder, files, manifest=(MANIFEST, manifest))

best(f"file set, {len(files)} files, {sum(map(len, files.values())) / 1e6:.1f} MB (fresh folder)",
     fresh_set)
imp = "import time; t = time.perf_counter(); import src.pipeline.conclusions, src.output.writers; print(time.perf_counter() - t)"
base = "import src.pipeline.tracked, src.output.background, src.output.posteriors, src.inference.classification; "
out["output modules' import (fresh process)"] = min(float(subprocess.run(
    [sys.executable, "-c", base + imp], capture_output=True, text=True, check=True).stdout) for _ in range(5))
for name, value in out.items():
    print(f"{name:48s} {value * 1e3:8.1f} ms")
"""


def pieces(case: str, data: Path, work: Path) -> None:
    """Warm costs of the output work's pieces for ``case`` (one process; minimum of several
    calls): the floors of the phase."""
    folder = work / f"{case}-pieces"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    code = os.environ.get("BENCH_CODE", str(ROOT))
    subprocess.run([sys.executable, "-c", PIECES, str(folder), *case_args(case, data),
                    "--no-progress-tracking"], cwd=folder, env=child_env(Path(code)), check=True)


def profile(case: str, data: Path, work: Path, top: int) -> None:
    import pstats

    folder = work / f"{case}-profile"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    out = work / f"{case}.prof"
    times = run_child([*case_args(case, data), "--no-progress-tracking"], folder, profile_out=out)
    print(f"{case}: phases {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in times.items()})}")
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative")
    # the output phase's callees (tracked._output_phase and below)
    stats.print_callees("_output_phase")
    stats.print_stats(r"src/(output|pipeline/conclusions|inference/(classification|summaries|goodness))", top)


def machine() -> dict:
    import numpy
    import scipy

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "nproc": os.cpu_count(), "cpu": cpu,
            "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg": load}


def _codes(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs (default: this checkout as ``here``)."""
    out: dict[str, Path] = {}
    for spec in specs or [f"here={ROOT}"]:
        name, _, path = spec.partition("=")
        if not name or not path or not (Path(path) / "src" / "pipeline").is_dir():
            raise SystemExit(f"--code {spec!r}: expected NAME=PATH of a copy of the project")
        out[name] = Path(path).resolve()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=float, default=1e5)
    ap.add_argument("--cases", default=",".join(CASES[:3]),
                    help=f"of {', '.join(CASES)} (lca20k3: 20 items, K = 3, ~1e5 distinct "
                         "answer patterns, a fit of seconds)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="children compile the project's modules afresh (as with "
                         "PYTHONDONTWRITEBYTECODE=1 and no __pycache__) instead of loading "
                         "them from a bytecode cache in the working folder")
    ap.add_argument("--python", action="append", default=[], metavar="NAME=EXE",
                    help="the interpreter of version NAME's runs (default: this one)")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=PATH",
                    help="a version of the project to run (repeat to compare; default: this one)")
    ap.add_argument("--settings", default="default,minimal,none",
                    help="default (plots, md+html), minimal (--no-plots --formats md), none "
                         "(no result file: the run the outputs are added to)")
    ap.add_argument("--max-others", type=float, default=None, metavar="CPUS",
                    help="measure again (up to --retries times) when the rest of the machine "
                         "kept more than CPUS busy meanwhile (a shared machine)")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--retry-wait", type=float, default=10.0, metavar="SECONDS")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--profile", default=None, metavar="CASE",
                    help="profile one default run of CASE's result_output instead")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--pieces", default=None, metavar="CASE",
                    help="print the warm cost of each piece of CASE's output work instead")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    settings = [s for s in args.settings.split(",") if s]
    codes = _codes(args.code)
    for spec in args.python:
        name, _, exe = spec.partition("=")
        if name not in codes or not exe or not Path(exe).exists():
            raise SystemExit(f"--python {spec!r}: expected NAME=EXE with NAME one of --code's "
                             f"({', '.join(codes)}) and EXE an interpreter")
        PYTHONS[name] = exe
    n = int(args.n)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-outputs-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        _bench(args, cases, settings, codes, n, work)
    finally:   # (a temporary folder holds each case's data, tens of MB: not left behind)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, cases: list[str], settings: list[str],
           codes: dict[str, Path], n: int, work: Path) -> None:
    """:func:`main`'s measurements in ``work``."""
    PYCACHE[0] = None if args.no_bytecode else work / "pycache"
    for name, code in ({"here": ROOT} if args.profile or args.pieces else codes).items():
        compile_code(code, PYTHONS.get(name, sys.executable))
    paths = {}
    single = args.profile or args.pieces
    for case in ([single] if single else cases):
        paths[case] = work / f"{case}-{n}.csv"
        if not paths[case].exists():
            simulate(case, n).to_csv(paths[case], index=False)
    if PYCACHE[0] is not None:   # every module the runs load compiled once, unmeasured
        for name, code in ({"here": ROOT} if single else codes).items():
            for case in paths:
                measure(case, paths[case], "default", work, code,
                        PYTHONS.get(name, sys.executable))
    if args.pieces:
        pieces(args.pieces, paths[args.pieces], work)
        return
    if args.profile:
        profile(args.profile, paths[args.profile], work, args.top)
        return

    info = machine()
    info["code"] = {name: str(path) for name, path in codes.items()}
    info["interpreter"] = {name: PYTHONS.get(name, sys.executable) for name in codes}
    info["matplotlib"] = {name: subprocess.run(
        [exe, "-c", "import matplotlib; print(matplotlib.__version__)"], capture_output=True,
        text=True).stdout.strip() for name, exe in info["interpreter"].items()}
    info["bytecode"] = "compiled afresh" if args.no_bytecode else "cached"
    print(f"N = {n}, rounds {args.rounds}, {info}", flush=True)
    results: dict[str, dict[str, dict[str, list[dict]]]] = {
        code: {c: {s: [] for s in settings} for c in cases} for code in codes}
    for r in range(args.rounds):
        order = settings if r % 2 == 0 else settings[::-1]
        names = list(codes) if r % 2 == 0 else list(codes)[::-1]
        for case in cases:
            for setting in order:
                for code in names:
                    for attempt in range(args.retries + 1):   # again while others were busy
                        t = measure(case, paths[case], setting, work, codes[code],
                                    PYTHONS.get(code, sys.executable))
                        if args.max_others is None or (t["others"] or 0.0) <= args.max_others:
                            break
                        time.sleep(args.retry_wait)
                    t["attempts"] = attempt + 1
                    results[code][case][setting].append(t)
                    print(f"round {r + 1} {code:8s} {case:6s} {setting:7s} "
                          f"rest {t['rest']:.2f} s  output {t['output']:.3f} s  ratio {t['ratio']:.3f}"
                          f"  (figures {t.get('figures', 0):.3f} {t.get('fig_src') or '-'}, "
                          f"csv {t.get('csv', 0):.3f} {t.get('csv_src') or '-'}, "
                          f"mpl {'yes' if t['mpl'] else 'no'})"
                          f"  (data {t['data_preparation']:.2f}, fit {t['model_estimation']:.2f}, "
                          f"se {t['standard_error_computation']:.2f}, run {t['run']:.2f}, "
                          f"wall {t['wall']:.2f}, cpu {t['cpu']:.2f}, others "
                          f"{t['others'] if t['others'] is None else round(t['others'], 2)}, "
                          f"load {os.getloadavg()[0]:.1f})", flush=True)
    info["loadavg_end"] = os.getloadavg()

    def med(rows, key):
        return statistics.median(row[key] for row in rows)

    def fmt(rows, key):
        return f"{med(rows, key):.3f}" if all(key in row for row in rows) else "-"

    def added(code, case, setting, key="run"):
        """(``key`` of setting - ``key`` of none) / ``key`` of none, round by round;
        ``key`` "beside": run minus the fit phase in the difference, over the none run;
        "process beside": the same of the whole process (wall), over the none process."""
        if setting == "none" or "none" not in settings:
            return None
        pairs = zip(results[code][case][setting], results[code][case]["none"])
        fit = "model_estimation"
        if key == "beside":
            return [((a["run"] - a[fit]) - (b["run"] - b[fit])) / b["run"] for a, b in pairs]
        if key == "process beside":
            return [((a["wall"] - a[fit]) - (b["wall"] - b[fit])) / b["wall"] for a, b in pairs]
        return [(a[key] - b[key]) / b[key] for a, b in pairs]

    def spread(values):
        return (f"**{statistics.median(values):.3f}** ({min(values):.3f}-{max(values):.3f})"
                if values else "-")

    print("\n| code | case | setting | data s | fit s | SE s | rest s | **output s** | figures s "
          "| csv s | **output / rest** (min-max) | run s | **added** (min-max) "
          "| **added beside the fit** (min-max) | wall s "
          "| **added, process** (min-max) | **added, process, beside the fit** (min-max) "
          "| cpu s | others | files |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for setting in settings:
            for code in codes:
                rows = results[code][case][setting]
                ratios = [row["ratio"] for row in rows]
                more_s = spread(added(code, case, setting))
                wall_s = spread(added(code, case, setting, "wall"))
                beside_s = spread(added(code, case, setting, "beside"))
                process_beside_s = spread(added(code, case, setting, "process beside"))
                print(f"| {code} | {case} | {setting} | {med(rows, 'data_preparation'):.2f} | "
                      f"{med(rows, 'model_estimation'):.2f} | "
                      f"{med(rows, 'standard_error_computation'):.2f} | "
                      f"{med(rows, 'rest'):.2f} | **{med(rows, 'output'):.3f}** | "
                      f"{fmt(rows, 'figures')} | {fmt(rows, 'csv')} | "
                      f"**{statistics.median(ratios):.3f}** ({min(ratios):.3f}-{max(ratios):.3f}) | "
                      f"{med(rows, 'run'):.2f} | {more_s} | {beside_s} | "
                      f"{med(rows, 'wall'):.2f} | {wall_s} | {process_beside_s} | "
                      f"{med(rows, 'cpu'):.2f} | {max(row['others'] or 0.0 for row in rows):.2f} | "
                      f"{len(rows[0]['files'])} |")
    if args.json:
        args.json.write_text(json.dumps({"n": n, "machine": info, "results": results}, indent=1))


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--")
        child(sys.argv[i + 1:], "--child-profile" in sys.argv[:i])
    else:
        sys.path.insert(0, str(ROOT))
        main()
