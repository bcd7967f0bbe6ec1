"""The ``snapsync`` command: parse arguments, call the library, render the result.

Exit codes (README.md): 0 success; 1 `diff` found differences, or an unexpected error; 2 usage;
3 local file error; 4 store error; 5 not found (store, bucket, ref, snapshot); 6 access denied;
7 corrupt or unsupported data; 8 conflict; 10 ``check`` found problems; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from snapsync.cli_args import (
    URL_HELP,
    SubcommandParser,
    nonempty,
    parse_duration,
    storage_options,
    zstd_level,
)
from snapsync.errors import ProblemsFound, SnapsyncError, UsageError
from snapsync.progress import format_size
from snapsync.version import __version__

EXIT_DIFFERENT = 1  # `diff` found differences
EXIT_INTERRUPTED = 130


class TqdmProgress:
    """Progress bars on stderr, only when it is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._scale = 1.0
        self._lock = threading.Lock()

    def phase(self, name: str, total: int | None, unit: str = "B") -> None:
        self.close()
        if not self.enabled or not total:
            return
        from tqdm import tqdm

        if unit == "B":
            # MiB, as in the summaries (tqdm's own scaling would print "3.00M" and "kB").
            self._scale = 1 / (1 << 20)
            self._bar = tqdm(total=total * self._scale, desc=name, unit="MiB",
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} "
                                        "MiB [{elapsed}<{remaining}, {rate_fmt}]",
                             file=sys.stderr, leave=False, dynamic_ncols=True)
            return
        self._scale = 1.0
        self._bar = tqdm(total=total, desc=name, unit=unit, unit_scale=True,
                         file=sys.stderr, leave=False, dynamic_ncols=True)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(n * self._scale)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


StoreOpener = Callable[[str, dict[str, Any]], Any]


def _store(args: argparse.Namespace, url: str | None = None) -> Any:
    """The store the command names, opened by ``main``'s opener (tests inject their own);
    its retries are reported on stderr."""
    store = args.open_store(args.url if url is None else url, storage_options(args.option))
    if getattr(store, "on_retry", False) is None:
        store.on_retry = args.on_retry
    return store


def _requests(req: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(req.items())) or "none"


def _emit(args: argparse.Namespace, data: dict[str, Any], human: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif not args.quiet:
        print(human())


def cmd_push(args: argparse.Namespace) -> int:
    from snapsync.engine.push import push

    if len(args.paths) > 2:
        raise UsageError(f"push takes [DIR] URL, got {len(args.paths)} arguments")
    root, url = (".", args.paths[0]) if len(args.paths) == 1 else args.paths
    only = facts = None
    if args.git:  # ship exactly what git tracks (snapsync/local/git.py)
        from snapsync.local.git import git_facts, git_files

        only = git_files(root, untracked=args.untracked)
        facts = git_facts(root, untracked=args.untracked)
    elif args.untracked:
        raise UsageError("--untracked needs --git")
    r = push(root, _store(args, url), ref=args.ref,
             message=args.message or "", ignore_file=args.ignore_file,
             use_default_ignore=not args.no_default_ignore, dry_run=args.dry_run,
             jobs=args.jobs, level=args.level, cache_dir=args.cache_dir,
             use_stat_cache=not args.no_stat_cache, skip_unreadable=args.skip_unreadable,
             progress=args.progress, on_warning=args.warn, only=only, git_facts=facts)

    def human() -> str:
        state = ("unchanged, nothing written" if r.unchanged else
                 "dry run, nothing written" if r.dry_run else f"ref {r.ref} updated")
        if r.ref_attempts > 1 and not r.unchanged:  # other pushes moved the ref meanwhile
            state += f" after {r.ref_attempts} rounds; parent {r.parent_id}"
        return "\n".join([
            f"snapshot {r.snapshot_id} ({state})",
            f"  store     {r.url}",
            f"  tree      {r.files} files ({format_size(r.bytes_scanned)}), {r.dirs} empty dirs, "
            f"{r.symlinks} symlinks",
            f"  read      {r.files_read} files ({format_size(r.bytes_read)}); "
            f"{r.files - r.files_read} unchanged since the last push, not read",
            f"  chunks    {r.chunks}: {r.chunks_new} new ({format_size(r.bytes_new)}), "
            f"{r.chunks_reused} already stored",
            f"  uploaded  {format_size(r.bytes_packs)} in {r.packs_uploaded} packs, "
            f"{format_size(r.bytes_metadata)} of metadata (manifest, log, ref)",
            f"  requests  {_requests(r.requests)}",
            f"  time      {r.seconds:.2f} s",
        ])

    for note in r.notes:
        args.note(note)
    _emit(args, r.as_dict(), human)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from snapsync.engine.pull import pull

    url = args.url
    r = pull(_store(args, url), args.dir, ref=args.ref,
             snapshot=args.snapshot, delete=args.delete, delete_ignored=args.delete_ignored,
             jobs=args.jobs, cache_dir=args.cache_dir, use_cache=not args.no_cache,
             progress=args.progress, on_warning=args.warn)

    def human() -> str:
        return "\n".join([
            f"snapshot {r.snapshot_id} -> {r.directory}",
            f"  tree        {r.files} files ({format_size(r.bytes)}); {r.unchanged} entries "
            "already up to date",
            f"  written     {r.files_written} files ({format_size(r.bytes_written)}), "
            f"{r.symlinks_written} symlinks, {r.dirs_created} dirs, {r.modes_changed} modes; "
            f"{r.deleted} deleted",
            f"  chunks      {r.chunks_needed} needed: {r.chunks_cached} from the local cache, "
            f"{r.chunks_from_target} from files being replaced, "
            f"{r.chunks_downloaded} downloaded ({format_size(r.bytes_downloaded)})",
            f"  requests    {_requests(r.requests)}",
            f"  time        {r.seconds:.2f} s",
        ])

    _emit(args, r.as_dict(), human)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from snapsync.engine.inspect import log

    entries = log(_store(args), ref=args.ref)
    if args.commit:  # only the snapshots pushed from that commit
        from snapsync.local.git import matches_commit, parse_git_name

        prefix, _ = parse_git_name("git:" + args.commit)
        entries = [e for e in entries if matches_commit(e, prefix)]

    def human() -> str:
        if not entries:
            return f"ref {args.ref} has no history"
        lines = []
        for e in entries:
            t = e.totals
            where = f" ({e.git['path']})" if e.git.get("path") else ""
            git = f" git {e.git.get('commit', '')[:10]}{'+dirty' if e.git.get('dirty') else ''}" \
                f"{where}" if e.git else ""
            lines.append(f"{e.snapshot}  {e.time}  {t.get('files', 0):>6} files  "
                         f"{format_size(t.get('bytes', 0)):>10}  {e.host}{git}  {e.message}")
        return "\n".join(lines)

    _emit(args, {"ref": args.ref, "entries": [e.__dict__ for e in entries]}, human)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from snapsync.engine.inspect import list_entries

    rows = list_entries(_store(args), ref=args.ref, snapshot=args.snapshot)

    def human() -> str:
        out = []
        for r in rows:
            extra = f" -> {r['target']}" if r["kind"] == "symlink" else ""
            out.append(f"{r['kind']:<7} {r['mode']:04o} {r['size']:>12}  {r['path']}{extra}")
        return "\n".join(out)

    _emit(args, {"entries": rows}, human)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from snapsync.engine.inspect import diff

    d = diff(_store(args), args.a, args.b)

    def human() -> str:
        lines = [f"+ {p}" for p in d.added] + [f"- {p}" for p in d.removed] + \
                [f"M {p}" for p in d.modified]
        return "\n".join(lines) if lines else "no differences"

    _emit(args, d.as_dict(), human)
    # As diff(1) and `git diff --exit-code`: 1 when the trees differ.
    return EXIT_DIFFERENT if d.added or d.removed or d.modified else 0


def _common(p: argparse.ArgumentParser, jobs: bool = True) -> None:
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="storage option passed to fsspec (repeatable), e.g. "
                        "-o endpoint_url=http://127.0.0.1:8333")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary, no progress bars")
    p.add_argument("--cache-dir", help="local cache folder (default: the user cache dir, or "
                                       "$SNAPSYNC_CACHE_DIR)")
    if jobs:
        p.add_argument("-j", "--jobs", type=int, help="requests in flight (default 16)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapsync",
        description="Content-addressed code snapshots in bucket storage (S3, GCS, Azure, "
                    "file://). Push sends only the chunks the store lacks; pull verifies "
                    "every byte and touches only what changed.")
    parser.add_argument("--version", action="version", version=f"snapsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=SubcommandParser)

    p = sub.add_parser("push", help="snapshot a folder into a store",
                       usage="snapsync push [options] [DIR] URL",
                       description="Snapshot DIR (default: the current folder) into the store "
                                   "at URL and point a ref at it.")
    p.add_argument("paths", nargs="+", metavar="[DIR] URL",
                   help="the folder to push (default: the current one) and the store's URL")
    p.add_argument("--ref", default="latest",
                   help="ref to update (default: latest); may be hierarchical, e.g. feature/x")
    p.add_argument("-m", "--message", help="message stored with the snapshot")
    p.add_argument("--ignore-file", help="gitignore-style rules (default: DIR/.prefectignore, "
                                         "else Prefect's default template)")
    p.add_argument("--no-default-ignore", action="store_true",
                   help="with no ignore file, ship everything (Prefect's own behaviour)")
    p.add_argument("--dry-run", action="store_true", help="do everything but write the store")
    p.add_argument("--level", type=zstd_level, default=3,
                   help="zstd level for new chunks, -7 to 22 (default 3)")
    p.add_argument("--no-stat-cache", action="store_true", help="re-read every file")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="warn about unreadable files and leave them out instead of failing")
    p.add_argument("--git", action="store_true",
                   help="ship exactly the files git tracks (.gitignore decides, not "
                        ".prefectignore); the commit is recorded for --snapshot git:<commit>")
    p.add_argument("--untracked", action="store_true",
                   help="with --git, also ship untracked files that .gitignore does not "
                        "exclude")
    _common(p)
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="make a folder equal to a snapshot",
                       description="Make DIR (default: the current folder) hold the snapshot "
                                   "that --ref (default latest) or --snapshot names.")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    p.add_argument("dir", nargs="?", default=".", metavar="DIR",
                   help="the folder to make equal to the snapshot (default: the current one)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ref", type=nonempty("--ref"), help="ref to pull (default: latest)")
    g.add_argument("--snapshot", type=nonempty("--snapshot"),
                   help="snapshot id (or a unique prefix of at least 4 characters, or "
                        "git:<commit>) to pull")
    p.add_argument("--delete", action="store_true",
                   help="remove files in DIR that the snapshot does not hold (never paths the "
                        "snapshot's ignore rules match)")
    p.add_argument("--delete-ignored", action="store_true",
                   help="with --delete, also remove ignored paths")
    p.add_argument("--no-cache", action="store_true", help="do not use the local chunk cache")
    _common(p)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("log", help="list the snapshots of a ref, newest first")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    p.add_argument("--ref", default="latest", help="the ref whose history to list "
                                                   "(default: latest)")
    p.add_argument("--commit", metavar="PREFIX",
                   help="only snapshots pushed from a git commit starting with PREFIX")
    _common(p, jobs=False)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("ls", help="list the entries of a snapshot")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ref", type=nonempty("--ref"),
                   help="list the snapshot this ref names (default: latest)")
    g.add_argument("--snapshot", type=nonempty("--snapshot"),
                   help="list this snapshot (an id or a unique prefix)")
    _common(p, jobs=False)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("diff", help="compare two snapshots, or a snapshot and a folder",
                       description="A and B are snapshot ids, ref names (ref:NAME, or a plain "
                                   "name), git:<commit> names or local folders (a path that "
                                   "exists). B defaults to the current folder. Exit code 1 "
                                   "when they differ.")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    p.add_argument("a", metavar="A", help="the old side: a snapshot id, ref:NAME, a ref name, "
                                          "git:<commit> or a folder")
    p.add_argument("b", metavar="B", nargs="?", default=".",
                   help="the new side, as A (default: the current folder)")
    _common(p, jobs=False)
    p.set_defaults(func=cmd_diff)

    _maintenance_commands(sub)
    from snapsync import cli_deploy  # export, exec

    cli_deploy.register(sub, _common)
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    from snapsync.engine.check import check

    r = check(_store(args), read_data=args.read_data)

    def human() -> str:
        lines = [f"{'OK' if r.ok else 'PROBLEMS'}: {r.url}",
                 f"  refs {r.refs}, log entries {r.log_entries}, snapshots {r.snapshots}, "
                 f"packs {r.packs} ({r.packs_referenced} referenced), chunks {r.chunks}"]
        if r.read_data:
            lines.append(f"  read {r.packs_read} packs ({format_size(r.bytes_read)}), verified "
                         f"{r.chunks_verified} chunks")
        lines += [f"  problem: {p}" for p in r.problems]
        lines += [f"  note: {n}" for n in r.notes]
        return "\n".join(lines)

    _emit(args, r.as_dict(), human)
    if not r.ok and args.quiet:  # quiet drops the summary, not the problems
        for p in r.problems:
            print(f"snapsync: problem: {p}", file=sys.stderr)
    return 0 if r.ok else ProblemsFound.exit_code


_PLAN_ITEMS = 20  # items of each kind a human-readable gc plan lists (--json has them all)


def _items(label: str, items: Sequence[str]) -> list[str]:
    lines = [f"  {label} ({len(items)}):"] if items else []
    lines += [f"    {x}" for x in items[:_PLAN_ITEMS]]
    if len(items) > _PLAN_ITEMS:
        lines.append(f"    ... and {len(items) - _PLAN_ITEMS} more (--json lists all)")
    return lines


def cmd_gc(args: argparse.Namespace) -> int:
    from snapsync.engine.gc import gc

    keep_within = parse_duration(args.keep_within, "--keep-within") \
        if args.keep_within else None
    r = gc(_store(args), keep_last=args.keep_last, keep_within=keep_within,
           dry_run=args.dry_run, grace=parse_duration(args.grace, "--grace"),
           repack=args.repack, repack_below=args.repack_below)

    def human() -> str:
        verb = "would delete" if r.dry_run else "deleted"
        lines = [f"gc {r.url}{' (dry run: the plan)' if r.dry_run else ''}: kept "
                 f"{len(r.snapshots_kept)} snapshots, dropped {len(r.snapshots_dropped)}",
                 f"  {verb} {r.log_entries_deleted} log entries, {r.manifests_deleted} "
                 f"manifests, {r.packs_deleted} packs ({format_size(r.bytes_freed)})",
                 f"  packs kept {r.packs_kept}, young unreferenced packs kept {r.packs_young}",
                 f"  {'would repack' if r.dry_run else 'repacked'} {r.packs_repacked} mostly "
                 f"dead packs ({format_size(r.bytes_repacked)} live, "
                 f"{r.manifests_rewritten} manifests rewritten)"]
        if r.dry_run and r.plan is not None:
            p = r.plan
            lines += _items("snapshots to drop", p.snapshots_dropped)
            lines += _items("log entries to delete", p.log_entries)
            lines += _items("manifests to delete", p.manifests)
            lines += _items("packs to delete", p.packs)
            lines += _items("packs to repack", [f"{c.pack} ({format_size(c.live_bytes)} live of "
                                                f"{format_size(c.size)})" for c in p.repack])
        lines += [f"  note: {n}" for n in r.notes]
        return "\n".join(lines)

    _emit(args, r.as_dict(), human)
    return 0


def _maintenance_commands(sub: Any) -> None:
    from snapsync.engine.policy import DEFAULT_REPACK_BELOW

    p = sub.add_parser("check", help="verify that every snapshot in a store is complete",
                       description="Follow refs and log entries to manifests, manifests to "
                                   "packs. Exit code 10 when anything is wrong.")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    p.add_argument("--read-data", action="store_true",
                   help="download every referenced pack and verify every chunk")
    _common(p, jobs=False)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("gc", help="drop old snapshots and delete unreferenced data",
                       description="Keep, per ref, the newest --keep-last snapshots (and those "
                                   "newer than --keep-within); delete log entries, manifests "
                                   "and packs no kept snapshot needs; repack mostly dead "
                                   "packs. Safe while pushes run, as long as no push takes "
                                   "longer than --grace. --dry-run prints the plan that gc "
                                   "would carry out.")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    p.add_argument("--keep-last", type=int, required=True, metavar="N",
                   help="per ref, keep the newest N distinct snapshots (at least 1)")
    p.add_argument("--keep-within", metavar="DURATION",
                   help="per ref, also keep snapshots logged within DURATION (e.g. 7d, 12h)")
    p.add_argument("--grace", default="24h", metavar="DURATION",
                   help="never delete anything younger, keep snapshots that were ref heads "
                        "this recently (default 24h; must exceed the longest push "
                        "plus 1h)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (what would be deleted and repacked), change nothing")
    p.add_argument("--no-repack", dest="repack", action="store_false",
                   help="do not copy the live chunks of mostly dead packs into new packs")
    p.add_argument("--repack-below", type=float, default=DEFAULT_REPACK_BELOW,
                   metavar="FRACTION",
                   help="repack packs whose live bytes are below this fraction of their size "
                        f"(default {DEFAULT_REPACK_BELOW}); the old packs are deleted by a "
                        "later gc, after --grace")
    _common(p, jobs=False)
    p.set_defaults(func=cmd_gc)

def main(argv: Sequence[str] | None = None, open_store: StoreOpener | None = None) -> int:
    """Run the command line ``argv``; return the exit code.

    ``open_store(url, storage_options)`` opens each store a command uses (default:
    :func:`snapsync.store.open_store`); tests pass one that wraps the backend to inject faults.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    as_json = getattr(args, "json", False)
    args.progress = TqdmProgress(enabled=not quiet and not as_json and sys.stderr.isatty())

    def warn(msg: str) -> None:
        if not quiet:
            print(f"snapsync: warning: {msg}", file=sys.stderr)

    def note(msg: str) -> None:
        if not quiet:
            print(f"snapsync: {msg}", file=sys.stderr)

    def retrying(event: Any) -> None:
        # "retrying GET s3://b/p/snapsync.json (attempt 2 of 5): TimeoutError: ..."
        if not quiet:
            print(f"snapsync: {event.message()}", file=sys.stderr, flush=True)

    args.warn, args.note, args.on_retry = warn, note, retrying
    if open_store is None:
        from snapsync.store import open_store
    args.open_store = open_store
    args.store = lambda url=None: _store(args, url)  # for commands registered elsewhere
    try:
        return int(args.func(args) or 0)
    except SnapsyncError as exc:
        args.progress.close()
        print(f"snapsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        args.progress.close()
        print("snapsync: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
