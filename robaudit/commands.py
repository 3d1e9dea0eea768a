"""Implementations of the CLI commands (argument parsing lives in robaudit.cli)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from robaudit.cli import Env
from robaudit.config import AuditConfig, Profile, load_config
from robaudit.errors import ConfigError, DataError, ExitCode
from robaudit.results import AuditResult

CONFIG_SUFFIXES = (".toml", ".json")


def cmd_audit(args: argparse.Namespace, env: Env) -> int:
    target = args.target
    if target.endswith(CONFIG_SUFFIXES):
        cfg = load_config(target, profile=args.profile)
    else:
        if not args.data:
            raise ConfigError(f"auditing a model file directly needs --data (e.g. --data digits); "
                              f"or give a config file ({'/'.join(CONFIG_SUFFIXES)})", "--data")
        cfg = _config_from_model_args(args)
    return _run(cfg, args, env)


def cmd_demo(args: argparse.Namespace, env: Env) -> int:
    cfg = load_config(find_examples() / "demo.toml", profile=args.profile)
    return _run(cfg, args, env)


def find_examples() -> Path:
    """The examples/ directory holding demo.toml and the demo models."""
    import robaudit

    candidates = [os.environ.get("ROBAUDIT_EXAMPLES"), Path.cwd() / "examples",
                  Path(robaudit.__file__).resolve().parents[1] / "examples"]
    for c in candidates:
        if c and (Path(c) / "demo.toml").is_file():
            return Path(c)
    raise ConfigError("cannot find examples/demo.toml: run the demo from a robaudit source checkout, "
                      "or set ROBAUDIT_EXAMPLES to its examples/ directory")


def _config_from_model_args(args: argparse.Namespace) -> AuditConfig:
    from robaudit.plan import config_from_args

    def floats(text: str | None, what: str) -> list[float] | None:
        if text is None:
            return None
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(f"expected comma-separated numbers, got {text!r}", what) from None

    shape = floats(args.input_shape, "--input-shape")
    model = {
        "source": args.target, "name": args.name, "factory": args.factory, "arch": args.arch,
        "allow_unsafe_pickle": args.allow_unsafe_pickle,
        "input": {"shape": [int(s) for s in shape] if shape else None, "num_classes": args.num_classes,
                  "mean": floats(args.mean, "--mean"), "std": floats(args.std, "--std")},
    }
    if args.target.startswith(("timm:", "torchvision:")):
        raise ConfigError("give the checkpoint as MODEL and the architecture with --arch timm:NAME", "MODEL")
    model = {k: v for k, v in model.items() if v is not None}
    data = {"source": args.data, "n": args.n, "seed": args.seed, "resize": args.resize, "root": args.data_root}
    data = {k: v for k, v in data.items() if v is not None}
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    return config_from_args(model, data, seed=args.seed, profile=args.profile or Profile.QUICK.value,
                            stages=stages, min_accuracy=args.min_accuracy)


def _run(cfg: AuditConfig, args: argparse.Namespace, env: Env) -> int:
    from robaudit.outputs import write_outputs
    from robaudit.progress import TerminalProgress
    from robaudit.runner import AuditOptions, run_audit
    from robaudit.sharding import RankContext, process_group

    out = Path(args.out)
    ranks = RankContext.from_env()
    baseline = AuditResult.read(args.baseline) if args.baseline and ranks.is_main else None
    progress = TerminalProgress(env.stderr, enabled=env.interactive and not args.quiet and ranks.is_main)
    try:
        with process_group(ranks):
            result = run_audit(cfg, out, AuditOptions(resume=args.resume, fail_fast=args.fail_fast,
                                                      baseline=baseline, progress=progress,
                                                      device=args.device, ranks=ranks))
    finally:
        progress.close()
    if result is None:  # a torchrun worker: its units are merged into rank 0's run store
        return int(ExitCode.OK)
    paths = write_outputs(result, out)
    if not args.quiet:
        _print_summary(result, env)
        print(f"\nreport: {paths['report.html']}\nresults: {paths['results.json']}", file=env.stdout)
    return result.exit_code


def _print_summary(result: AuditResult, env: Env) -> None:
    from robaudit.reports.terminal import render_terminal

    width = 100
    try:
        width = min(os.get_terminal_size(env.stdout.fileno()).columns, 140)
    except (OSError, ValueError, AttributeError):
        pass
    print(render_terminal(result, width), file=env.stdout)


def cmd_report(args: argparse.Namespace, env: Env) -> int:
    from robaudit.outputs import write_outputs

    path = Path(args.results)
    result = AuditResult.read(path)
    from robaudit.reports.schema import ResultsSchemaError, validate

    try:
        validate(result.to_json())
    except ResultsSchemaError as err:
        raise DataError(f"{path} does not match the results.json schema: {err}") from err
    out = Path(args.out) if args.out else path.parent
    copy_json = out.resolve() != path.parent.resolve()  # a new directory gets its own results.json
    paths = write_outputs(result, out, results_json=copy_json)
    print(f"report: {paths['report.html']}", file=env.stdout)
    return int(ExitCode.OK)


def cmd_compare(args: argparse.Namespace, env: Env) -> int:
    from robaudit.compare import compare_results, render_changes

    old, new = AuditResult.read(args.old), AuditResult.read(args.new)
    if args.max_drop is not None and args.max_drop < 0:
        raise ConfigError("--max-drop must be >= 0", "--max-drop")
    changes = compare_results(old, new, max_drop=args.max_drop, patterns=args.metric)
    if not changes:
        raise DataError("the two results files share no metrics (different stage ids?)")
    print(render_changes(changes, markdown=False, only_changed=not args.all), file=env.stdout, end="")
    failed = [c for c in changes if not c.passed]
    if args.markdown:
        Path(args.markdown).write_text(render_changes(changes, markdown=True, only_changed=not args.all),
                                       encoding="utf-8")
    if args.max_drop is not None:
        verdict = "FAIL" if failed else "PASS"
        print(f"\n{verdict}: {len(failed)} of {sum(c.gated for c in changes)} gated metrics regressed by more "
              f"than {args.max_drop:g}", file=env.stdout)
    return int(ExitCode.GATE_FAILED if failed else ExitCode.OK)


def cmd_list(args: argparse.Namespace, env: Env) -> int:
    from robaudit.registry import DEFENSES, STAGES

    if args.what == "defenses":
        for name, fn in DEFENSES.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:28s} {doc[0] if doc else ''}", file=env.stdout)
        return 0
    for name in STAGES.names():
        try:
            cls = STAGES.get(name)
        except ImportError as err:
            print(f"{name:22s} unavailable: {err}", file=env.stdout)
            continue
        needs = ",".join(sorted(c.value for c in cls.requires)) or "-"
        print(f"{name:22s} {cls.kind.value:11s} requires={needs:24s} {cls.description}", file=env.stdout)
        if args.what == "metrics":
            for metric, doc in cls.metric_docs.items():
                print(f"    {metric:36s} {doc}", file=env.stdout)
    return 0


def cmd_validate(args: argparse.Namespace, env: Env) -> int:
    from robaudit.stage_factory import create_stages

    cfg = load_config(args.config)
    stages = create_stages(cfg)
    for m in cfg.models:
        src = Path(m.source) if m.source and not m.source.startswith(("timm:", "torchvision:")) else None
        if src is not None and not src.exists():
            raise ConfigError(f"model file {m.source} not found", "models.source")
    print(f"{args.config}: OK ({len(cfg.models)} model(s), {len(stages)} stage(s), {len(cfg.gates)} gate(s), "
          f"profile {cfg.profile.value})", file=env.stdout)
    return 0
