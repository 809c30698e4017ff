"""`titan package`: a master bundle and a worker bundle, each a single file that starts with
only a `python3` on the machine (a zipapp built by shiv, carrying Titan and what it imports),
each with a start script and an example config beside it.

The bundles are made of the distributions installed in the running environment (their files,
listed by importlib.metadata, copied into a staging site-packages): no network, about
a second.  Each carries only what its process imports, which was found by running a master
and a worker under `python -X importtime`: not Twisted's other applications (conch, mail,
names, words, trial, ...) nor any library's tests, not Titan's MCP server (`titan mcp` is a
process of its own, on the `mcp` SDK), and for a worker not the master, the web face or the
persistence backends.  Twisted's TLS extras (pyOpenSSL, cryptography, service_identity) stay
out: Titan speaks plain TCP, and Twisted imports them only when they are there.

Compiled speedups (msgpack's, PyYAML's, zope.interface's, markupsafe's) are kept where they
pay and each library falls back to pure Python where they do not load (another platform).
Dependencies are chosen for the building Python (markers such as `python_version < "3.11"`),
so a bundle says at start when run by another version (titan/bundle.py).
"""
from __future__ import annotations

import fnmatch
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

import attrs

import titan
from titan.errors import TitanError

SHIV_PIN = "shiv==1.0.8"


class PackageError(TitanError):
    pass


DISTRIBUTION = "titan-orchestrator"


@attrs.frozen
class Bundle:
    kind: str                       # master | worker
    plugin: str                     # its twistd plugin
    skip_dists: tuple[str, ...]     # Titan's requirements it never imports
    titan_skip: tuple[str, ...]     # Titan's subpackages it never imports
    drop: tuple[str, ...] = ()      # files left out (globs on site-packages paths)

    @property
    def file_name(self) -> str:
        return f"{self.plugin}.pyz"


BUNDLES = (
    Bundle("master", "titan-master", ("mcp",), ("mcp",)),
    # A worker reads its config once: PyYAML's pure-Python loader does (its C one is 2.5 MB).
    # It never serves the web face (klein) nor fires schedules (croniter).
    Bundle("worker", "titan-worker", ("mcp", "klein", "croniter"),
           ("master", "web", "mcp", "persistence"), drop=("yaml/_yaml.*",)),
)


# Requirements that are installed but never imported at run time.
NOT_AT_RUN_TIME = {
    "packaging",   # incremental reads it only when building a distribution
    "tomli",       # likewise
    "tzdata",      # dateutil's fallback for a machine without /usr/share/zoneinfo; cron is UTC
}

# Twisted's subpackages that no Titan process imports (its other applications, Windows).
TWISTED_UNUSED = {"conch", "mail", "names", "news", "pair", "positioning", "runner", "trial",
                  "words", "enterprise", "tap", "newsfragments"}
# twistd imports every module of twisted/plugins; only these are needed (the reactors, the
# endpoint parsers): the others would import the subpackages above.
TWISTED_PLUGINS = {"__init__.py", "twisted_core.py", "twisted_reactors.py", "titan_services.py"}
NEVER = {".pyc", ".pyi", ".c", ".h", ".pyx", ".pxd"}
NOT_METADATA = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def keep(path: PurePosixPath, bundle: Bundle) -> bool:
    """Whether a distribution's file (relative to site-packages) goes into `bundle`."""
    parts = path.parts
    if not parts or parts[0] == ".." or "__pycache__" in parts or path.suffix in NEVER:
        return False
    if path.name == "dropin.cache":  # Twisted's plugin cache: made again where it runs
        return False
    if any(p in ("test", "tests") for p in parts[:-1]):
        return False
    if parts[0].endswith(".dist-info") and path.name in NOT_METADATA:
        return False
    if parts[0] == "twisted" and len(parts) > 2:
        if parts[1] in TWISTED_UNUSED or parts[1:3] == ("internet", "iocpreactor"):
            return False
        if parts[1] == "plugins" and path.name not in TWISTED_PLUGINS:
            return False
    return not any(fnmatch.fnmatch(str(path), glob) for glob in bundle.drop)


def distributions(skip: tuple[str, ...] = ()) -> list[metadata.Distribution]:
    """The installed distributions Titan requires (but `skip`), and theirs: markers as
    this Python sees them, extras not followed."""
    from packaging.requirements import Requirement  # Twisted's `incremental` requires it
    from packaging.utils import canonicalize_name

    def requirements(dist: metadata.Distribution) -> list[str]:
        reqs = (Requirement(text) for text in dist.requires or ())
        return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]

    leave = {canonicalize_name(n) for n in (*NOT_AT_RUN_TIME, *skip, DISTRIBUTION)}
    found: dict[str, metadata.Distribution] = {}
    todo = requirements(_installed(DISTRIBUTION))
    while todo:
        name = canonicalize_name(todo.pop())
        if name not in found and name not in leave:
            found[name] = _installed(name)
            todo += requirements(found[name])
    return [found[name] for name in sorted(found)]


def _installed(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise PackageError(f"{name} is not installed in {sys.prefix} (a bundle is made of what "
                           f"this Python has installed: make install)") from None


def _dist_files(dist: metadata.Distribution) -> Iterator[tuple[PurePosixPath, Path]]:
    if dist.files is None:
        raise PackageError(f"{dist.metadata['Name']} lists no files (no RECORD): reinstall it")
    for entry in dist.files:
        yield PurePosixPath(str(entry)), Path(str(dist.locate_file(entry)))


def _titan_files(bundle: Bundle) -> Iterator[tuple[PurePosixPath, Path]]:
    """Titan's own files, from where it is imported (a checkout or site-packages), and its
    twistd plugins."""
    root = Path(titan.__file__).parent
    for dirpath, dirnames, filenames in os.walk(root):
        rel = PurePosixPath("titan", *Path(dirpath).relative_to(root).parts)
        if len(rel.parts) == 2 and rel.parts[1] in bundle.titan_skip + ("__pycache__",):
            dirnames[:] = []
            continue
        for name in filenames:
            yield rel / name, Path(dirpath, name)
    from twisted import plugins
    for folder in plugins.__path__:
        path = Path(folder, "titan_services.py")
        if path.exists():
            yield PurePosixPath("twisted/plugins/titan_services.py"), path
            return
    raise PackageError("twisted/plugins/titan_services.py not found: is titan installed "
                       "(make install)?")


def stage(bundle: Bundle, site: Path) -> None:
    """Copy what `bundle` carries into `site`."""
    sources = [_dist_files(dist) for dist in distributions(bundle.skip_dists)]
    sources.append(_titan_files(bundle))
    for files in sources:
        for rel, path in files:
            if not keep(rel, bundle) or not path.is_file():
                continue
            target = site.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    _strip(site)
    (site / "_titan_bundle.py").write_text(
        f"KIND = {bundle.kind!r}\nPLUGIN = {bundle.plugin!r}\n"
        f"PYTHON = '{sys.version_info[0]}.{sys.version_info[1]}'\n"
        f"TITAN_VERSION = {titan.__version__!r}\n"
        f"BUILT_AT = {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())!r}\n")


def _strip(site: Path) -> None:
    """Compiled extensions without their debug information (built from source here, they
    carry it: msgpack's is 1.6 MB, 0.2 MB without), when binutils' strip is there."""
    strip = shutil.which("strip")
    if strip is None:
        return
    libraries = [str(p) for p in site.rglob("*.so")]
    if not libraries:
        return
    done = subprocess.run([strip, "--strip-unneeded", *libraries], capture_output=True)
    if done.returncode:
        raise PackageError(f"{strip} --strip-unneeded failed on the compiled extensions: "
                           f"{done.stderr.decode(errors='replace').strip()}")


def build_bundle(bundle: Bundle, out: Path) -> Path:
    """`out/<plugin>.pyz`, built by shiv from a staging site-packages."""
    try:
        from shiv import __version__ as shiv_version
        from shiv.bootstrap.environment import Environment
        from shiv.builder import create_archive
    except ImportError:
        raise PackageError(f"shiv is not installed: pip install {SHIV_PIN} (or make install, "
                           f"or pip install 'titan-orchestrator[package]')") from None
    target = out / bundle.file_name
    with tempfile.TemporaryDirectory(prefix=f"{bundle.plugin}-") as tmp:
        site = Path(tmp, "site-packages")
        stage(bundle, site)
        env = Environment(
            built_at=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            shiv_version=shiv_version, entry_point="titan.bundle:main",
            compile_pyc=False,
            # The unpacked packages on the PYTHONPATH of what it starts: a job's Python
            # imports the titan SDK from there.
            extend_pythonpath=True)
        create_archive([site], target=target, interpreter="/usr/bin/env python3",
                       main="_bootstrap:bootstrap", env=env, compressed=True)
    return target


# -- the files beside the bundles ------------------------------------------------------------

START_SCRIPT = """#!/bin/sh
# Start a Titan {kind} from {file}, beside this script: python{python} is all it needs.
# Edit {config} first ({what}); the cluster token comes from $TITAN_TOKEN, else ./token
# (mode 0600) beside this script.  Options given to this script win over the config:
#   ./start-{kind}.sh --help
# The bundle unpacks its packages once into $SHIV_ROOT (default: .shiv beside it).
set -e
here=$(cd "$(dirname "$0")" && pwd)
export SHIV_ROOT="${{SHIV_ROOT:-$here/.shiv}}"
if [ -z "$TITAN_TOKEN" ] && [ -f "$here/token" ]; then
    set -- --token-file "$here/token" "$@"
fi
exec "${{PYTHON:-python3}}" "$here/{file}" --config "$here/{config}" "$@"
"""

WHAT_TO_EDIT = {
    "master": "master.listen: where workers reach it",
    "worker": "worker.master: the master's HOST:PORT",
}

# The sections of etc/titan.yaml each process reads, and what a deployment on several
# machines changes in them: (section, key, value, why).
CONFIG_SECTIONS = {
    "master": ("token", "master", "router", "autoscaler", "persistence", "store", "web"),
    "worker": ("token", "worker", "llm"),
}
CONFIG_CHANGES = {
    "master": (
        ("master", "listen", '"tcp:9090"',
         "titan package: all interfaces, for workers on other machines (only they need it)"),
        ("autoscaler", "max_workers", "0",
         "titan package: workers run on their own machines, from titan-worker.pyz"),
    ),
    "worker": (
        ("worker", "master", '"titan-master.example:9090"',
         "titan package: the master's HOST:PORT (its master.listen); set it"),
    ),
}


def etc_config() -> Path:
    """etc/titan.yaml of the checkout titan runs from (the annotated defaults)."""
    path = Path(titan.__file__).parent.parent / "etc" / "titan.yaml"
    if not path.is_file():
        raise PackageError(f"{path} not found: run titan package from a checkout")
    return path


def _sections(text: str) -> dict[str, list[str]]:
    """etc/titan.yaml's top-level sections, each with the comment lines just above it (the
    file's header, before its first blank line, belongs to none)."""
    blocks: dict[str, list[str]] = {}
    lines = text.splitlines()
    first_blank = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    pending: list[str] = []
    current: Optional[list[str]] = None
    for line in lines[first_blank:]:
        if not line.strip():
            pending = []  # comments above a blank line are not the next section's
        elif line.startswith(" ") and current is not None:
            current.append(line)
        elif re.match(r"[a-z_]+:", line):
            current = blocks[line.split(":", 1)[0]] = pending + [line]
            pending = []
        else:
            current = None
            pending.append(line)
    return blocks


def example_config(kind: str, text: str) -> str:
    """The example config of a `kind` bundle, from the text of etc/titan.yaml."""
    blocks = _sections(text)
    out = [f"# Titan {kind} config for titan-{kind}.pyz, from etc/titan.yaml (titan package):",
           "# the sections a " + kind + " reads, every key at its default but what running on",
           "# several machines changes (marked 'titan package').  Options on the command line",
           "# win over this file.  docs/operations.md"]
    for name in CONFIG_SECTIONS[kind]:
        if name not in blocks:
            raise PackageError(f"etc/titan.yaml has no {name}: section")
        lines = list(blocks[name])
        for section, key, value, why in CONFIG_CHANGES[kind]:
            if section != name:
                continue
            at = [i for i, line in enumerate(lines) if line.startswith(f"  {key}:")]
            if len(at) != 1:
                raise PackageError(f"etc/titan.yaml: {section}.{key} not found once")
            lines[at[0]:at[0] + 1] = [f"  # {why}", f"  {key}: {value}"]
        out += [""] + lines
    return "\n".join(out) + "\n"


def write_extras(bundle: Bundle, out: Path, config_text: str) -> list[Path]:
    config = out / f"{bundle.kind}.yaml"
    config.write_text(example_config(bundle.kind, config_text))
    script = out / f"start-{bundle.kind}.sh"
    script.write_text(START_SCRIPT.format(
        kind=bundle.kind, file=bundle.file_name, config=config.name,
        python="%d.%d" % sys.version_info[:2], what=WHAT_TO_EDIT[bundle.kind]))
    script.chmod(0o755)
    return [script, config]


@attrs.frozen
class Built:
    bundle: Bundle
    path: Path
    size: int
    seconds: float
    extras: list[Path]


def build_all(out: str, kinds: tuple[str, ...] = ("master", "worker")) -> list[Built]:
    """Build the bundles of `kinds` with their start scripts and configs into `out`."""
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    config_text = etc_config().read_text()
    built = []
    for bundle in BUNDLES:
        if bundle.kind not in kinds:
            continue
        start = time.monotonic()
        path = build_bundle(bundle, out_dir)
        extras = write_extras(bundle, out_dir, config_text)
        built.append(Built(bundle, path, path.stat().st_size, time.monotonic() - start,
                           extras))
    return built


def dashboard_built() -> bool:
    return (Path(titan.__file__).parent / "web" / "static" / "index.html").is_file()
