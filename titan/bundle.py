"""What runs inside a bundle that `titan package` built (titan-master.pyz, titan-worker.pyz).

    python3 titan-worker.pyz [OPTIONS]     twistd --nodaemon titan-worker [OPTIONS]
    python3 titan-worker.pyz twistd ARGS   twistd ARGS (--logfile, a daemon, ...)
    python3 titan-worker.pyz titan ARGS    the `titan` command (status, aof check, ...)
    python3 titan-worker.pyz --bundle-info what it is, the Python it was built for, the above

shiv has unpacked the bundle's packages (under ~/.shiv, or $SHIV_ROOT) and put them on
sys.path before `main` runs.  This module is imported before anything else of Titan (and
kept to syntax any Python 3 reads), so that it can say plainly when this Python is not the
one the bundle was built for.
"""
import sys

# The bundle this process runs from (its absolute path), set by `main`; None elsewhere.  A
# bundled master starts local workers with it (titan/master/autoscale.py).
PATH = None

USAGE = """usage: python3 {file} [OPTIONS]     start a {plugin} (twistd --nodaemon {plugin})
       python3 {file} twistd ARGS  run twistd itself (e.g. --logfile=F {plugin} ...)
       python3 {file} titan ARGS   the titan command (status, workers, aof check, ...)
The options of {plugin}: python3 {file} --help"""


def _built() -> dict:
    import _titan_bundle  # written by `titan package` beside titan/
    return {"kind": _titan_bundle.KIND, "plugin": _titan_bundle.PLUGIN,
            "python": _titan_bundle.PYTHON, "titan": _titan_bundle.TITAN_VERSION,
            "built_at": _titan_bundle.BUILT_AT}


def python_mismatch(built_for: str, running: tuple, executable: str, file: str) -> str:
    """Why this Python cannot run the bundle ('' when it can)."""
    here = "%d.%d" % tuple(running[:2])
    if here == built_for:
        return ""
    return (f"{file}: built for Python {built_for} (its packages were chosen for that "
            f"version), but {executable} is Python {here}: run it with python{built_for}, "
            f"or build a bundle with this Python (titan package, from a checkout "
            f"installed with it)")


def only_the_bundle(path: list, own: str) -> list:
    """sys.path without the machine's own site-packages and dist-packages (`own` is the
    bundle's): a bundle runs on what it carries.  A library half there would change what
    Twisted imports: Debian's python3-openssl without service_identity breaks its
    endpoints module, which imports its TLS support when OpenSSL is found."""
    import os
    return [p for p in path if p == own or
            os.path.basename(os.path.normpath(p)) not in ("site-packages", "dist-packages")]


def main() -> int:
    global PATH
    import os
    import _titan_bundle
    PATH = os.path.abspath(sys.argv[0])
    sys.path[:] = only_the_bundle(sys.path, os.path.dirname(_titan_bundle.__file__))
    built = _built()
    file = os.path.basename(sys.argv[0]) or f"{built['plugin']}.pyz"
    why = python_mismatch(built["python"], sys.version_info, sys.executable, file)
    if why:
        print(why, file=sys.stderr)
        return 2
    args = sys.argv[1:]
    if args[:1] == ["--bundle-info"]:
        print(" ".join(f"{k}={v}" for k, v in built.items()))
        print(USAGE.format(file=file, plugin=built["plugin"]))
        return 0
    if args[:1] == ["titan"]:
        return _titan(args[1:], file)
    if args[:1] == ["twistd"]:
        argv = args[1:]
    else:
        # In the foreground, logging to stdout (a service manager's journal), no pid file.
        argv = ["--nodaemon", "--pidfile=", built["plugin"], *args]
    from twisted.scripts.twistd import run
    sys.argv = ["twistd", *argv]
    run()
    return 0


def _titan(args: list, file: str) -> int:
    from titan.cli import main as titan_main
    try:
        return titan_main(args)
    except ModuleNotFoundError as e:
        print(f"titan: {file} does not carry {e.name} (that command needs a full install: "
              f"pip install titan-orchestrator)", file=sys.stderr)
        return 1
