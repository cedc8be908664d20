"""`python -m cascade`: run experiments, build the book, report store status and claims, diff them against a git
revision, list, benchmark, check the machine.

Errors are one line on stderr with exit code 2, and are raised before any compute.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys


def _params(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"-p {pair!r} is invalid; allowed: name=value")
        if name.strip() in out:
            raise ValueError(f"-p {name.strip()} is given twice ({out[name.strip()]!r} and {value.strip()!r}); "
                             "allowed: each parameter once")
        out[name.strip()] = value.strip()
    return out


def cmd_run(args) -> int:
    from . import experiments

    if args.dry_run:
        return _print_price(args)
    result = experiments.run(args.experiment, args.profile, force=args.force, quiet=args.json,
                             workers=args.workers, scheduler=args.scheduler, **_params(args.param))
    if args.json:
        print(json.dumps({"experiment": result.experiment, "profile": result.profile, "runs": len(result.records),
                          "computed": result.computed, "verdicts": [v.as_dict() for v in result.verdicts]}))
        return 0
    print(f"{result.experiment} [{result.profile}]: {len(result.records)} runs, {result.computed} computed, "
          f"{result.wall_time_s / 60:.1f} min of stored compute")
    for v in result.verdicts:
        print(f"  {v.claim} {v.word}: {v.summary}\n    ({v.direction})")
    return 0


def _minutes(seconds) -> str:
    return "unknown (no stored run of its kind to estimate from)" if seconds is None else f"{seconds / 60:.1f} min"


def _print_price(args) -> int:
    """What `run` would compute for one experiment: each task with why and its estimate, then the totals."""
    from . import experiments

    price = experiments.price(args.experiment, args.profile, workers=args.workers, **_params(args.param))
    if args.json:
        print(json.dumps(price, indent=1))
        return 0
    print(f"{price['experiment']} [{price['profile']}]: {price['runs']} runs, {price['stored']} stored, "
          f"{len(price['tasks'])} to compute")
    for t in price["tasks"]:
        est = "?" if t["estimated_s"] is None else f"{t['estimated_s']:.0f} s"
        print(f"  {t['kind']:9s} {t['key']}  {t['why']:18s} {est}" + (f"  ({t['problem']})" if "problem" in t else ""))
    if price["tasks"]:
        print(f"estimated: {_minutes(price['estimated_s'])} of compute, {_minutes(price['wall_s'])} of wall time on "
              f"{price['workers']} worker(s)")
    return 0


def cmd_status(args) -> int:
    from . import experiments

    if args.experiment:
        return _print_price(args)
    if args.param:
        raise ValueError("-p needs an experiment: `status EXPERIMENT -p NAME=VALUE`; allowed: "
                         f"{', '.join(experiments.registry())}")
    prices = [experiments.price(name, args.profile, workers=args.workers) for name in experiments.registry()]
    stale = experiments.stale(experiments.Profile.resolve(args.profile))
    if args.json:
        print(json.dumps({"experiments": prices, "stale": stale}, indent=1))
        return 0
    for p in prices:
        missing = sum(t["why"] == "record missing" for t in p["tasks"])
        eta = "" if not p["tasks"] else f", {len(p['tasks'])} tasks, about {_minutes(p['estimated_s'])} of compute"
        print(f"{p['experiment']:14s} done {p['stored']:3d}  missing {missing:3d}{eta}")
        for t in p["tasks"]:
            if "problem" in t:
                print(f"  corrupt: {t['problem']}")
    print(f"stale records (made by an older config or code version): {len(stale)}")
    for item in stale:
        print(f"  {item}")
    return 0


def cmd_list(args) -> int:
    import dataclasses

    from . import experiments

    for exp in experiments.registry().values():
        print(f"{exp.name}  (notebook {exp.notebook}; claims {', '.join(exp.claims)})")
        print(f"  {exp.description}")
        for f in dataclasses.fields(exp.config):
            smoke = exp.profiles.get("smoke", {}).get(f.name)
            extra = f"  [smoke: {smoke}]" if smoke is not None else ""
            print(f"    {f.name} = {f.default!r}{extra}")
    return 0


def cmd_book(args) -> int:
    from . import book

    print(book.build(profile=args.profile, only=args.only, force=args.force, workers=args.workers,
                     scheduler=args.scheduler))
    return 0


def cmd_bench(args) -> int:
    from .bench import suite

    return suite.main(quick=args.quick, as_json=args.json, sweeps=args.sweeps)


def cmd_claims(args) -> int:
    from . import experiments, report

    rows = report.claims(experiments.Profile.resolve(args.profile))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(report.claims_markdown(rows, statements=False))
    return 0


def cmd_diff(args) -> int:
    from . import experiments, report

    experiments.check_profile(args.profile)
    rows = report.diff(args.rev, args.profile, everything=args.all)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print(f"no verdict, effect, CI or seed count changed between {args.rev} and the working tree [{args.profile}]")
    else:
        print(report.markdown_table(["claim", "experiment", "field", args.rev, "working tree", "change"],
                                    [list(r.values()) for r in rows]))
    return 0


def cmd_migrate(args) -> int:
    from .experiments import check_profile
    from .runs import KINDS
    from .store import Store, migrate

    check_profile(args.profile)
    store = Store(args.profile)
    moved = migrate(store.root, args.profile, KINDS)
    renamed = sum(old != new for old, new in moved.items())
    print(f"{len(moved)} records of {store.root / args.profile} rewritten ({renamed} moved to their current keys, "
          f"{len(moved) - renamed} given their digest); nothing recomputed")
    return 0


def cmd_doctor(args) -> int:
    from . import doctor

    return doctor.main(every=args.all)


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1,
                   help="compute independent runs in this many single-threaded processes (default 1; "
                        "2 is fastest on 2 cores, see the benchmark)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="compute on the workers of this Dask scheduler instead (default $CASCADE_SCHEDULER); "
                        "records are written here")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cascade", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="compute the missing runs of an experiment, then print its verdicts")
    r.add_argument("experiment")
    r.add_argument("--profile", default="paper", help="smoke, paper (default) or full")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter (repeatable); see `python -m cascade list`")
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout, no progress bar")
    r.add_argument("--force", action="store_true", help="recompute runs even if stored")
    r.add_argument("--dry-run", action="store_true",
                   help="list the runs that would be computed (kind, key, why, estimated seconds) and compute nothing")
    _workers(r)
    r.set_defaults(func=cmd_run)
    b = sub.add_parser("book", help="compute missing runs, execute the notebooks with papermill, build the HTML book")
    b.add_argument("--profile", default="paper", help="smoke, paper (default) or full")
    b.add_argument("--only", help="one notebook or experiment name")
    b.add_argument("--force", action="store_true", help="recompute the runs behind the notebooks")
    _workers(b)
    b.set_defaults(func=cmd_book)
    s = sub.add_parser("status", help="done, missing and stale records per experiment; with EXPERIMENT (and -p), "
                                      "the runs that `run` would compute, why, and their estimated time")
    s.add_argument("experiment", nargs="?", help="one experiment (default: every one, in a line each)")
    s.add_argument("--profile", default="paper", help="smoke, paper (default) or full")
    s.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter (repeatable), as for `run`")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--workers", type=int, default=1, help="price the wall time on this many workers (default 1)")
    s.set_defaults(func=cmd_status)
    sub.add_parser("list", help="experiments, their parameters, defaults and claims").set_defaults(func=cmd_list)
    be = sub.add_parser("bench", help="training throughput and overheads against a conventional baseline")
    be.add_argument("--quick", action="store_true", help="a few steps only (estimates, for smoke tests)")
    be.add_argument("--json", action="store_true", help="print one JSON object")
    be.add_argument("--sweeps", metavar="CHAPTERS",
                    help="chapters whose sweep slice (seed 0) is computed and timed, comma-separated, or 'none' "
                         "(default: every chapter's paper slice, about an hour on 2 cores; --quick: one smoke "
                         "slice)")
    be.set_defaults(func=cmd_bench)
    c = sub.add_parser("claims", help="the claims table from stored records only (never computes)")
    c.add_argument("--profile", default="paper", help="smoke, paper (default) or full")
    c.add_argument("--json", action="store_true", help="print a JSON list, one object per row")
    c.set_defaults(func=cmd_claims)
    d = sub.add_parser("diff", help="what changed in the claims table (verdicts, effects, CIs, seeds) between the "
                                    "committed store at a git revision and the working tree")
    d.add_argument("rev", metavar="REV", help="a commit, branch or tag, for example HEAD~1 or main")
    d.add_argument("--profile", default="paper", help="smoke, paper (default) or full")
    d.add_argument("--all", action="store_true", help="show every row, not only the changes")
    d.add_argument("--json", action="store_true", help="print a JSON list, one object per row")
    d.set_defaults(func=cmd_diff)
    m = sub.add_parser("migrate", help="move stored records to the keys of the current config form (no compute)")
    m.add_argument("--profile", default="paper", help="smoke, paper (default) or full")
    m.set_defaults(func=cmd_migrate)
    dr = sub.add_parser("doctor", help="machine facts that change results, and a gradient check of the book's models "
                                       "against float64 (exit 1 on failure)")
    dr.add_argument("--all", action="store_true",
                    help="check every registry model, torchvision's fixed-width ones included (slower)")
    dr.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    from .book import BookError

    from ._cpu import guard_amx, malloc_choice

    args = parser().parse_args(argv)
    guard_amx()
    try:
        malloc_choice()  # a bad $CASCADE_MALLOC fails here, not in every worker
        return args.func(args)
    except (ValueError, FileNotFoundError, BookError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        return 0
    except OSError as e:  # a full disk, a folder made read-only mid-run: the system's reason and the file
        hint = "; allowed: free space and writable folders for the store and the cache" \
            if e.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT) else ""
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
