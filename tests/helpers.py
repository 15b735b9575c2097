"""Shared helpers for tests that run the scripts as real subprocesses.

Every run gets its own working directory (a pytest ``tmp_path``), ``sys.executable`` and
the real script path, a clean environment (English messages, no fault injected unless
asked) and a timeout.  Reference runs that several tests compare against are made once per
test session and copied, never shared in place.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "02_run_estimation.py"
MANAGE = ROOT / "scripts" / "manage_progress.py"
TASK = "main_estimation"

#: small, fast settings every full run uses (built-in Old Faithful data)
FAST = ("--n-starts", "2")
#: the configuration whose crash/resume behaviour is compared byte for byte
ALL_SE = FAST + ("--se-method", "all", "--n-bootstrap", "20", "--save-interval", "0")
#: the same with --debug, so the progress writes of each phase can be counted in stderr
ALL_SE_DEBUG = ALL_SE + ("--debug",)


def script_env(*, fault: str | None = None, lang: str = "C.UTF-8",
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a scripted run: LANG fixed, fault hook only when asked."""
    env = {k: v for k, v in os.environ.items() if k not in ("EM_PIPELINE_FAULT", "LANGUAGE", "LC_ALL")}
    env["LANG"] = lang
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if fault is not None:
        env["EM_PIPELINE_FAULT"] = fault
    if extra:
        env.update(extra)
    return env


def run_script(cwd: Path, *args: str, fault: str | None = None, lang: str = "C.UTF-8",
               script: Path = SCRIPT, timeout: float = 180,
               env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``script args`` in ``cwd`` and wait; stdout/stderr captured as text."""
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env=script_env(fault=fault, lang=lang, extra=env_extra))


def run_manage(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_script(cwd, *args, script=MANAGE, timeout=timeout)


def start_script(cwd: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    """Start the main script without waiting (for external signals and lock tests)."""
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=script_env(fault=fault))


def start_driver(folder: Path, source: str) -> tuple[subprocess.Popen, Any]:
    """Run ``source`` (a Python script that prints the pid of a process it started, then
    waits) from ``folder``; the script's process and that child (a ``psutil.Process``,
    checked to be the script's child).  The caller kills the script (and closes its
    stdout)."""
    import psutil

    script = folder / "driver.py"
    script.write_text(source)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(proc.stdout.readline()))
        assert child.ppid() == proc.pid
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise
    return proc, child


def progress_path(cwd: Path, task: str = TASK, progress_dir: str = "progress") -> Path:
    return Path(cwd) / progress_dir / f"{task}_progress.json"


def read_progress(cwd: Path, task: str = TASK, progress_dir: str = "progress") -> dict[str, Any]:
    return json.loads(progress_path(cwd, task, progress_dir).read_text(encoding="utf-8"))


def write_progress(cwd: Path, doc: dict[str, Any], task: str = TASK,
                   progress_dir: str = "progress") -> None:
    """Write ``doc`` as the task's progress file with a correct checksum (a forged file that
    is well formed, as an editor or another program could leave it)."""
    from src.progress.document import serialise

    body = {k: v for k, v in doc.items() if k != "checksum"}
    progress_path(cwd, task, progress_dir).write_bytes(serialise(body))


def try_read_progress(path: Path) -> dict[str, Any] | None:
    """The progress JSON, or None while it does not exist yet (writes are atomic)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60, proc: subprocess.Popen | None = None,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc={proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL a process we started (if still running) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def results_dir(cwd: Path, task: str = TASK) -> Path:
    return Path(cwd) / "results" / task


def strip_timings(obj: Any) -> Any:
    """A JSON value with every ``seconds`` entry removed (timings differ between runs)."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def fit_json(cwd: Path, task: str = TASK) -> dict[str, Any]:
    return json.loads((results_dir(cwd, task) / "fit.json").read_text(encoding="utf-8"))


#: fit.json's wall-clock values: ``"seconds": 1.25`` (any key ending in ``seconds``)
_TIMING = re.compile(r'("[A-Za-z_]*seconds"\s*:\s*)(-?[0-9][0-9.eE+-]*|NaN|-?Infinity|null)')


def blank_timings(text: str) -> str:
    """``fit.json``'s text with every wall-clock value replaced by ``_`` (bytes otherwise kept)."""
    return _TIMING.sub(r"\1_", text)


def _diff(name: str, got: str, want: str) -> str:
    lines = difflib.unified_diff(want.splitlines(), got.splitlines(), "reference", "resumed",
                                 lineterm="", n=1)
    return f"{name} differs:\n" + "\n".join(list(lines)[:60])


def assert_same_results(run_dir: Path, ref_dir: Path, task: str = TASK, *,
                        same_language: bool = True) -> None:
    """estimates.csv, covariance.csv, report.md and report.html byte-identical, fit.json
    byte-identical but for its wall-clock values (so key order and number formatting are
    checked too).  ``same_language=False`` (the report written in another --lang): of the
    reports, only report.md's table rows are compared."""
    got_dir, want_dir = results_dir(run_dir, task), results_dir(ref_dir, task)
    reports = ("report.md", "report.html") if same_language else ()
    for name in ("estimates.csv", "covariance.csv", *reports):
        want_file = want_dir / name
        if not want_file.exists():
            assert not (got_dir / name).exists(), f"{name} was written, the reference has none"
            continue
        got, want = (got_dir / name).read_bytes(), want_file.read_bytes()
        assert got == want, _diff(name, got.decode(), want.decode())
    if not same_language:
        rows = []
        for d in (got_dir, want_dir):
            lines = (d / "report.md").read_text(encoding="utf-8").splitlines()
            # the tables' rows of numbers; their headers are in the report's language
            rows.append([ln for ln, nxt in zip(lines, [*lines[1:], ""])
                         if ln.startswith("| ") and not nxt.startswith("|---")])
        assert rows[0] == rows[1] and rows[1], _diff("report.md's tables", *map("\n".join, rows))
    got = blank_timings((got_dir / "fit.json").read_text(encoding="utf-8"))
    want = blank_timings((want_dir / "fit.json").read_text(encoding="utf-8"))
    if not same_language:  # the fingerprint names the report's language
        got, want = (re.sub(r'"report_language": "\w+"', '"report_language": _', x)
                     for x in (got, want))
    assert got == want, _diff("fit.json", got, want)


def assert_one_sentence(stderr: str) -> None:
    """The user-facing error contract: one line, no traceback."""
    text = stderr.strip()
    assert text, "expected an error message on stderr"
    assert "Traceback" not in stderr, stderr
    assert "\n" not in text, f"expected one sentence, got:\n{stderr}"


def check_rc(proc: subprocess.CompletedProcess, expected: int) -> None:
    assert proc.returncode == expected, (
        f"exit {proc.returncode}, expected {expected}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


_REFERENCES: dict[tuple[str, ...], tuple[Path, subprocess.CompletedProcess]] = {}


def reference_run(base: Path, args: Sequence[str]) -> Path:
    """An uninterrupted run of ``args``, made once per session under ``base``; returns its folder."""
    return reference_proc(base, args)[0]


def reference_proc(base: Path, args: Sequence[str]) -> tuple[Path, subprocess.CompletedProcess]:
    """Like :func:`reference_run`, with the finished process (its output) too."""
    key = tuple(args)
    if key not in _REFERENCES:
        Path(base).mkdir(parents=True, exist_ok=True)
        # a folder of its own even when an earlier reference run failed and left its folder
        folder = Path(tempfile.mkdtemp(prefix=f"ref{len(_REFERENCES)}-", dir=base))
        proc = run_script(folder, *args)
        check_rc(proc, 0)
        _REFERENCES[key] = (folder, proc)
    return _REFERENCES[key]


def writes_in_phase(stderr: str, phase: str) -> int:
    """Progress writes made while ``phase`` was current, counted from ``--debug`` output."""
    return len(re.findall(rf"progress written: phase={re.escape(phase)} ", stderr))


def copy_run(src: Path, dst: Path, *, results: bool = True) -> None:
    """Copy a run's progress (and results) folders into another working directory."""
    shutil.copytree(Path(src) / "progress", Path(dst) / "progress", dirs_exist_ok=True)
    if results and (Path(src) / "results").exists():
        shutil.copytree(Path(src) / "results", Path(dst) / "results", dirs_exist_ok=True)


def skip_line(phase: str, lang: str = "en") -> str:
    if lang == "zh":
        return f"阶段 '{phase}' 已完成，跳过执行"
    return f"Phase '{phase}' already completed, skipping"


def run_files(folder: Path) -> dict[str, bytes]:
    """Every file of a results folder (subfolders included), fit.json's timings blanked
    and manifests by name only (they hold fit.json's SHA-256, timings included)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "fit.json":
                data = blank_timings(data.decode()).encode()
            elif path.name == "manifest.json":
                data = b""
            out[str(path.relative_to(folder))] = data
    return out


def assert_same_files(got: Path, want: Path) -> None:
    """The same result files, byte for byte (fit.json but for timings)."""
    a, b = run_files(got), run_files(want)
    assert sorted(a) == sorted(b)
    for name in b:
        assert a[name] == b[name], f"{name} differs"
