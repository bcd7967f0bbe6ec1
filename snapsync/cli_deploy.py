"""CLI commands for shipping code into containers: ``export`` and ``exec``.

``snapsync export`` writes a snapshot as a deterministic tar (a ``docker build -`` context);
``snapsync exec`` is a container entrypoint: pull a snapshot into a folder, then replace
itself with a command run there. Registered by ``snapsync.cli`` like the maintenance ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from snapsync.cli_args import URL_HELP, nonempty
from snapsync.errors import LocalFileError, UsageError

EXIT_COMMAND_NOT_FOUND = 127  # what a shell says, so container tooling reads it the same way


def cmd_export(args: argparse.Namespace) -> int:
    from snapsync.engine.export import export

    if args.output == "-":
        if sys.stdout.isatty():
            raise UsageError("-o -: refusing to write a tar to a terminal; redirect stdout")
        r = export(args.store(), sys.stdout.buffer, ref=args.ref,
                   snapshot=args.snapshot, dockerfile=args.dockerfile,
                   cache_dir=args.cache_dir)
    else:
        tmp = f"{args.output}.snapsync-tmp"
        try:
            f = open(tmp, "wb")  # noqa: SIM115 (closed below; errors name the option)
        except OSError as exc:
            raise LocalFileError(f"--output {args.output}: {exc.strerror or exc}") from None
        try:
            with f:
                r = export(args.store(), f, ref=args.ref,
                           snapshot=args.snapshot, dockerfile=args.dockerfile,
                           cache_dir=args.cache_dir)
            os.replace(tmp, args.output)  # never a half-written tar under the real name
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if not args.quiet:
        where = "stdout" if args.output == "-" else args.output
        print(f"snapsync: exported snapshot {r.snapshot_id} ({r.entries} entries, "
              f"{r.bytes} bytes) to {where}", file=sys.stderr)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from snapsync.engine.pull import pull

    command = list(args.command)
    # Options given after URL land in the remainder; they are parsed here, up to "--".
    if "--" in command:
        cut = command.index("--")
        head, command = command[:cut], command[cut + 1:]
    elif command[:1] and command[0].startswith("-"):
        head, command = command, []
    else:
        head = []
    if head:
        args.exec_options.parse_args(head, namespace=args)
    if not args.dir:
        raise UsageError("exec needs --dir DIR (or $SNAPSYNC_DIR): the folder to pull into")
    if not command:
        raise UsageError("exec needs a command after --, e.g. snapsync exec URL -- python "
                         "flow.py")
    r = pull(args.store(), args.dir, ref=args.ref,
             snapshot=args.snapshot, delete=True, jobs=args.jobs, cache_dir=args.cache_dir,
             on_warning=args.warn)
    if not args.quiet:  # stderr: stdout belongs to the command
        print(f"snapsync: pulled snapshot {r.snapshot_id} into {r.directory}: {r.files} "
              f"files, {r.files_written} written, {r.chunks_cached} chunks from the cache, "
              f"{r.chunks_downloaded} downloaded, {r.seconds:.2f} s", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(r.directory)
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"snapsync: error: exec: command not found: {command[0]}", file=sys.stderr)
        return EXIT_COMMAND_NOT_FOUND
    except OSError as exc:
        raise LocalFileError(f"exec: cannot run {command[0]}: {exc.strerror}") from None
    return 0  # pragma: no cover (execvp does not return)


def _exec_options(p: argparse.ArgumentParser, common: Callable[..., None]) -> None:
    p.add_argument("--dir", "-d", default=os.environ.get("SNAPSYNC_DIR") or None,
                   help="folder to pull into (default: $SNAPSYNC_DIR; required)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ref", default=os.environ.get("SNAPSYNC_REF") or None,
                   type=nonempty("--ref"),
                   help="ref to pull (default: $SNAPSYNC_REF or latest)")
    g.add_argument("--snapshot", default=os.environ.get("SNAPSYNC_SNAPSHOT") or None,
                   type=nonempty("--snapshot"),
                   help="snapshot id, prefix or git:<commit> (default: $SNAPSYNC_SNAPSHOT)")
    common(p)


def register(sub: Any, common: Callable[..., None]) -> None:
    """Add ``export`` and ``exec`` to the CLI's subparsers."""
    p = sub.add_parser("export", help="write a snapshot as a deterministic tar (docker context)",
                       description="Write a snapshot as a tar: sorted, mtime 0, owner 0, the "
                                   "snapshot's modes, symlinks and empty folders. The same "
                                   "snapshot always gives the same bytes. Use it as a "
                                   "`docker build -` context.")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ref", type=nonempty("--ref"), help="ref to export (default: latest)")
    g.add_argument("--snapshot", type=nonempty("--snapshot"),
                   help="snapshot id, unique prefix or git:<commit>")
    p.add_argument("--output", "-O", "--out", dest="output", required=True, metavar="FILE",
                   help="the tar file to write, or - for stdout")
    p.add_argument("--dockerfile", metavar="PATH",
                   help="put this file first in the tar, as Dockerfile")
    common(p, jobs=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("exec", help="container entrypoint: pull a snapshot, then run a command "
                                    "in it",
                       usage="snapsync exec [options] URL -- COMMAND [ARGS...]",
                       description="Make --dir hold the snapshot (stale files removed), then "
                                   "replace this process with COMMAND run in that folder. Put "
                                   "the chunk cache on a volume (--cache-dir or "
                                   "$SNAPSYNC_CACHE_DIR) so a restart downloads only what "
                                   "changed.")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    _exec_options(p, common)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the command to run in --dir once it holds the snapshot")
    late = argparse.ArgumentParser(prog="snapsync exec", add_help=False)
    _exec_options(late, common)
    p.set_defaults(exec_options=late)
    p.set_defaults(func=cmd_exec)
