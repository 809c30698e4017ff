#!/usr/bin/env python3
"""make mutate: break one line of an important behaviour, check that a unit test notices.

Each mutation in tools/mutations.toml names a file, the exact text of one of its lines, what
that line becomes, and the behaviour the change breaks.  For each one this script copies the
tree (titan/, tests/, tools/) into a temporary directory -- the checkout itself is never
edited: other people work in it -- applies the change there and runs the unit tests against
the copy (PYTHONPATH=<copy> trial --exitfirst <modules>).  A mutation is

  KILLED    a test failed (the table names the first one), or the run outlived its timeout
  SURVIVED  every test passed: nothing checks that behaviour
  STALE     its line is not in the file exactly once: the list no longer matches the code
  INVALID   the changed file does not compile (a kill by SyntaxError would prove nothing)

and the exit status is 1 if any survived, is stale or invalid (2: the list or the options are
wrong, or the unmutated tree fails its own tests).  Standard library only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

try:
    import tomllib
except ImportError:  # Python 3.10: the list is TOML, read by the standard library from 3.11
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIST = ROOT / "tools" / "mutations.toml"
COPIED = ("titan", "tests", "tools")  # tools/: tests/unit/test_mutate.py loads this script
DEFAULT_TESTS = ("tests.unit",)
DEFAULT_TIMEOUT = 120.0

KILLED, SURVIVED, STALE, INVALID = "KILLED", "SURVIVED", "STALE", "INVALID"
FAILING = (SURVIVED, STALE, INVALID)

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KEYS = {"id", "file", "breaks", "find", "replace", "tests", "timeout"}
_REQUIRED = ("id", "file", "breaks", "find", "replace")


class ListError(ValueError):
    """The list of mutations is not well formed (the message says where)."""


class Stale(Exception):
    """A mutation's line is not in its file exactly once."""


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to the tree, e.g. titan/core/scheduler.py
    breaks: str  # the behaviour the change breaks, in words
    find: str  # the whole text of one line (surrounding whitespace ignored)
    replace: str  # what that line becomes (the line's indentation is kept)
    tests: tuple[str, ...] = DEFAULT_TESTS
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Result:
    mutation: Mutation
    status: str
    line: Optional[int] = None
    by: Optional[str] = None  # the first failing test, for KILLED
    note: str = ""
    seconds: float = 0.0
    output: str = field(default="", repr=False)


# -- the list ------------------------------------------------------------------------------

def parse_list(text: str, source: str = "mutations.toml") -> list[Mutation]:
    """The mutations of a TOML list: `[[mutation]]` tables, and `[groups]` of test modules
    that a mutation's `tests` names as "@group" (see docs/testing.md)."""
    if tomllib is None:
        raise ListError("reading the list needs Python 3.11 or later (tomllib)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ListError(f"{source}: {e}") from None
    extra = set(data) - {"mutation", "groups"}
    if extra:
        raise ListError(f"{source}: unknown top-level key(s) {', '.join(sorted(extra))}")
    groups = data.get("groups", {})
    for name, modules in groups.items():
        if not isinstance(modules, list) or not modules or not all(
                isinstance(t, str) and _MODULE.match(t) for t in modules):
            raise ListError(f"{source}: group {name!r} is a list of dotted module names")
    items = data.get("mutation", [])
    if not isinstance(items, list) or not items:
        raise ListError(f"{source}: no [[mutation]] tables")
    seen: set[str] = set()
    out = []
    for n, item in enumerate(items, 1):
        where = f"{source}: mutation {item.get('id') or n}"
        unknown = set(item) - _KEYS
        if unknown:  # a misspelt key must not be silently ignored
            raise ListError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in _REQUIRED:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ListError(f"{where}: {key!r} is required (a non-empty string)")
        mid = item["id"]
        if not _ID.match(mid):
            raise ListError(f"{where}: an id is lower-case letters, digits and '-'")
        if mid in seen:
            raise ListError(f"{where}: the id is used twice")
        seen.add(mid)
        path = item["file"]
        if path.startswith("/") or ".." in Path(path).parts \
                or Path(path).parts[0] not in COPIED:
            raise ListError(f"{where}: 'file' is a path under {', '.join(COPIED)}")
        for key in ("find", "replace"):
            if "\n" in item[key].strip("\n"):
                raise ListError(f"{where}: {key!r} is one line")
        if item["find"].strip() == item["replace"].strip():
            raise ListError(f"{where}: 'replace' is the same as 'find'")
        tests = item.get("tests", list(DEFAULT_TESTS))
        if not isinstance(tests, list) or not tests or not all(
                isinstance(t, str) and (_MODULE.match(t) or t.startswith("@")) for t in tests):
            raise ListError(f"{where}: 'tests' is a list of dotted module names or @groups")
        expanded: list[str] = []
        for name in tests:
            if name.startswith("@") and name[1:] not in groups:
                raise ListError(f"{where}: no group {name[1:]!r} in [groups]")
            for module in groups[name[1:]] if name.startswith("@") else [name]:
                if module not in expanded:
                    expanded.append(module)
        timeout = item.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ListError(f"{where}: 'timeout' is a positive number of seconds")
        out.append(Mutation(id=mid, file=path, breaks=" ".join(item["breaks"].split()),
                            find=item["find"].strip(), replace=item["replace"].strip(),
                            tests=tuple(expanded), timeout=float(timeout)))
    return out


def load_list(path: Path) -> list[Mutation]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ListError(f"{path}: {e.strerror}") from None
    return parse_list(text, str(path))


# -- one mutation --------------------------------------------------------------------------

def apply(source: str, find: str, replace: str) -> tuple[str, int]:
    """`source` with its one line whose text is `find` replaced by `replace` (keeping that
    line's indentation), and the line's number.  Stale unless exactly one line matches."""
    lines = source.splitlines(keepends=True)
    want = find.strip()
    hits = [i for i, line in enumerate(lines) if line.strip() == want]
    if not hits:
        raise Stale("line not found")
    if len(hits) > 1:
        raise Stale(f"line found {len(hits)} times (lines "
                    f"{', '.join(str(i + 1) for i in hits)})")
    i = hits[0]
    old = lines[i]
    indent = old[:len(old) - len(old.lstrip())]
    ending = old[len(old.rstrip("\r\n")):]
    lines[i] = indent + replace.strip() + ending
    return "".join(lines), i + 1


def first_failure(output: str) -> Optional[str]:
    """The first test trial reports as [FAIL] or [ERROR] in its summary.

    A block is the flag, the traceback, a blank line, then the test ids, up to a line of
    '=' or '-'."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        flag = line.strip()
        if flag not in ("[FAIL]", "[ERROR]"):
            continue
        end = i + 1
        while end < len(lines) and not re.match(r"^[=-]{20,}$", lines[end].strip()):
            end += 1
        ids: list[str] = []
        for text in reversed(lines[i + 1:end]):
            if not text.strip():
                break
            ids.append(text.strip())
        if ids:
            return ids[-1] + (" (error)" if flag == "[ERROR]" else "")
    return None


def classify(returncode: Optional[int], output: str, timed_out: bool,
             timeout: float) -> tuple[str, Optional[str], str]:
    """(status, killing test, note) of a finished trial run."""
    if timed_out:
        return KILLED, None, f"by timeout: still running after {timeout:g}s"
    if returncode == 0:
        return SURVIVED, None, ""
    by = first_failure(output)
    if by is None:
        last = next((t.strip() for t in reversed(output.splitlines()) if t.strip()), "")
        return KILLED, None, f"trial exited {returncode}, no test named ({last[:80]})"
    return KILLED, by, ""


def present_modules(tree: Path, modules: Iterable[str]) -> tuple[list[str], list[str]]:
    """The modules (or packages) that exist in `tree`, and those that do not."""
    found, missing = [], []
    for module in modules:
        base = tree.joinpath(*module.split("."))
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            found.append(module)
        else:
            missing.append(module)
    return found, missing


def trial_command() -> list[str]:
    script = Path(sys.executable).parent / "trial"
    return [str(script)] if script.exists() else [sys.executable, "-m", "twisted.trial"]


_LIVE: set = set()  # trial processes running now (each leads its own process group)
_LIVE_LOCK = threading.Lock()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_trial(tree: Path, modules: list[str], timeout: float,
              temp: Path) -> tuple[Optional[int], str, bool]:
    """Run trial on `modules` of `tree` (which comes first on sys.path), in its own session
    so that a timeout ends everything it started."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tree)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    cmd = trial_command() + ["--exitfirst", f"--temp-directory={temp}", *modules]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode("utf-8", "replace"), False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return proc.returncode, out.decode("utf-8", "replace"), True
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n.startswith("_trial_temp") or n.endswith(".egg-info")}


def run_mutation(m: Mutation, base: Path, work: Path, keep: bool = False) -> Result:
    """Apply `m` to a copy of `base` (in `work`) and run its tests there."""
    start = time.monotonic()
    target = base / m.file
    try:
        source = target.read_text(encoding="utf-8")
    except OSError:
        return Result(m, STALE, note=f"no file {m.file}")
    try:
        changed, line = apply(source, m.find, m.replace)
    except Stale as e:
        return Result(m, STALE, note=str(e))
    if m.file.endswith(".py"):
        try:
            compile(changed, m.file, "exec")
        except SyntaxError as e:
            return Result(m, INVALID, line, note=f"does not compile: {e.msg}")
    modules, missing = present_modules(base, m.tests)
    note = f"missing: {', '.join(missing)}" if missing else ""
    if not modules:
        return Result(m, SURVIVED, line, note=f"no test module to run ({note})")
    copy = work / m.id
    if copy.exists():
        shutil.rmtree(copy)
    for top in COPIED:
        if (base / top).is_dir():
            shutil.copytree(base / top, copy / top, ignore=_ignore, symlinks=True)
    (copy / m.file).write_text(changed, encoding="utf-8")
    # The copied bytecode of the changed file must not be used (same size, close mtime).
    for pyc in (copy / m.file).parent.glob(f"__pycache__/{Path(m.file).stem}.*.pyc"):
        pyc.unlink()
    try:
        code, output, timed_out = run_trial(copy, modules, m.timeout, copy / "_trial_temp")
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)
    status, by, why = classify(code, output, timed_out, m.timeout)
    return Result(m, status, line, by, "; ".join(n for n in (why, note) if n),
                  time.monotonic() - start, output)


# -- the tree ------------------------------------------------------------------------------

def export(root: Path, rev: Optional[str], dest: Path) -> None:
    """The tree to mutate: the working tree's, or a commit's (`git archive`)."""
    dest.mkdir(parents=True, exist_ok=True)
    if rev is None:
        for top in COPIED:
            if (root / top).is_dir():
                shutil.copytree(root / top, dest / top, ignore=_ignore, symlinks=True)
        return
    tops = [t for t in COPIED if subprocess.run(
        ["git", "-C", str(root), "cat-file", "-e", f"{rev}:{t}"],
        capture_output=True).returncode == 0]
    data = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", rev, *tops],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def check_isolation(tree: Path) -> Optional[str]:
    """None if `titan` and `tests` import from `tree` under the mutations' PYTHONPATH (an
    editable install puts the checkout on sys.path too: it must come after)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    probe = subprocess.run(
        [sys.executable, "-c", "import titan, tests; print(titan.__file__); "
                               "print(tests.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True)
    paths = probe.stdout.split()
    if probe.returncode != 0 or len(paths) != 2:
        return f"cannot import titan and tests from the copy: {probe.stderr.strip()[-300:]}"
    for path in paths:
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            return f"the copy's tests would import {path}, not the copy"
    return None


# -- the report ----------------------------------------------------------------------------

def result_text(r: Result) -> str:
    if r.status == KILLED:
        text = f"by {r.by}" if r.by else ""
        return "; ".join(t for t in (text, r.note) if t)
    return r.note


def table(results: list[Result]) -> str:
    rows = [(r.mutation.id, f"{r.mutation.file}:{r.line}" if r.line else r.mutation.file,
             r.status, f"{r.seconds:.1f}" if r.seconds else "-", r.mutation.breaks,
             result_text(r)) for r in results]
    w_id = max([len("MUTATION")] + [len(row[0]) for row in rows])
    w_at = max([len("FILE:LINE")] + [len(row[1]) for row in rows])
    lines = [f"{'MUTATION':<{w_id}}  {'FILE:LINE':<{w_at}}  {'RESULT':<8}  {'SECS':>5}  "
             f"BEHAVIOUR IT BREAKS"]
    indent = " " * (w_id + w_at + 23)
    for mid, at, status, secs, breaks, detail in rows:
        lines.append(f"{mid:<{w_id}}  {at:<{w_at}}  {status:<8}  {secs:>5}  {breaks}")
        if detail:
            lines.append(f"{indent}{detail}")
    return "\n".join(lines)


def summary(results: list[Result], seconds: float) -> str:
    count = {s: sum(1 for r in results if r.status == s) for s in (KILLED, SURVIVED, STALE,
                                                                    INVALID)}
    timeouts = sum(1 for r in results if r.status == KILLED and "by timeout" in r.note)
    parts = [f"{count[KILLED]} killed" + (f" ({timeouts} by timeout)" if timeouts else ""),
             f"{count[SURVIVED]} survived", f"{count[STALE]} stale"]
    if count[INVALID]:
        parts.append(f"{count[INVALID]} invalid")
    return f"{len(results)} mutations: {', '.join(parts)}; {seconds:.0f}s"


def exit_status(results: list[Result]) -> int:
    return 1 if any(r.status in FAILING for r in results) else 0


# -- main ----------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="mutate", description="Run the unit tests against one-line breaks of the core "
        "and the worker (tools/mutations.toml); report which survive.")
    p.add_argument("--only", action="append", metavar="ID",
                   help="run this mutation only (repeat for several)")
    p.add_argument("--list", action="store_true",
                   help="list the mutations and where they apply (STALE if nowhere); run nothing")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="mutations run at once (default 1)")
    p.add_argument("--file", type=Path, default=DEFAULT_LIST, help="the list of mutations")
    p.add_argument("--rev", metavar="REV",
                   help="mutate this commit (git archive) instead of the working tree")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds per mutation, over the list's own (default "
                        f"{DEFAULT_TIMEOUT:g})")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the run of the unmutated tree's tests")
    p.add_argument("--keep", action="store_true", help="keep the mutated copies (and say where)")
    p.add_argument("--show-output", action="store_true",
                   help="print trial's output for mutations that survive or time out")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("-j is 1 or more")
    try:
        mutations = load_list(args.file)
    except ListError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    if args.only:
        known = {m.id for m in mutations}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            print(f"mutate: no mutation {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m.id in args.only]
    if args.timeout:
        mutations = [Mutation(**{**m.__dict__, "timeout": args.timeout}) for m in mutations]

    work = Path(tempfile.mkdtemp(prefix="titan-mutate-"))
    try:
        base = work / "base"
        try:
            export(ROOT, args.rev, base)
        except subprocess.CalledProcessError as e:
            print(f"mutate: cannot export {args.rev}: {e.stderr.decode().strip()}",
                  file=sys.stderr)
            return 2
        if args.list:
            return _list(mutations, base)
        problem = check_isolation(base)
        if problem:
            print(f"mutate: {problem}", file=sys.stderr)
            return 2
        if not args.no_baseline and not _baseline(mutations, base, work):
            return 2
        return _run(mutations, base, work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"mutate: copies kept in {work}", file=sys.stderr)


def _list(mutations: list[Mutation], base: Path) -> int:
    stale = 0
    for m in mutations:
        try:
            _, line = apply((base / m.file).read_text(encoding="utf-8"), m.find, m.replace)
            at = f"{m.file}:{line}"
        except (OSError, Stale) as e:
            stale += 1
            at = f"{m.file}: STALE ({e})"
        print(f"{m.id}\n    {at}\n    breaks: {m.breaks}\n    tests: {' '.join(m.tests)}")
    print(f"{len(mutations)} mutations, {stale} stale")
    return 1 if stale else 0


def _baseline(mutations: list[Mutation], base: Path, work: Path) -> bool:
    """The unmutated tree must pass the tests the mutations run, or every kill is a lie."""
    modules = sorted({t for m in mutations for t in present_modules(base, m.tests)[0]})
    if not modules:
        return True
    timeout = max(m.timeout for m in mutations)
    print(f"mutate: baseline: {' '.join(modules)}", file=sys.stderr, flush=True)
    start = time.monotonic()
    code, output, timed_out = run_trial(base, modules, timeout, work / "baseline_trial_temp")
    if code == 0 and not timed_out:
        print(f"mutate: baseline passed in {time.monotonic() - start:.1f}s", file=sys.stderr,
              flush=True)
        return True
    print(output[-4000:], file=sys.stderr)
    why = f"timed out after {timeout:g}s" if timed_out else \
        f"failed ({first_failure(output) or f'exit {code}'})"
    print(f"mutate: the unmutated tree's tests {why}: fix that first", file=sys.stderr)
    return False


def _run(mutations: list[Mutation], base: Path, work: Path, args) -> int:
    start = time.monotonic()
    done: dict[str, Result] = {}
    lock = threading.Lock()
    interrupted = threading.Event()

    def one(m: Mutation) -> Result:
        r = run_mutation(m, base, work, keep=args.keep)
        if interrupted.is_set():
            return r  # killed by ^C, not by a test
        with lock:
            done[m.id] = r
            detail = result_text(r)
            print(f"[{len(done)}/{len(mutations)}] {m.id}: {r.status}"
                  + (f" {detail}" if detail else "") + f" ({r.seconds:.1f}s)",
                  file=sys.stderr, flush=True)
            if args.show_output and (r.status == SURVIVED or "by timeout" in r.note):
                print(r.output[-3000:], file=sys.stderr, flush=True)
        return r

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        try:
            list(pool.map(one, mutations))
        except KeyboardInterrupt:
            interrupted.set()
            # The runs are in sessions of their own (out of reach of ^C): end them, and
            # drop the mutations not started yet.
            pool.shutdown(wait=False, cancel_futures=True)
            with _LIVE_LOCK:
                for proc in list(_LIVE):
                    _kill_group(proc)
            print("mutate: interrupted", file=sys.stderr)
            return 130
    results = [done[m.id] for m in mutations]
    print(table(results))
    print(summary(results, time.monotonic() - start))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
