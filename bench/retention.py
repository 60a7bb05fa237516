#!/usr/bin/env python3
"""Retention benchmark (`state.history`): the state file over many runs of one job.

A job of --size people (default 20,000) runs --runs times (default 200) against a fresh
`xaas sim`, each time after 1% of the people changed (80% profile updates, 10% terminations,
5% deleted rows, 5% new hires). Every run records its per-record decisions (one row per person)
in the state file. Two configurations, each from an empty state:

- **kept forever** (`state.history.keep_days: null`): what every release before retention did;
- **retention**: `keep_days: 0, keep_runs: --keep-runs` (default 20): only the last runs of the
  job are kept (the default is 30 days and at least 50 runs; days cannot be waited for here).

It prints the state file's size (the file plus its WAL) every --every runs, the growth per run
over the last half of the runs, and the wall time of the runs (`xaas run` start to exit, which
includes the pruning that follows the import) as median and 90th percentile, for both.

    bench/retention.py                        # 20,000 people, 200 runs each way; about 10 minutes
    bench/retention.py --size 5000 --runs 60  # quicker
"""
import argparse, os, random, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def state_mib(d):
    total = 0
    for suffix in ("", "-wal"):
        p = os.path.join(d, "state.db" + suffix)
        if os.path.exists(p):
            total += os.path.getsize(p)
    return total / 2**20


def series(size, runs, every, history):
    rnd = random.Random(18)
    people = [c.person(i, rnd) for i in range(size)]
    next_id = size
    sizes, walls = [], []
    with tempfile.TemporaryDirectory() as d, c.Sim(clock_scale=3000.0, latency_ms=0, rate_limit=100000,
                                                   processing_ms=20) as sim:
        cfg = os.path.join(d, "xaas.yaml")
        c.write_config(cfg, sim, job_extra="    safeguards: {max_deactivations_percent: 100, min_source_percent: 0}\n")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("jobs:\n", f"state:\n  path: {d}/state.db\n  history: {history}\njobs:\n", 1))
        for n in range(1, runs + 1):
            if n > 1:
                next_id = c.change_one_percent(people, rnd, next_id, n)
            c.write_csv(os.path.join(d, "users.csv"), people)
            wall, job = c.run_xaas(cfg)
            if job["outcome"] != "success":
                sys.exit(f"run {n}: {job['outcome']} {job.get('error')}")
            if n > 1:
                walls.append(wall)
            sizes.append(state_mib(d))
            if n % every == 0 or n == 1:
                print(f"  run {n:4}  state {sizes[-1]:7.1f} MiB  wall {wall:5.2f} s", flush=True)
    return sizes, walls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--keep-runs", type=int, default=20)
    ap.add_argument("--every", type=int, default=20)
    args = ap.parse_args()
    c.build()
    print(c.machine())
    print(f"{args.size:,} people, {args.runs} runs with 1% change each")
    results = {}
    for label, history in (("kept forever", "{keep_days: null, events_keep_days: null}"),
                           ("retention", f"{{keep_days: 0, keep_runs: {args.keep_runs}}}")):
        print(f"{label} (state.history: {history})")
        results[label] = series(args.size, args.runs, args.every, history)
    print()
    print(f"{'':14} {'state after run':>16} {'at the end':>11} {'growth/run, 2nd half':>21} {'wall median':>12} {'p90':>6}")
    half = args.runs // 2
    for label, (sizes, walls) in results.items():
        growth = (sizes[-1] - sizes[half - 1]) / (args.runs - half)
        p90 = sorted(walls)[int(len(walls) * 0.9)]
        mark = min(args.keep_runs * 2, args.runs) - 1
        print(f"{label:14} {f'{mark + 1}: {sizes[mark]:.1f} MiB':>16} {sizes[-1]:8.1f} MiB {growth * 1024:15.0f} KiB "
              f"{statistics.median(walls):10.2f} s {p90:5.2f} s")


if __name__ == "__main__":
    main()
