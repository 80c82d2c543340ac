"""The ``kernelhook`` command (also ``python -m kernelhook``).

    kernelhook system                              this machine and the variants it loads, in order
    kernelhook info REPO[@REV]                     a repo's commit and every variant's verdict here
    kernelhook download [REPO[@REV] ...] [--lockfile F] [--all-variants]
    kernelhook lock [--pyproject F]                resolve [tool.kernelhook.kernels] into kernelhook.lock
    kernelhook cache ls | verify [--repair] | prune [--dry-run]
    kernelhook check DIR                           validate a kernel repo folder before publishing
    kernelhook publish DIR --repo ORG/NAME --version N   check, then upload to the branch vN; prints the commit
    kernelhook bench [--plot FILE.png]             kernelize(measure=True)'s decisions kept in the cache

Every command takes --json, before or after the command's name; ``kernelhook --version``
prints the version. Exit codes: 0 ok, 1 failed, 2 bad usage (argparse's own
complaints, a REPO that is not ORG/NAME[@REV], a DIR that is not a folder).
Every failure is one line on stderr that ends with the fix, never a traceback;
with --json anywhere on the command line it is also ``{"error": "..."}`` on
stdout, bad usage included. An unexpected exception is one line naming its
type (exit 1); KERNELHOOK_DEBUG=1 prints its traceback before that line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .. import __version__
from ..cache import admin as cache_admin
from ..cache import lockfile
from ..cache.store import Store
from ..errors import InvalidKernelName, InvalidRevision, KernelHookError, LockfileError
from ..files import write_atomic
from ..loading import fetch
from ..loading.names import parse_repo_id
from ..loading.resolve import locked_resolution, resolve
from ..platform import candidate_patterns, current_system
from ..project import LOCK_NAME, nearest
from .check import check_repo
from .publish import publish


class UsageError(Exception):
    """Bad usage that argparse cannot see: exit code 2."""


def main(argv: list[str] | None = None) -> int:
    """Run the kernelhook command.

    Returns:
        The exit code: 0 ok, 1 failed, 2 bad usage (``--help`` and ``--version`` exit 0 through SystemExit).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv  # known before parsing, so that bad usage is reported as JSON too
    try:
        args = _parser().parse_args(argv)
        data, text, code = args.run(args)
    except UsageError as exc:
        return _fail(as_json, str(exc), code=2)
    except (KernelHookError, OSError) as exc:
        return _fail(as_json, str(exc), debug=True)
    except Exception as exc:  # a bug, here or below: still one line, and the traceback on request
        return _fail(as_json, f"unexpected {type(exc).__name__}: {exc}. Fix: this is a bug in kernelhook or a "
                              f"kernel; rerun with KERNELHOOK_DEBUG=1 for the traceback and report it.", debug=True)
    _out(json.dumps(data, indent=2, sort_keys=True) if as_json else text)
    return code


def _fail(as_json: bool, message: str, code: int = 1, debug: bool = False) -> int:
    if debug and os.environ.get("KERNELHOOK_DEBUG") == "1":
        traceback.print_exc()
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())  # one line, fix included
    if as_json:
        _out(json.dumps({"error": line}))
    sys.stderr.write(f"kernelhook: error: {line}\n")
    return code


def _out(text: str) -> None:
    if text:
        sys.stdout.write(text.rstrip("\n") + "\n")


# -- commands: each returns (data for --json, text for people, exit code) -------------------------


def cmd_system(args):
    system = current_system()
    data = {
        "system": str(system),
        "torch": None if system.torch_version is None else "{}.{}".format(*system.torch_version),
        "cxx11_abi": system.cxx11_abi,
        "compute": system.compute.tag,
        "arch": system.arch,
        "os": system.os,
        "strict_variant": system.strict_variant,
        "candidates": candidate_patterns(system),
    }
    text = f"{system}\nvariants this system loads, best first:\n" + "\n".join(f"  {c}" for c in data["candidates"])
    return data, text, 0


def cmd_info(args):
    store = Store()
    resolved = resolve(_kernel_name(args.repo), store)
    decisions = fetch.rank_for(resolved, store, current_system())
    chosen = decisions[0].name if decisions and decisions[0].accepted else None
    data = {
        "repo": resolved.repo.repo_id, "repo_type": resolved.repo.repo_type, "commit": resolved.commit,
        "resolved_by": resolved.how, "system": str(current_system()), "chosen": chosen,
        "variants": [{"name": d.name, "accepted": d.accepted, "reason": d.reason} for d in decisions],
    }
    lines = [f"{resolved.repo} @ {resolved.commit} ({resolved.how})", f"this system: {current_system()}"]
    for d in decisions:
        mark = "->" if d.name == chosen else ("ok" if d.accepted else "--")
        lines.append(f"  {mark} {d.name}: {d.reason if not d.accepted else 'compatible (' + d.reason + ')'}")
    if chosen is None:
        lines.append("no variant fits this system")
    return data, "\n".join(lines), 0 if chosen else 1


def cmd_download(args):
    store = Store()
    lock = _lock_for(args.lockfile, required=not args.repos)
    targets = [(resolve(_kernel_name(spec), store), None) for spec in args.repos] or [
        (locked_resolution(lock, k, store, "lockfile"), k) for k in lock.kernels.values()  # refs that prune keeps
    ]
    rows = []
    for resolved, locked in targets:
        if args.all_variants:
            placed = fetch.place_all_variants(resolved, store)
        else:
            placed = [fetch.place_variant(resolved, store, current_system())]
        for p in placed:
            if locked is not None:
                lockfile.check_tree(locked, p.variant, p.tree, store)  # the bytes the lock names, or an error
            rows.append({"repo": resolved.repo.repo_id, "commit": resolved.commit, "variant": p.variant,
                         "tree": str(p.tree)})
    text = "\n".join(f"{r['repo']}@{r['commit'][:12]} [{r['variant']}] -> {r['tree']}" for r in rows)
    return rows, text or "nothing to download", 0


def cmd_lock(args):
    pyproject = Path(args.pyproject) if args.pyproject else _nearest_pyproject()
    store = Store()
    locked = []
    for repo_id, revision in lockfile.read_requirements(pyproject).items():
        resolved = resolve(parse_repo_id(repo_id, revision), store)
        variants = lockfile.variants_from_listing(fetch.listing_of(resolved, store))
        locked.append(lockfile.LockedKernel(resolved.repo.repo_id, resolved.repo.repo_type, revision,
                                            resolved.commit, variants))
    target = pyproject.parent / LOCK_NAME
    write_atomic(target, lockfile.render(locked).encode())
    data = {"lockfile": str(target), "kernels": [
        {"repo": k.repo_id, "revision": k.revision, "commit": k.commit, "variants": sorted(k.variants)} for k in locked]}
    text = "\n".join([f"wrote {target}"] + [f"  {k.repo_id} {k.revision} -> {k.commit} ({len(k.variants)} variants)"
                                             for k in locked])
    return data, text, 0


def cmd_cache_ls(args):
    rows = cache_admin.list_cached(Store())
    data = [r.__dict__ for r in rows]
    text = "\n".join(f"{r.repo_id}  {','.join(r.revisions) or '-'}  {r.commit[:12]}  {r.variant}  {_human(r.size)}"
                     for r in rows)
    return data, text or f"the cache at {Store().top} holds no kernels", 0


def cmd_cache_verify(args):
    report = cache_admin.verify(Store(), repair=args.repair)
    data = report.__dict__
    text = f"checked {report.objects} objects and {report.trees} trees: {len(report.damaged)} damaged"
    text += "".join(f"\n  damaged: {d}" for d in report.damaged)
    text += "".join(f"\n  removed: {d}" for d in report.removed)
    if report.damaged and not args.repair:
        text += "\nFix: `kernelhook cache verify --repair` drops them; the next load fetches them again."
    return data, text, 1 if report.damaged and not args.repair else 0


def cmd_cache_prune(args):
    lock = _lock_for(args.lockfile, required=False)
    locked = {k.commit for k in lock.kernels.values()} if lock else set()
    report = cache_admin.prune(Store(), locked, dry_run=args.dry_run, grace_s=args.grace)
    data = {**report.__dict__, "dry_run": args.dry_run, "kept_for_lockfile": sorted(locked)}
    verb = "would remove" if args.dry_run else "removed"
    text = (f"{verb} {len(report.refs)} commit refs, {len(report.trees)} trees, {len(report.objects)} objects "
            f"({_human(report.bytes)})")
    return data, text, 0


def cmd_check(args):
    problems, results = check_repo(_folder(args.dir))
    data = {"ok": not problems, "problems": [p._asdict() for p in problems],
            "variants": [r._asdict() for r in results]}
    lines = [f"{r.variant}: {r.how}; layers {', '.join(r.layers) or 'none'}"
             + (f"; functions {', '.join(r.functions)}" if r.functions else "") for r in results]
    lines += [str(p) for p in problems]
    lines.append(f"{len(problems)} problem(s)" if problems else "ok: ready to publish")
    return data, "\n".join(lines), 1 if problems else 0


def cmd_publish(args):
    published = publish(_folder(args.dir), args.repo, args.version, args.repo_type)
    data = {"repo": published.repo.repo_id, "repo_type": published.repo.repo_type, "branch": published.branch,
            "commit": published.commit}
    return data, published.commit, 0


def cmd_bench(args):
    rows = [_bench_row(record) for record in Store().decisions()]
    rows.sort(key=lambda r: (r["device"], r["layer"], r["kernel"], r["dtype"], r["shape_class"]))
    if args.plot:
        _plot(rows, Path(args.plot))
    columns = ("device", "layer", "kernel", "dtype", "shape_class", "native_ms", "kernel_ms", "bound")
    table = [columns] + [tuple(_cell(r[c]) for c in columns) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    if not rows:
        lines.append("no decisions yet: kernelize(model, measure=True, sample_input=...) makes them")
    if args.plot:
        lines.append(f"plot written to {args.plot}")
    return {"decisions": rows}, "\n".join(lines), 0


def _bench_row(record: dict) -> dict:
    inputs = [i for i in record.get("inputs", []) if isinstance(i, list) and len(i) == 3]
    return {
        "device": str(record.get("device")), "layer": str(record.get("layer")),
        "kernel": f"{record.get('repo')}@{str(record.get('commit'))[:12]} [{record.get('variant')}]",
        "native": str(record.get("native")), "dtype": ",".join(str(i[1]) for i in inputs),
        "shape_class": ",".join("x".join(str(d) for d in i[2]) for i in inputs),
        "native_ms": record.get("native_ms"), "kernel_ms": record.get("kernel_ms"), "bound": record.get("bound"),
    }


def _cell(value) -> str:
    if isinstance(value, bool):
        return "kernel" if value else "native"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plot(rows: list[dict], path: Path) -> None:
    """A grouped bar chart: native and kernel ms side by side for each decision."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise KernelHookError(f"--plot needs matplotlib, which is not installed here ({exc}). Fix: pip install "
                         f"matplotlib, or leave out --plot for the table.") from exc
    labels = [f"{r['layer']}\n{r['dtype']} {r['shape_class']}\n{r['device']}" for r in rows]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(rows)), 4.0))
    positions = range(len(rows))
    axes.bar([p - 0.2 for p in positions], [r["native_ms"] or 0 for r in rows], 0.4, label="native")
    axes.bar([p + 0.2 for p in positions], [r["kernel_ms"] or 0 for r in rows], 0.4, label="kernel")
    axes.set_xticks(list(positions), labels, fontsize=7)
    axes.set_ylabel("median ms per call")
    axes.set_title("kernelize(measure=True) decisions")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


# -- helpers --------------------------------------------------------------------------------------


def _kernel_name(spec: str):
    repo_id, _, revision = spec.partition("@")
    if "@" in spec and not revision:
        raise UsageError(f"{spec!r}: nothing after '@'. Fix: write REPO or REPO@REVISION.")
    try:
        return parse_repo_id(repo_id, revision or None)
    except (InvalidKernelName, InvalidRevision) as exc:
        raise UsageError(f"{exc} Expected REPO[@REV], e.g. kernels-ext-npu/RMSNorm@v1.") from exc


def _folder(typed: str) -> Path:
    folder = Path(typed)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{typed} {what}. Fix: name the kernel repo folder, the one that holds build/.")
    return folder


def _lock_for(path: str | None, required: bool):
    if path:
        return lockfile.read_lock(Path(path))
    lock = lockfile.lock_in_effect()
    if lock is None and required:
        raise UsageError("no repos named and no kernelhook.lock found. Fix: name REPO[@REV] or pass --lockfile.")
    return lock


def _nearest_pyproject() -> Path:
    found = nearest("pyproject.toml")
    if found is None:
        raise LockfileError("no pyproject.toml here or above. Fix: run in your project, or pass --pyproject.")
    return found


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


class _Parser(argparse.ArgumentParser):
    """argparse whose complaints are reported like every other failure (one line; JSON with --json), exit 2."""

    def error(self, message: str):
        usage = " ".join(self.format_usage().split())
        raise UsageError(f"{message}. {usage[0].upper()}{usage[1:]}")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: a command's own --json, when absent, must not undo `kernelhook --json <command>`
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = _Parser(prog="kernelhook", description="Hub kernels: inspect, prefetch, lock, cache.")
    parser.add_argument("--json", action="store_true", help="machine-readable output (also after the command)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, run, help_text, parent=sub):
        p = parent.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(run=run)
        return p

    command("check", cmd_check, "validate a kernel repo folder before publishing").add_argument("dir", metavar="DIR")
    p = command("publish", cmd_publish, "check, then upload a kernel repo folder to the branch vN")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--repo", required=True, metavar="ORG/NAME")
    p.add_argument("--version", required=True, type=int, metavar="N", help="major version: the branch vN")
    p.add_argument("--repo-type", choices=("model", "kernel"), default="model",
                   help="the Hub repo type (default: model, as kernels-ext-npu's repos are)")
    command("bench", cmd_bench, "kernelize(measure=True)'s decisions in the cache: native and kernel ms").add_argument(
        "--plot", metavar="FILE.png", help="also draw them as a grouped bar chart (needs matplotlib)")
    command("system", cmd_system, "this machine's probe result and the variants it loads, in order")
    command("info", cmd_info, "a repo's commit, its variants and which this system loads").add_argument(
        "repo", metavar="REPO[@REV]")
    p = command("download", cmd_download, "prefetch kernels into the cache")
    p.add_argument("repos", nargs="*", metavar="REPO[@REV]")
    p.add_argument("--lockfile", metavar="F", help="download what this lockfile pins (default: the one in effect)")
    p.add_argument("--all-variants", action="store_true", help="every variant, to fill a cache for other machines")
    command("lock", cmd_lock, "resolve [tool.kernelhook.kernels] into kernelhook.lock").add_argument(
        "--pyproject", metavar="F", help="default: the nearest pyproject.toml")
    cache = sub.add_parser("cache", parents=[common], help="list, verify or prune the cache").add_subparsers(
        dest="action", required=True)
    command("ls", cmd_cache_ls, "what is cached: repo, revisions, commit, variant, size", cache)
    command("verify", cmd_cache_verify, "re-hash every cached file", cache).add_argument(
        "--repair", action="store_true", help="drop damaged entries (fetched again on use)")
    p = command("prune", cmd_cache_prune, "remove what no ref or lockfile reaches (refs first)", cache)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--lockfile", metavar="F", help="also keep what this lockfile pins (default: the one in effect)")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="keep entries younger than this (default 3600), so a running download is never cut")
    return parser
