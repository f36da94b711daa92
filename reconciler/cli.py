"""`reconciler <command> [options]`: parse, build, execute; one handler maps errors to exit codes."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from reconciler import __version__
from reconciler.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, UserError


def command_names() -> list[str]:
    """Every module in reconciler/commands/ not starting with '_' is a subcommand."""
    import pkgutil

    from reconciler import commands

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # printed as `reconciler: error: <message>` by main(): the program's name only once
        raise UserError(f"{message} (see `{self.prog} --help`)", EXIT_USAGE)


REPO_HELP = "the deployment repo, or any folder inside it (default: the current folder)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `only`, just that subcommand (start-up: import one command module, not all)."""
    parser = _Parser(prog="reconciler", description="Declarative GitOps reconciler for run-once deployment jobs.")
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    parser.add_argument("--repo", type=Path, default=Path("."), help=REPO_HELP)  # also before the command
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in [only] if only is not None else command_names():
        module = importlib.import_module(f"reconciler.commands.{name}")
        cmd = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else None,
                             description=module.__doc__)
        if getattr(module, "TAKES_REPO", True):
            # SUPPRESS: when not given after the command, the value given before it (or the default) stays
            cmd.add_argument("--repo", type=Path, default=argparse.SUPPRESS, help=REPO_HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(func=module.run)
    return parser


_ENVIRONMENT = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.EMFILE: "too many open files",
                errno.ENOMEM: "out of memory"}


def environment_error(exc: OSError) -> str | None:
    """One line for an environment error (SPEC 9.1 rule 7), or None for anything else."""
    reason = _ENVIRONMENT.get(exc.errno or 0)
    if reason is None:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{reason}{where}; fix that, then try again (a build this interrupted stays WORKING and is recovered)"


def _command_word(words: list[str]) -> str | None:
    """The subcommand named on the command line (past a global `--repo DIR`), to import only that one."""
    names = command_names()
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--repo":
            skip = True
        elif not word.startswith("--repo="):
            return word if word in names else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(_command_word(words))
        args = parser.parse_args(words)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if getattr(importlib.import_module(f"reconciler.commands.{args.command}"), "TAKES_REPO", True):
            from reconciler.commands._root import find_root

            args.given_repo = args.repo
            args.repo = find_root(args.repo)  # like git: the repository's top from any folder inside it
        code: int = args.func(args)
        return code
    except UserError as exc:
        print(f"reconciler: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("reconciler: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the machine, not the code: a full disk, a read-only folder, permissions
        known = environment_error(exc)
        if known is None:
            raise
        print(f"reconciler: error: {known}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: one clear line for the user, the traceback in a crash log
        log = Path.cwd() / ".reconciler-crash.log"
        try:
            import tempfile

            log = Path(tempfile.gettempdir()) / "reconciler-crash.log"
            log.write_text(traceback.format_exc(), "utf-8")
        except OSError:
            pass
        print(f"reconciler: internal error: {type(exc).__name__}: {exc} (details in {log}; please report it)",
              file=sys.stderr)
        return EXIT_INTERNAL
