#!/usr/bin/env python3
"""Scale benchmark (issue 21): messy HR exports of 1M and 5M rows through `xaas plan`, and a
full run plus a 1% delta run against `xaas sim`, each under GNU time.

The exports have the seed's 15 columns and what real ones have: 1% duplicate rows (the same
person again, later in the file, with a changed title: the last row wins), 0.5% bad emails
(rejected by the mapping), 1% multi-line quoted street names, non-ASCII names, CRLF line ends.
They are generated once into target/bench/scale/ and reused.

Printed per size and command: wall time, user CPU time (user > wall means more than one core
worked), peak RSS, and bytes of peak RSS per person; then the 5M/1M ratios (linear growth is
5.0). Issue 21's targets on this 2-core machine: 1M rows in <= 6 s and <= 100 MiB, 5M rows in
<= 30 s and <= 400 MiB.

    bench/scale.py                                   # plan 1M and 5M, full + delta run 1M
    bench/scale.py --sizes 1000000 --runs 0          # plan 1M only
"""
import argparse, json, os, random, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

DIR = os.path.join(c.TARGET, "bench", "scale")
FIRST = ["Ana", "Jörg", "Zoë", "Łukasz", "Chloé", "Søren", "Nuño", "Amélie", "Ngozi", "Þóra", "Ümit", "Zhāng"]
LAST = ["García", "Müller", "Østergaard", "Nowak", "Dubois", "O'Brien", "Smith", "Nguyễn", "Kovačević"]


def export(path, rows, changed=0, seed=21):
    """`rows` people (plus duplicates); `changed` of them with a changed city (a delta)."""
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(c.HEADER + "\r\n")
        dups = []
        for i in range(rows):
            active = "false" if i % 10 == 3 else "true"
            email = f"emp{i:07d}@example.com"
            if i % 200 == 7:
                email = f"emp{i:07d} at example.com"  # rejected: not an email
            street = "Calle del Arenal"
            if i % 100 == 11:
                street = '"Calle del Arenal\r\nBajo, puerta 2"'  # a quoted field over two lines
            city = "Las Palmas" if i >= changed else "Santa Cruz"
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            line = (f"emp{i:07d}@example.com,{active},Ms,{first}{i % 97},{last},{1 + i % 9000},{street},"
                    f"{city},Andalucía,ES,{i % 100000:05d},{email},973-{i % 1000:03d}-{(i // 1000) % 1000:03d},"
                    f"630-{(i * 7) % 1000:03d}-000,1990-01-01\r\n")
            if i % 100 == 42:
                dups.append(line.replace(",Ms,", ",Dr,"))  # seen again later: this one wins
            f.write(line)
            if len(dups) >= 64:
                f.writelines(dups)
                dups.clear()
        f.writelines(dups)
        f.flush()
        # On disk before anything is timed on it: a plan would otherwise read while the export
        # is still written back.
        os.fsync(f.fileno())


def fresh_state():
    """No state from an earlier command: the database and its WAL files, which a new database
    must not inherit."""
    for f in ("state.db", "state.db-wal", "state.db-shm"):
        if os.path.exists(os.path.join(DIR, f)):
            os.remove(os.path.join(DIR, f))


def timed(args, env=None):
    """(wall s, user s, peak RSS bytes, exit code) of one command under GNU time."""
    out = os.path.join(DIR, "time.txt")
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-o", out, "-f", "%U %M", *args], capture_output=True, text=True,
                       env={**os.environ, "XAAS_LOG": "xaas=warn", **(env or {})})
    wall = time.monotonic() - t0
    with open(out) as f:
        user, rss_kb = f.read().split()[-2:]
    # 3: completed with rejections (the bad emails), as expected here.
    if r.returncode not in (0, 3):
        print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
    return wall, float(user), int(rss_kb) * 1024, r.returncode


def config(path, csv, org):
    with open(path, "w") as f:
        f.write(f"""okta:
  org_url: {org}
  auth: {{type: api_token, token: {c.TOKEN}}}
  session_spacing_secs: 0.1
  poll_initial_ms: 50
  poll_max_secs: 1
state:
  path: {os.path.join(DIR, 'state.db')}
jobs:
  - name: bench
    identity_source_id: {c.SOURCE}
    source: {{type: csv, path: {csv}}}
    mapping: {c.MAPPING}
    max_rejected: 5%
    safeguards: {{max_deactivations_percent: 100, max_creations_percent: 100, min_source_percent: 0}}
""")


def line(what, rows, wall, user, rss):
    print(f"  {what:<22} {rows:>9,}  wall {wall:7.2f} s  user {user:7.2f} s  peak RSS {rss / 2**20:8.1f} MiB"
          f"  {rss / rows:6.0f} B/person", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--runs", default="1000000", help="sizes also run against the emulator (full, then 1%% delta)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",") if s]
    runs = [int(s) for s in a.runs.split(",") if s and s != "0"]
    os.makedirs(DIR, exist_ok=True)
    c.build()
    print(c.machine())
    plans = {}
    for n in sizes:
        csv = os.path.join(DIR, f"users-{n}.csv")
        if not os.path.exists(csv):
            export(csv, n)
        cfg = os.path.join(DIR, "plan.yaml")
        config(cfg, csv, "http://127.0.0.1:9")
        fresh_state()
        print(f"{n:,} rows ({os.path.getsize(csv) / 1e6:.0f} MB):", flush=True)
        wall, user, rss, _ = timed([c.EXE, "plan", "--config", cfg])
        plans[n] = (wall, user, rss)
        line("xaas plan", n, wall, user, rss)
        if n in runs:
            fresh_state()
            with c.Sim(clock_scale=3000.0, latency_ms=0, rate_limit=1_000_000, processing_ms=20) as sim:
                config(cfg, csv, sim.base)
                wall, user, rss, code = timed([c.EXE, "run", "--config", cfg, "--report", os.path.join(DIR, "full.json")])
                line(f"xaas run, full (exit {code})", n, wall, user, rss)
                delta = os.path.join(DIR, f"users-{n}-delta.csv")
                if not os.path.exists(delta):
                    export(delta, n, changed=n // 100)
                config(cfg, delta, sim.base)
                wall, user, rss, code = timed([c.EXE, "run", "--config", cfg, "--report", os.path.join(DIR, "delta.json")])
                with open(os.path.join(DIR, "delta.json")) as f:
                    counts = json.load(f)["jobs"][0]["counts"]
                line(f"xaas run, 1% delta (exit {code})", n, wall, user, rss)
                print(f"    delta sent: {counts.get('upserted')} upserted, {counts.get('deactivated')} deactivated"
                      f" (changed: {n // 100:,})", flush=True)
    if len(sizes) == 2 and all(s in plans for s in sizes):
        (a1, b1), (a2, b2) = (sizes[0], plans[sizes[0]]), (sizes[1], plans[sizes[1]])
        print(f"plan, {a2 // a1}x the rows: wall x{b2[0] / b1[0]:.2f}, peak RSS x{b2[2] / b1[2]:.2f}")
    print(f"at end: {c.cpu_probe()}")


main()
