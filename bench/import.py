#!/usr/bin/env python3
"""Import benchmark: full and delta imports of 10k, 25k and 100k users into the emulator, next
to the floor Okta's limits set and to a sequential Workflows-style client.

For each size, against a fresh `xaas sim` (1.5 s added to every API call, 600 requests/min,
1 s to process a session, its clock sped up by --spacing-factor so Okta's 5-minute spacing
takes 300/factor real seconds):

1. **full**: `xaas run` on an empty state: every user is uploaded.
2. **delta**: a day later (the spacing has passed), 1% of the people changed (80% profile
   updates, 10% terminations, 5% deleted rows, 5% new hires), and the default `xaas run`.

xaas runs on its default settings, except `session_spacing_secs`, set to the emulator's scaled
spacing. Both runs are timed from the start of `xaas run` to its exit (every session COMPLETED).

**Floor.** The least time Okta's rules allow for the same sessions and loads: one list of open
sessions (needed to find stale ones), then per session a create, its loads in rounds of the
allowed concurrency, and a trigger, each costing one latency; the spacing between one session's
trigger and the next create; and the last session's processing (or the one read that sees it
COMPLETED, whichever is longer). It is also never less than the calls at the token's share of
the rate limit (50%). The allowed concurrency is xaas's `max_concurrent_requests` (50 by
default; 10 before issue 17); "floor @75" is the same bound if one client took all of the org's
75 concurrent requests. "peak" is the most loads xaas had in flight (it follows the budget).

**Baseline.** What the Okta Workflows template does, as a sequential client (below, in Python):
list and delete stale sessions, then for every 10,000 active users create a session, upload
them 200 at a time, one request after the other, and trigger; between sessions it waits out the
spacing; at the end it polls every second until COMPLETED, like xaas. It re-uploads everyone on
every run. It is measured for sizes up to --baseline-max (10,000 by default) and computed for the
others from the same per-call costs (marked "est.").

    bench/import.py                                    # 10k, 25k, 100k; about 12 minutes
    bench/import.py --sizes 10000 --latency-ms 2000 --spacing-factor 10
"""
import argparse, json, math, os, random, sys, tempfile, shutil, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

ORG_CONCURRENCY = 75
DEFAULT_CONCURRENCY = int(os.environ.get("XAAS_BENCH_DEFAULT_CONCURRENCY", "50"))  # 10 before issue 17
PER_REQUEST = 200
PER_SESSION = 10000


def sessions_of(state, since):
    """Sessions the run created (those after the first `since`) that received loads."""
    return [s for s in state["sessions"][since:] if s["loads"]]


def floor(sessions, latency, spacing, processing, concurrency, rate_per_min):
    """The least wall time Okta's rules allow for these sessions (see the module doc)."""
    if not sessions:
        return latency
    chain = latency  # list sessions
    calls = 1
    for s in sessions:
        loads = len(s["loads"])
        chain += (2 + math.ceil(loads / concurrency)) * latency
        calls += 2 + loads
    chain += (len(sessions) - 1) * spacing + max(processing, latency)
    calls += 1
    share = rate_per_min * 0.5 / 60  # requests per second
    burst = rate_per_min * 0.5 / 6
    return max(chain, max(0, calls - burst) / share)


class Sequential:
    """The Workflows template's sequence, one request at a time."""

    def __init__(self, sim):
        self.sim = sim
        self.root = f"{sim.base}/api/v1/identity-sources/{c.SOURCE}/sessions"

    def call(self, method, url, body=None):
        if body is not None:
            data = json.dumps(body).encode()
        else:
            data = None if method == "GET" else b""  # Okta wants Content-Length: 0 on empty POSTs
        req = urllib.request.Request(url, method=method, data=data,
                                     headers={"Authorization": f"SSWS {c.TOKEN}", "Accept": "application/json",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read()
        return json.loads(text) if text else None

    def run(self, people):
        for s in self.call("GET", self.root) or []:
            if s["status"] in ("CREATED", "IN_PROGRESS"):
                self.call("DELETE", f"{self.root}/{s['id']}")
        active = [p for p in people if p["active"]]
        profiles = [{"externalId": p["id"], "profile": {
            "userName": p["id"], "email": p["id"], "firstName": p["first"], "lastName": p["last"],
            "city": p["city"], "countryCode": "ES"}} for p in active]
        last_trigger, sid = None, None
        for start in range(0, len(profiles), PER_SESSION):
            if last_trigger is not None:
                time.sleep(max(0.0, last_trigger + self.sim.spacing_s - time.monotonic()))
            sid = self.call("POST", self.root)["id"]
            chunk = profiles[start:start + PER_SESSION]
            for k in range(0, len(chunk), PER_REQUEST):
                self.call("POST", f"{self.root}/{sid}/bulk-upsert",
                          {"entityType": "USERS", "profiles": chunk[k:k + PER_REQUEST]})
            self.call("POST", f"{self.root}/{sid}/start-import")
            last_trigger = time.monotonic()
        while sid and self.call("GET", f"{self.root}/{sid}")["status"] not in ("COMPLETED", "ERROR"):
            time.sleep(1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,25000,100000", help="users, comma-separated")
    ap.add_argument("--latency-ms", type=int, default=1500, help="added to every API call (FACTS: 1-2 s)")
    ap.add_argument("--rate-limit", type=int, default=600, help="the emulator's requests per minute")
    ap.add_argument("--processing-ms", type=int, default=1000, help="the emulator's time to process a session")
    ap.add_argument("--spacing-factor", type=float, default=15.0,
                    help="Okta's 5-minute spacing is divided by this (the emulator's clock runs this much faster)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="okta.max_concurrent_requests (default: xaas's default)")
    ap.add_argument("--extra-concurrency", type=int, default=50,
                    help="also run the smallest full import at this concurrency (0: no)")
    ap.add_argument("--baseline-max", type=int, default=10000, help="measure the baseline up to this size")
    args = ap.parse_args()

    c.build()
    sizes = [int(s) for s in args.sizes.split(",")]
    lat, proc = args.latency_ms / 1000, args.processing_ms / 1000
    conc = args.concurrency or DEFAULT_CONCURRENCY
    rows, baselines = [], {}
    work = tempfile.mkdtemp(prefix="xaas-bench-import-")
    sim_opts = dict(clock_scale=args.spacing_factor, latency_ms=args.latency_ms, rate_limit=args.rate_limit,
                    processing_ms=args.processing_ms)
    okta_extra = f"  max_concurrent_requests: {args.concurrency}\n" if args.concurrency else ""
    violations = 0

    def one_run(sim, cfg, label, size, run_conc, *extra):
        before = sim.state()
        wall, job = c.run_xaas(cfg, *extra)
        after = sim.state()
        made = sessions_of(after, len(before["sessions"]))
        rows.append({
            "size": size, "run": label, "conc": run_conc, "wall": wall,
            "up": job["counts"]["upserted"], "deact": job["counts"]["deactivated"],
            "sessions": len(made), "loads": sum(len(s["loads"]) for s in made),
            "calls": after["requests_total"] - before["requests_total"],
            "r429": after["rate_limited_total"] - before["rate_limited_total"],
            "waits": sum((s.get("outcome") or {}).get("spacing_wait_ms", 0) for s in job["sessions"]) / 1000,
            "pull": job["timings"]["pull_ms"] / 1000,
            "push": job["timings"]["push_ms"] / 1000,
            "floor": floor(made, lat, sim.spacing_s, proc, run_conc, args.rate_limit),
            "floor75": floor(made, lat, sim.spacing_s, proc, ORG_CONCURRENCY, args.rate_limit),
            "peak": max([(s.get("outcome") or {}).get("max_in_flight", 0) for s in job["sessions"]] or [0]),
        })
        return made

    try:
        for size in sizes:
            rnd = random.Random(size)
            people = [c.person(i, rnd) for i in range(size)]
            d = os.path.join(work, str(size))
            os.makedirs(d)
            c.write_csv(os.path.join(d, "users.csv"), people)
            with c.Sim(**sim_opts) as sim:
                cfg = os.path.join(d, "xaas.yaml")
                c.write_config(cfg, sim, okta_extra=okta_extra)
                one_run(sim, cfg, "full", size, conc)
                if size == min(sizes) and args.extra_concurrency:
                    # The same full import at a higher concurrency, into its own emulator.
                    d2 = os.path.join(work, f"{size}-c{args.extra_concurrency}")
                    os.makedirs(d2)
                    shutil.copy(os.path.join(d, "users.csv"), d2)
                    with c.Sim(**sim_opts) as sim2:
                        cfg2 = os.path.join(d2, "xaas.yaml")
                        c.write_config(cfg2, sim2,
                                       okta_extra=f"  max_concurrent_requests: {args.extra_concurrency}\n")
                        one_run(sim2, cfg2, "full", size, args.extra_concurrency)
                        violations += len(sim2.state()["violations"])
                time.sleep(sim.spacing_s)  # the next day: no spacing pending
                c.change_one_percent(people, rnd, size, 1)
                c.write_csv(os.path.join(d, "users.csv"), people)
                one_run(sim, cfg, "delta 1%", size, conc)
                violations += len(sim.state()["violations"])
            if size <= args.baseline_max:
                with c.Sim(**sim_opts) as sim:
                    t0 = time.monotonic()
                    Sequential(sim).run(people)
                    wall = time.monotonic() - t0
                    st = sim.state()
                    baselines[size] = {"wall": wall, "calls": st["requests_total"], "measured": True,
                                       "sessions": len(sessions_of(st, 0))}
                    violations += len(st["violations"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The baseline for sizes not measured: the same sequence's calls at the same latency, and
    # the measured run's tail (the final polling) when there is one.
    spacing = c.OKTA_SPACING_S / args.spacing_factor
    measured = next(iter(baselines.items()), None)
    for size in sizes:
        if size in baselines:
            continue
        k = math.ceil(size / PER_SESSION)
        loads = math.ceil(size / PER_REQUEST)
        calls = 1 + 2 * k + loads
        tail = max(proc, lat)
        if measured:
            m_size, m = measured
            tail = m["wall"] - (1 + 2 * math.ceil(m_size / PER_SESSION) + math.ceil(m_size / PER_REQUEST)) * lat
        baselines[size] = {"wall": calls * lat + (k - 1) * spacing + tail, "calls": calls + 1, "measured": False,
                           "sessions": k}

    print(c.machine())
    print(f"inputs: sizes {sizes}; latency {args.latency_ms} ms per call; rate limit {args.rate_limit}/min; "
          f"processing {args.processing_ms} ms per session; spacing factor {args.spacing_factor:g} "
          f"(Okta's 300 s spacing = {spacing:.1f} s); xaas defaults (max_concurrent_requests "
          f"{DEFAULT_CONCURRENCY}) unless the row says otherwise")
    print()
    print("| users | run | in flight (peak) | sent | sessions | loads | okta calls | 429s | wall (s) | floor (s) "
          "| wall / floor | floor @75 (s) | baseline (s) | faster than baseline | pull+map (s) | talking to Okta (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = baselines[r["size"]]
        mark = "" if b["measured"] else " est."
        peak = f" ({r['peak']})" if r["peak"] else ""
        print(f"| {r['size']:,} | {r['run']} | {r['conc']}{peak} | {r['up']:,} up + {r['deact']:,} deact | {r['sessions']} "
              f"| {r['loads']} | {r['calls']} | {r['r429']} | {r['wall']:.1f} | {r['floor']:.1f} "
              f"| {r['wall'] / r['floor']:.2f} | {r['floor75']:.1f} | {b['wall']:.1f}{mark} "
              f"| {b['wall'] / r['wall']:.1f}x | {r['pull']:.2f} | {r['push']:.1f} |")
    print()
    print("| users | baseline | sessions | okta calls | wall (s) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        b = baselines[size]
        print(f"| {size:,} | {'measured' if b['measured'] else 'computed'} | {b['sessions']} | {b['calls']} "
              f"| {b['wall']:.1f} |")
    print()
    for size in sizes:
        full = next(r for r in rows if r["size"] == size and r["run"] == "full" and r["conc"] == conc)
        delta = next(r for r in rows if r["size"] == size and r["run"] == "delta 1%")
        print(f"{size:,} users, 1% changed: the delta run made {delta['calls']} Okta calls, the full upload "
              f"{full['calls']}: {full['calls'] / delta['calls']:.1f}x fewer; at Okta's real spacing the full "
              f"upload needs {(full['sessions'] - 1) * 5} min of spacing, the delta {(delta['sessions'] - 1) * 5} min")
    print(f"\nrule violations recorded by the emulators: {violations}")


if __name__ == "__main__":
    main()
