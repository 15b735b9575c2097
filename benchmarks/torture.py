#!/usr/bin/env python
"""Torture test for crash/resume: SIGKILL a run at random moments, rerun it, compare.

Runs a command (by default ``scripts/02_run_estimation.py``) once without interruption in
its own folder (the reference), then again in fresh folders where it is SIGKILLed -- the
whole process group: driver, forkserver, workers, resource tracker -- after a random delay,
and restarted after every kill until a run completes.  ``--kills N`` kills are made in all;
when a run completes before its kill, its folder is compared and the next kills go to a
new folder (a new *cycle*).  At the end it checks:

* **resumes**: every run exits 0 or by our SIGKILL; any other exit is a failed resume;
* **outputs** of every completed cycle against the reference: ``estimates.csv``,
  ``covariance.csv`` and ``report.md`` byte for byte, ``fit.json`` equal after removing
  wall-clock fields (``seconds`` and keys like ``*_time``, ``elapsed``, ``duration``;
  recursively), key order included (a diff excerpt is printed for a mismatch);
* **processes**: every run starts in a new session (``start_new_session=True``), and its
  descendants are sampled while it runs; after it ends nothing of that session and none of
  those descendants may stay alive (after ``--grace`` seconds for orphans to die);
  survivors are reported, then killed;
* **temporary files**: no ``.tmp-*`` under the run folders (progress and results); nothing
  left in the runs' own ``TMPDIR`` (a folder of the work folder; e.g. multiprocessing's
  ``pymp-*``); no ``em-*`` file in ``/dev/shm`` left by our runs: one named
  ``em-{kind}-{pid}-...`` (task files, semaphore records) whose pid is one of our runs'
  processes, or an ``em-task-*`` without a pid in its name that was last written while one
  of our runs was alive; and no other file of ``/dev/shm`` that a run's driver had mapped
  (sampled from ``/proc/PID/maps`` while it ran: multiprocessing's semaphores ``sem.mp-*``);
* the progress file, when there is one, says ``completed``.

The delay before each kill is drawn from ``numpy.random.default_rng(--seed)``, uniform
between ``--min-delay`` and ``--max-delay`` (default: the reference run's duration, lowered
to the duration of any later uninterrupted run that completed before its kill, so a
reference slowed by a busy machine does not waste cycles), so a failing torture run can be
replayed with the same seed (the same fractions of that range; where they land in the work
still depends on the machine's speed; every run's delay and exit are in ``--report-json``).
Exit 0 when every check passes, 1 on any failure, 2 on a reference run that fails; bad
usage exits 2 too (argparse) or with a one-line message.

Usage::

    python benchmarks/torture.py                              # 20 kills, gmm, se all
    python benchmarks/torture.py --kills 300 --workers 2 --save-interval 0 --seed 7 --snapshot
    python benchmarks/torture.py --kills 40 --kill-mode mixed --workers 2   # driver-only kills too
    python benchmarks/torture.py --kills 50 -- --model lca --components 2 --se-method all \\
        --n-starts 3 --n-bootstrap 30        # data generated into the work folder
    python benchmarks/torture.py --kills 5 --keep --work-dir /tmp/t   # keep the folders

Options: ``--kills N``, ``--seed S``, ``--workers W`` and ``--save-interval X`` (passed to
the command); ``--kill-mode group|main|mixed`` (``main``: SIGKILL the driver only, so its
workers must notice and go by themselves; ``mixed``: either, drawn at random);
``--min-delay``/``--max-delay``; ``--grace`` (seconds given to orphans, default 5);
``--keep`` and ``--work-dir``; ``--snapshot`` (run a copy of ``src/`` and the script made at
the start, for a checkout that others edit meanwhile); ``--report-json PATH``; ``--script
PATH`` (another script, run with this Python); ``--ignore-key K`` (another fit.json key to
ignore); ``--quiet``.  Everything after ``--`` is the command's own arguments (default
``--n-starts 3 --se-method all --n-bootstrap 30`` on the built-in data); with
``--model lca`` and no ``--data``, a small latent-class data file is generated into the
work folder.  ``--task-name``, ``--progress-dir`` and ``--output-dir`` among them are
honoured when relative (each run has its own folder).
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import difflib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCRIPT = ROOT / "scripts" / "02_run_estimation.py"
DEFAULT_ARGS = ["--n-starts", "3", "--se-method", "all", "--n-bootstrap", "30"]
LCA_ARGS = ["--components", "2"]
BYTE_FILES = ("estimates.csv", "covariance.csv", "report.md")
JSON_FILE = "fit.json"
#: fit.json keys that hold wall-clock values (removed before comparing), besides --ignore-key
TIMING_KEY = re.compile(r"(?:^|_)(?:seconds|secs|elapsed|duration|walltime|time|times|"
                        r"timestamp|date|at)$")
#: the pipeline's files in /dev/shm: em-{kind}-{pid}-{random}.{pkl,json} (kind: task, part,
#: sems), or the earlier em-task-{random}.pkl without the creator's pid
TASK_FILE = re.compile(r"^em-(?:[a-z]+-(\d+)-.*|task-.*)$")
SHM_DIRS = [d for d in ("/dev/shm",) if os.path.isdir(d)]


class UsageError(Exception):
    """Bad options: one sentence, exit 2."""


# ----------------------------------------------------------------------------- records
@dataclasses.dataclass
class Run:
    cycle: int
    number: int                       # within the cycle, from 1
    pid: int
    started: float                    # time.time()
    delay: float | None               # None: allowed to complete
    ended: float = 0.0
    rc: int | None = None
    killed: bool = False
    mode: str = "group"               # what a kill hits: the process group or the driver
    where: str = ""                   # phase the progress file named at the kill
    stderr_tail: str = ""


@dataclasses.dataclass
class Report:
    command: list[str]
    seed: int
    kills_wanted: int
    kill_mode: str
    grace: float = 5.0
    reference_seconds: float = 0.0
    delay_range: tuple[float, float] = (0.0, 0.0)
    kills: int = 0
    restarts: int = 0
    runs: int = 0
    cycles: int = 0
    cycles_compared: int = 0
    kill_points: dict[str, int] = dataclasses.field(default_factory=dict)
    kills_by_mode: dict[str, int] = dataclasses.field(default_factory=dict)
    failed_resumes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mismatches: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    processes_left: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    temp_files_left: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    other_failures: list[str] = dataclasses.field(default_factory=list)
    ignored_keys: list[str] = dataclasses.field(default_factory=list)
    orphan_seconds: float = 0.0       # longest wait for a run's processes to go (all went)
    runs_log: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    machine: str = ""
    load_before: str = ""
    load_after: str = ""

    @property
    def ok(self) -> bool:
        return not (self.failed_resumes or self.mismatches or self.processes_left
                    or self.temp_files_left or self.other_failures)


# ----------------------------------------------------------------------------- helpers
def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _option(args: list[str], name: str) -> str | None:
    """The last value of ``--name v`` / ``--name=v`` in ``args``."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def write_lca_data(path: Path, n: int = 400, seed: int = 20240607) -> None:
    """A small two-class latent-class data set: 6 items with 2-3 categories, a few missing."""
    rng = np.random.default_rng(seed)
    z = rng.random(n) < 0.4
    sizes = [2, 3, 2, 3, 2, 2]
    lines = [",".join(f"item{j + 1}" for j in range(len(sizes)))]
    probs = [(rng.dirichlet(np.ones(c) * 2), rng.dirichlet(np.ones(c) * 2)) for c in sizes]
    for i in range(n):
        row = []
        for j, c in enumerate(sizes):
            if rng.random() < 0.03 and j > 0:
                row.append("")
            else:
                row.append(str(1 + rng.choice(c, p=probs[j][int(z[i])])))
        lines.append(",".join(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def strip_timing(obj: Any, extra: set[str], removed: set[str]) -> Any:
    """``obj`` without wall-clock keys (recursively); key order kept."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in extra or TIMING_KEY.search(k):
                removed.add(k)
                continue
            out[k] = strip_timing(v, extra, removed)
        return out
    if isinstance(obj, list):
        return [strip_timing(v, extra, removed) for v in obj]
    return obj


def _diff(want: str, got: str, name: str, limit: int = 30) -> str:
    lines = list(difflib.unified_diff(want.splitlines(), got.splitlines(),
                                      f"reference/{name}", f"resumed/{name}", lineterm="", n=1))
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def _order_differs(a: Any, b: Any) -> bool:
    """True if some object holds its common keys in a different order in ``a`` and ``b``."""
    if isinstance(a, dict) and isinstance(b, dict):
        common = [k for k in a if k in b]
        if common != [k for k in b if k in a]:
            return True
        return any(_order_differs(a[k], b[k]) for k in common)
    if isinstance(a, list) and isinstance(b, list):
        return any(_order_differs(x, y) for x, y in zip(a, b))
    return False


def compare_outputs(ref: Path, got: Path, extra_keys: set[str], removed: set[str]) -> list[dict[str, Any]]:
    """Mismatches between two results folders (empty list: identical)."""
    out = []
    for name in (*BYTE_FILES, JSON_FILE):
        a, b = ref / name, got / name
        if not a.exists() and not b.exists():
            continue
        if a.exists() != b.exists():
            out.append({"file": name, "diff": f"{'missing' if not b.exists() else 'extra'} in the resumed run"})
            continue
        wa, wb = a.read_bytes(), b.read_bytes()
        if name == JSON_FILE:
            try:
                ja = strip_timing(json.loads(wa), extra_keys, removed)
                jb = strip_timing(json.loads(wb), extra_keys, removed)
            except ValueError as exc:
                out.append({"file": name, "diff": f"not JSON: {exc}"})
                continue
            ta, tb = json.dumps(ja, indent=2), json.dumps(jb, indent=2)
            if ta == tb:
                continue
            if ja == jb:
                out.append({"file": name, "diff": "(same content, different key order)\n"
                            + _diff(ta, tb, name)})
            else:  # content differs: diff with sorted keys, so the order does not hide it
                sa, sb = json.dumps(ja, indent=2, sort_keys=True), json.dumps(jb, indent=2, sort_keys=True)
                order = " (key order differs too)" if _order_differs(ja, jb) else ""
                out.append({"file": name, "diff": f"(content differs; keys sorted for the diff){order}\n"
                            + _diff(sa, sb, name)})
        elif wa != wb:
            out.append({"file": name, "diff": _diff(wa.decode("utf-8", "replace"),
                                                    wb.decode("utf-8", "replace"), name)})
    return out


def _proc_info(p: psutil.Process) -> dict[str, Any]:
    try:
        with p.oneshot():
            return {"pid": p.pid, "ppid": p.ppid(), "name": p.name(),
                    "cmdline": " ".join(p.cmdline())[:200], "status": p.status()}
    except psutil.Error:
        return {"pid": p.pid}


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Watch:
    """The processes of one run: its session, and every descendant seen while it ran."""

    def __init__(self, pid: int) -> None:
        self.sid = pid  # start_new_session=True: session id = process group id = pid
        self.seen: dict[tuple[int, float], psutil.Process] = {}
        self.shm: set[str] = set()
        self.root = psutil.Process(pid)

    def sample(self) -> None:
        try:  # named shared memory the driver maps (multiprocessing's semaphores: sem.mp-*)
            with open(f"/proc/{self.root.pid}/maps", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        self.shm.add(line[i:].split(" (deleted)")[0].strip())
        except OSError:
            pass
        try:
            for c in self.root.children(recursive=True):
                try:
                    key = (c.pid, c.create_time())
                except psutil.Error:
                    continue
                self.seen.setdefault(key, c)
        except psutil.Error:
            pass

    @property
    def pids(self) -> set[int]:
        return {self.sid} | {pid for pid, _ in self.seen}

    def survivors(self) -> list[psutil.Process]:
        found = {p.pid: p for p in self.seen.values() if _alive(p)}
        for pid in psutil.pids():
            if pid in found or pid == os.getpid():
                continue
            try:
                if os.getsid(pid) == self.sid:
                    p = psutil.Process(pid)
                    if _alive(p):
                        found[pid] = p
            except (OSError, psutil.Error):
                continue
        return list(found.values())


# ----------------------------------------------------------------------------- torture
class Torture:
    def __init__(self, opts: argparse.Namespace, cmd_args: list[str]) -> None:
        self.opts = opts
        args = list(cmd_args) if cmd_args else list(DEFAULT_ARGS)
        for flag in ("--progress-dir", "--output-dir"):
            value = _option(args, flag)
            if value is not None and Path(value).is_absolute():
                raise UsageError(f"{flag} must be relative (each run has its own folder)")
        script = Path(opts.script).resolve() if opts.script else DEFAULT_SCRIPT
        if not script.is_file():
            raise UsageError(f"no script {script}")
        if opts.snapshot and ROOT not in script.parents:
            raise UsageError(f"--snapshot needs a script inside {ROOT}")
        if opts.work_dir:
            self.work = Path(opts.work_dir).resolve()
            if self.work.exists() and any(self.work.iterdir()):
                raise UsageError(f"the work folder {self.work} is not empty")
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix="torture-"))
        if _option(args, "--model") == "lca" and _option(args, "--data") is None:
            data = self.work / "data" / "lca.csv"
            write_lca_data(data)
            args += ["--data", str(data)]
            if _option(args, "--components") is None:
                args += LCA_ARGS
        if opts.workers is not None:
            args += ["--workers", str(opts.workers)]
        if opts.save_interval is not None:
            args += ["--save-interval", str(opts.save_interval)]
        self.task = _option(args, "--task-name") or "main_estimation"
        self.progress_dir = _option(args, "--progress-dir") or "progress"
        self.output_dir = _option(args, "--output-dir") or f"results/{self.task}"
        if opts.snapshot:  # every run, the reference too, uses this copy of the code
            script = self._snapshot(script)
        self.command = [sys.executable, str(script), *args]
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("EM_PIPELINE_FAULT", "LANGUAGE", "LC_ALL")}
        self.tmp = self.work / "tmp"  # the runs' TMPDIR: what they leave there is theirs
        self.tmp.mkdir()
        self.env.update(LANG="C.UTF-8", PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(self.tmp))
        self.rng = np.random.default_rng(opts.seed)
        self.report = Report(command=self.command, seed=opts.seed, kills_wanted=opts.kills,
                             kill_mode=opts.kill_mode, grace=opts.grace, machine=_machine())
        self.runs: list[Run] = []
        self.our_pids: set[int] = set()
        self.our_shm: set[str] = set()
        self.live: dict[int, subprocess.Popen] = {}
        self.removed_keys: set[str] = set()
        self.started = time.time()

    def _snapshot(self, script: Path) -> Path:
        """Copy ``src/`` and the script's folder into the work folder; the copied script."""
        rel = script.relative_to(ROOT)
        code = self.work / "code"
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "src", code / "src", ignore=skip)
        if rel.parts[0] != "src":
            shutil.copytree(ROOT / rel.parts[0], code / rel.parts[0], ignore=skip, dirs_exist_ok=True)
        # compiled once here: the runs write no bytecode (PYTHONDONTWRITEBYTECODE) and would
        # otherwise compile every module at every start
        compileall.compile_dir(str(code), quiet=1)
        return code / rel

    def log(self, msg: str) -> None:
        if not self.opts.quiet:
            print(msg, flush=True)

    # -- one run ------------------------------------------------------------------
    def _start(self, cwd: Path, label: str) -> tuple[subprocess.Popen, Watch]:
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{label}.out", "wb") as out, open(logs / f"{label}.err", "wb") as err:
            proc = subprocess.Popen(self.command, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
        self.live[proc.pid] = proc
        self.our_pids.add(proc.pid)
        return proc, Watch(proc.pid)

    def _kill(self, proc: subprocess.Popen, mode: str) -> None:
        try:
            if mode == "group":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _wait(self, proc: subprocess.Popen, watch: Watch, delay: float | None,
              mode: str = "group") -> bool:
        """Sample descendants until the run ends or ``delay`` passes; True if we killed it."""
        t0 = time.monotonic()
        limit = delay if delay is not None else self.opts.run_timeout
        while True:
            watch.sample()
            if proc.poll() is not None:
                return False
            left = t0 + limit - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.05, left))
        self._kill(proc, mode if delay is not None else "group")
        proc.wait()
        if delay is None:  # a run allowed to complete that did not: hung
            self.report.other_failures.append(
                f"a run did not complete within {self.opts.run_timeout:.0f} s (killed): {watch.sid}")
            return True
        return True

    def _check_processes(self, watch: Watch, label: str) -> None:
        t0 = time.monotonic()
        while True:
            left = watch.survivors()
            if not left or time.monotonic() > t0 + self.opts.grace:
                break
            time.sleep(0.1)
        if not left:  # how long the slowest orphans took to go
            self.report.orphan_seconds = max(self.report.orphan_seconds, time.monotonic() - t0)
        self.our_pids |= watch.pids
        self.our_shm |= watch.shm
        for p in left:
            info = _proc_info(p)
            info["run"] = label
            self.report.processes_left.append(info)
            try:
                p.kill()  # ours: started by the run we started
            except psutil.Error:
                pass

    def _where(self, cwd: Path, started: float) -> str:
        """Where the kill landed, from the progress file: the phase it names (and whether
        inside it, at a checkpoint), or start-up when this run had written nothing yet."""
        path = cwd / self.progress_dir / f"{self.task}_progress.json"
        try:
            if path.stat().st_mtime < started:
                return "start-up (before this run's first write)"
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "start-up (no progress file yet)"
        except (OSError, ValueError):
            return "unreadable progress file"
        phase = doc.get("current_phase") or "none"
        ck = doc.get("checkpoint") or {}
        return f"{phase}{' (checkpoint)' if ck.get('phase') == phase else ''}"

    def run_once(self, cwd: Path, cycle: int, number: int, delay: float | None,
                 mode: str = "group") -> Run:
        label = f"cycle{cycle:03d}-run{number:03d}" if cycle else "reference"
        proc, watch = self._start(cwd, label)
        run = Run(cycle=cycle, number=number, pid=proc.pid, started=time.time(), delay=delay,
                  mode=mode)
        try:
            killed = self._wait(proc, watch, delay, mode)
        finally:
            self.live.pop(proc.pid, None)
        run.ended = time.time()
        run.rc = proc.returncode
        run.killed = killed and run.rc == -signal.SIGKILL
        if run.killed and delay is not None:
            run.where = self._where(cwd, run.started)
        err = (self.work / "logs" / f"{label}.err").read_text(encoding="utf-8", errors="replace")
        run.stderr_tail = "\n".join(err.strip().splitlines()[-8:])
        self._check_processes(watch, label)
        self.runs.append(run)
        self.report.runs_log.append({
            "run": label, "delay": delay, "mode": mode if delay is not None else None,
            "exit": run.rc, "seconds": round(run.ended - run.started, 3),
            "killed_at": run.where or None})
        return run

    # -- checks -------------------------------------------------------------------
    def _check_tmp(self, cwd: Path, label: str) -> None:
        for path in sorted(cwd.rglob(".tmp-*")):
            self.report.temp_files_left.append({"path": str(path), "run": label,
                                                "why": "temporary file in the run folder"})
        progress = cwd / self.progress_dir / f"{self.task}_progress.json"
        if progress.exists():
            try:
                status = json.loads(progress.read_text(encoding="utf-8")).get("status")
            except (OSError, ValueError) as exc:
                status = f"unreadable ({exc})"
            if status != "completed":
                self.report.other_failures.append(f"{label}: progress file status {status!r} after completion")

    def _check_task_files(self) -> None:
        for path in sorted(self.tmp.iterdir()):
            self.report.temp_files_left.append(
                {"path": str(path), "why": "left in the runs' TMPDIR"
                 + (" (a multiprocessing folder)" if path.name.startswith("pymp-") else "")})
        for path in sorted(self.our_shm):
            if os.path.exists(path) and not TASK_FILE.match(os.path.basename(path)):
                self.report.temp_files_left.append(
                    {"path": path, "why": "shared memory mapped by one of our runs"})
        spans = [(r.started - 0.5, r.ended + 0.5) for r in self.runs]
        for folder in SHM_DIRS:
            for path in sorted(Path(folder).glob("em-*")):
                m = TASK_FILE.match(path.name)
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                if m and m.group(1):
                    if int(m.group(1)) in self.our_pids:
                        self.report.temp_files_left.append(
                            {"path": str(path), "why": f"file of our process {m.group(1)}"})
                elif mtime >= self.started and any(a <= mtime <= b for a, b in spans):
                    self.report.temp_files_left.append(
                        {"path": str(path), "why": "task file (no pid in its name) last written "
                                                   "while one of our runs was alive"})

    # -- the whole test -----------------------------------------------------------
    def reference(self) -> Path:
        cwd = self.work / "reference"
        cwd.mkdir()
        run = self.run_once(cwd, 0, 0, None)
        self.report.reference_seconds = run.ended - run.started
        if run.rc != 0:
            raise RuntimeError(f"the uninterrupted reference run failed (exit {run.rc}):\n{run.stderr_tail}")
        self._check_tmp(cwd, "reference")
        return cwd / self.output_dir

    def torture(self, ref_out: Path) -> None:
        o, rep = self.opts, self.report
        hi = o.max_delay if o.max_delay is not None else rep.reference_seconds
        lo = min(o.min_delay, hi)
        rep.delay_range = (lo, hi)
        cycle = 0
        while rep.kills < o.kills:
            cycle += 1
            rep.cycles = cycle
            cwd = self.work / f"cycle{cycle:03d}"
            cwd.mkdir()
            number, failures = 0, 0
            while True:
                number += 1
                if number > 1:
                    rep.restarts += 1
                u = float(self.rng.random())  # drawn for every run: same seed, same fractions
                delay = lo + u * (hi - lo) if rep.kills < o.kills else None
                mode = o.kill_mode
                if mode == "mixed":
                    mode = "group" if self.rng.random() < 0.5 else "main"
                run = self.run_once(cwd, cycle, number, delay, mode)
                rep.runs += 1
                if run.killed and delay is not None:
                    rep.kills += 1
                    rep.kill_points[run.where] = rep.kill_points.get(run.where, 0) + 1
                    rep.kills_by_mode[mode] = rep.kills_by_mode.get(mode, 0) + 1
                    self.log(f"  kill {rep.kills}/{o.kills} ({mode}): cycle {cycle} run {number} "
                             f"after {delay:.2f} s, at {run.where}")
                    continue
                if run.rc == 0:
                    if number == 1 and delay is not None and o.max_delay is None:
                        # an uninterrupted run that beat its kill: runs are faster than the
                        # reference was (a loaded machine, cold caches); shorten the delays
                        hi = max(lo, min(hi, run.ended - run.started))
                        rep.delay_range = (rep.delay_range[0], hi)
                    break
                failures += 1
                rep.failed_resumes.append({"cycle": cycle, "run": number, "exit": run.rc,
                                           "stderr": run.stderr_tail})
                self.log(f"  FAILED run: cycle {cycle} run {number} exit {run.rc}")
                if failures >= 3 or delay is None:
                    break
            label = f"cycle{cycle:03d}"
            if run.rc == 0:
                rep.cycles_compared += 1
                for m in compare_outputs(ref_out, cwd / self.output_dir, set(o.ignore_key),
                                         self.removed_keys):
                    m["cycle"] = cycle
                    rep.mismatches.append(m)
                    self.log(f"  MISMATCH in cycle {cycle}: {m['file']}")
            self._check_tmp(cwd, label)
            self.log(f"cycle {cycle}: {number} runs, completed={run.rc == 0}")

    def cleanup(self) -> None:
        for pid, proc in list(self.live.items()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        self.live.clear()

    def run(self) -> Report:
        rep = self.report
        t0 = time.monotonic()
        rep.load_before = _load()
        try:
            self.log(f"torture: {' '.join(self.command)}\n  work folder {self.work}")
            ref_out = self.reference()
            self.log(f"reference run: {rep.reference_seconds:.2f} s")
            self.torture(ref_out)
            self._check_task_files()
        finally:
            self.cleanup()
            rep.seconds = time.monotonic() - t0
            rep.load_after = _load()
            rep.ignored_keys = sorted(self.removed_keys)
            if not self.opts.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        return rep


# ----------------------------------------------------------------------------- report
def render(rep: Report, work: Path, keep: bool) -> str:
    lines = [
        "== Torture test " + ("PASSED" if rep.ok else "FAILED"),
        f"command: {' '.join(rep.command[1:])}",
        f"seed {rep.seed}, kill mode {rep.kill_mode}, delays uniform({rep.delay_range[0]:.2f}, "
        f"{rep.delay_range[1]:.2f}) s at the end; reference run {rep.reference_seconds:.2f} s",
        f"kills: {rep.kills} (asked {rep.kills_wanted}"
        + "".join(f"; {k} {v}" for k, v in sorted(rep.kills_by_mode.items())) + f"); restarts: {rep.restarts}; runs: {rep.runs}; "
        f"cycles: {rep.cycles} ({rep.cycles_compared} completed and compared)",
        "kills landed at (progress file after the kill): " + (", ".join(f"{k} {v}" for k, v in sorted(rep.kill_points.items())) or "-"),
        f"fit.json keys ignored as wall-clock: {', '.join(rep.ignored_keys) or '-'}",
        f"failed resumes: {len(rep.failed_resumes)}",
    ]
    for f in rep.failed_resumes:
        lines.append(f"  cycle {f['cycle']} run {f['run']}: exit {f['exit']}\n    "
                     + f["stderr"].replace("\n", "\n    "))
    lines.append(f"mismatching files: {len(rep.mismatches)}")
    for m in rep.mismatches[:10]:
        lines.append(f"  cycle {m['cycle']}: {m['file']}\n    " + m["diff"].replace("\n", "\n    "))
    if len(rep.mismatches) > 10:
        lines.append(f"  ... and {len(rep.mismatches) - 10} more")
    lines.append(f"processes left: {len(rep.processes_left)} (after up to {rep.grace:.1f} s; "
                 f"the slowest run's processes that did go took {rep.orphan_seconds:.1f} s)")
    for p in rep.processes_left[:20]:
        lines.append(f"  {p.get('run')}: pid {p['pid']} {p.get('name', '')} {p.get('cmdline', '')}")
    lines.append(f"temporary files left: {len(rep.temp_files_left)}")
    for f in rep.temp_files_left[:20]:
        lines.append(f"  {f['path']} ({f['why']})")
    for f in rep.other_failures:
        lines.append(f"other failure: {f}")
    lines.append(f"time {rep.seconds:.1f} s; load average {rep.load_before} -> {rep.load_after}; "
                 f"{rep.machine}; {time.strftime('%Y-%m-%d')}")
    if keep:
        lines.append(f"folders kept in {work}")
    elif not rep.ok:
        lines.append("rerun with the same --seed and --keep to inspect the folders")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torture.py", description="SIGKILL a run at random moments, resume it, compare with "
        "an uninterrupted run; check no process or temporary file is left.",
        epilog="Arguments after -- go to the command (default: " + " ".join(DEFAULT_ARGS) + ").")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in all (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays (default 0)")
    p.add_argument("--workers", type=int, help="passed to the command as --workers")
    p.add_argument("--save-interval", type=float, help="passed to the command as --save-interval")
    p.add_argument("--kill-mode", choices=["group", "main", "mixed"], default="group",
                   help="SIGKILL the whole process group (default), the driver process only, "
                        "or either at random")
    p.add_argument("--min-delay", type=float, default=0.1, help="shortest delay before a kill (s)")
    p.add_argument("--max-delay", type=float, help="longest delay (default: the reference run's time)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds orphans get to die (default 5)")
    p.add_argument("--run-timeout", type=float, default=600.0, help="limit for a run allowed to complete")
    p.add_argument("--keep", action="store_true", help="keep the work folder for inspection")
    p.add_argument("--snapshot", action="store_true",
                   help="run a copy of src/ and the script made at the start (a checkout that "
                        "others edit meanwhile cannot change the code between runs)")
    p.add_argument("--work-dir", help="work folder (default: a new temporary folder)")
    p.add_argument("--script", help="the script to torture (default scripts/02_run_estimation.py)")
    p.add_argument("--ignore-key", action="append", default=[], help="another fit.json key to ignore")
    p.add_argument("--report-json", help="also write the report as JSON here")
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd_args = argv[:i], argv[i + 1:]
    opts = build_parser().parse_args(argv)
    if opts.kills < 0 or opts.min_delay < 0 or opts.grace < 0:
        print("torture: --kills, --min-delay and --grace must not be negative", file=sys.stderr)
        return 2
    try:
        t = Torture(opts, cmd_args)
    except UsageError as exc:
        print(f"torture: {exc}", file=sys.stderr)
        return 2
    try:
        rep = t.run()
    except RuntimeError as exc:
        print(f"torture: {exc}", file=sys.stderr)
        return 2
    print(render(rep, t.work, opts.keep), flush=True)
    if opts.report_json:
        data = dataclasses.asdict(rep)
        data["ok"] = rep.ok
        Path(opts.report_json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
