"""The ``robaudit`` command line. ``main(argv, env) -> int``; the only code that writes to the terminal.

Exit codes: 0 all gates pass, 1 a gate failed, 2 usage/config/input error,
3 the audit itself failed, 130 interrupted (finished work is kept for ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from robaudit.errors import ExitCode, RobauditError


@dataclass
class Env:
    """The process environment the CLI talks to; tests substitute their own streams."""

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)

    @property
    def interactive(self) -> bool:
        return bool(getattr(self.stderr, "isatty", lambda: False)())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robaudit", description="Robustness and verification audits for image classifiers.")
    from robaudit import __version__

    p.add_argument("--version", action="version", version=f"robaudit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_options(sp: argparse.ArgumentParser, default_out: str) -> None:
        sp.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
        sp.add_argument("--profile", choices=["quick", "standard", "full"], help="budget profile")
        sp.add_argument("--resume", action="store_true", help="continue an interrupted audit in --out")
        sp.add_argument("--baseline", metavar="OLD.json", help="previous results.json for max_drop gates")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
        sp.add_argument("--fail-fast", action="store_true", help="stop at the first stage error (exit 3)")
        sp.add_argument("--verbose", "-v", action="store_true", help="log progress details to stderr")
        sp.add_argument("--device", default="auto", metavar="DEVICE",
                        help="cpu, cuda, cuda:N or auto (default: auto = cuda when available); under "
                             "torchrun, cuda means one GPU per local rank")

    a = sub.add_parser("audit", help="audit a model (CONFIG file, or MODEL with --data)")
    a.add_argument("target", metavar="CONFIG|MODEL", help="a .toml/.json config, or a model file / spec")
    run_options(a, "robaudit-out")
    g = a.add_argument_group("auditing a MODEL directly (without a config)")
    g.add_argument("--data", help="'digits', an .npz file, an ImageFolder dir, or torchvision:NAME")
    g.add_argument("--data-root", help="directory of a torchvision data set already on disk")
    g.add_argument("--n", type=int, help="number of samples (chosen by --seed)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    g.add_argument("--factory", help="'module:function' or 'file.py:function' building the architecture")
    g.add_argument("--arch", help="'timm:NAME' or 'torchvision:NAME' for a checkpoint")
    g.add_argument("--input-shape", help="C,H,W")
    g.add_argument("--num-classes", type=int)
    g.add_argument("--mean", help="per-channel mean, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", help="per-channel std")
    g.add_argument("--name", help="model display name")
    g.add_argument("--stages", help="comma-separated stage ids (default: the profile's plan)")
    g.add_argument("--min-accuracy", type=float, help="gate: clean accuracy must be at least this")
    g.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="allow loading a fully pickled model (executes code from the file)")

    d = sub.add_parser("demo", help="audit the shipped demo models (digits CNN and ViT)")
    run_options(d, "robaudit-demo")

    r = sub.add_parser("report", help="re-render report.html, junit.xml, summary.md from a results.json")
    r.add_argument("results", metavar="results.json")
    r.add_argument("--out", help="output directory (default: next to results.json)")

    c = sub.add_parser("compare", help="compare two results.json files (release regression gate)")
    c.add_argument("old", metavar="OLD.json")
    c.add_argument("new", metavar="NEW.json")
    c.add_argument("--max-drop", type=float, help="fail (exit 1) if a gated metric gets worse by more than this")
    c.add_argument("--metric", action="append", metavar="PATTERN",
                   help="glob of 'stage.metric' names to gate (repeatable; default: all)")
    c.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    c.add_argument("--all", action="store_true", help="show unchanged metrics too")

    li = sub.add_parser("list", help="list stages, defenses and their metrics")
    li.add_argument("what", nargs="?", choices=["stages", "defenses", "metrics"], default="stages")

    v = sub.add_parser("validate", help="check a config without running it")
    v.add_argument("config")
    return p


def main(argv: list[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        stream=env.stderr, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        from robaudit import commands

        return int(getattr(commands, f"cmd_{args.command}")(args, env))
    except RobauditError as err:
        print(f"robaudit: error: {err}", file=env.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f" Finished work units are saved in {out}; rerun with --resume to continue." if out else ""
        print(f"\nrobaudit: interrupted.{hint}", file=env.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception:  # noqa: BLE001 - the tool itself broke: exit 3 with the traceback
        import traceback

        traceback.print_exc(file=env.stderr)
        print("robaudit: internal error (exit 3); please report it with the traceback above", file=env.stderr)
        return int(ExitCode.AUDIT_FAILED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
