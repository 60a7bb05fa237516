#!/usr/bin/env python3
"""Delta benchmark: a daily sync of N users with 1% change, delta against `--full`.

Builds xaas in release mode, starts `xaas sim` with per-call latency and a scaled clock, runs the
initial import (which fills the state), then simulates two days of HR changes (1% of users:
profile updates, terminations, deleted rows, new hires). Day 1 is synced with the default delta
run, day 2 with `xaas run --full`. For each, prints Okta requests, sessions and wall time.

    bench/delta.py --users 100000 --latency-ms 150 --clock-scale 60

Only loopback traffic; the emulator and temporary files are removed at the end.
"""
import argparse, json, os, random, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "id,active,title,first_name,last_name,street_number,street_name,city,state,country,postcode,email,phone,cell,dob"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def row(p):
    return ",".join([p["id"], "true" if p["active"] else "false", "Mr", p["first"], p["last"],
                     str(p["n"]), "Calle del Arenal", p["city"], "Andalucía", "ES", f"{p['n'] % 100000:05}",
                     p["id"], "973-000-000", "630-000-000", "1990-01-01T00:00:00.000Z"])


def person(i, rnd):
    return {"id": f"emp{i:07}@example.com", "active": True, "n": 1 + i % 9000, "city": "Las Palmas",
            "first": rnd.choice(["Ana", "Jörg", "Zoë", "Łukasz", "Chloé"]), "last": rnd.choice(["García", "Müller", "Nowak"])}


def change_one_percent(people, rnd, next_id, day):
    """1%: 80% updates, 10% terminations, 5% deleted rows, 5% new hires."""
    n = len(people) // 100
    active = [p for p in people if p["active"]]
    picked = rnd.sample(active, n - n // 20)
    ups, terms = picked[: n * 8 // 10], picked[n * 8 // 10:]
    for p in ups:
        p["city"] = f"Santa Cruz day {day}"
    for p in terms[: n // 10]:
        p["active"] = False
    gone = set(id(p) for p in terms[n // 10:])
    people[:] = [p for p in people if id(p) not in gone]
    for k in range(n // 20):
        people.append(person(next_id + k, rnd))
    return next_id + n // 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--clock-scale", type=float, default=60.0)
    ap.add_argument("--processing-ms", type=int, default=500)
    ap.add_argument("--rate-limit", type=int, default=600)
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "xaas")
    work = tempfile.mkdtemp(prefix="xaas-bench-delta-")
    rnd = random.Random(7)
    people = [person(i, rnd) for i in range(args.users)]
    csv_path = os.path.join(work, "users.csv")

    def write():
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write(HEADER + "\n" + "\n".join(row(p) for p in people) + "\n")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen([exe, "sim", "--listen", f"127.0.0.1:{port}", "--clock-scale", str(args.clock_scale),
                            "--latency-ms", str(args.latency_ms), "--rate-limit", str(args.rate_limit),
                            "--processing-ms", str(args.processing_ms)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spacing = 300.0 / args.clock_scale * 1.05
    cfg = os.path.join(work, "xaas.yaml")
    with open(cfg, "w") as f:
        f.write(f"""okta:
  org_url: {base}
  auth: {{type: api_token, token: sim-token}}
  session_spacing_secs: {spacing}
  poll_initial_ms: 200
  poll_max_secs: 2
jobs:
  - name: bench
    identity_source_id: 0oasim0000000000000
    source: {{type: csv, path: users.csv}}
    mapping: {os.path.join(ROOT, 'mappings', 'seed-dynamodb.yaml')}
""")

    def state():
        return json.loads(urllib.request.urlopen(base + "/__sim/state", timeout=30).read())

    def run(*extra):
        before = state()
        report = os.path.join(work, "report.json")
        t0 = time.monotonic()
        r = subprocess.run([exe, "run", "--config", cfg, "--report", report, *extra], capture_output=True, text=True,
                           env={**os.environ, "XAAS_LOG": "xaas=warn"})
        wall = time.monotonic() - t0
        if r.returncode != 0:
            print(r.stdout, r.stderr, file=sys.stderr)
            sys.exit(f"xaas run {' '.join(extra)} exited {r.returncode}")
        after = state()
        job = json.load(open(report))["jobs"][0]
        sessions = sum(1 for s in after["sessions"][len(before["sessions"]):] if s["loads"])
        return {"calls": after["requests_total"] - before["requests_total"], "sessions": sessions, "wall": wall,
                "up": job["counts"]["upserted"], "deact": job["counts"]["deactivated"],
                "unchanged": job["changes"]["unchanged"], "pull": job["timings"]["pull_ms"] / 1000}

    try:
        for _ in range(100):
            try:
                state()
                break
            except OSError:
                time.sleep(0.05)
        write()
        initial = run()
        next_id = change_one_percent(people, rnd, args.users, 1)
        write()
        delta = run()
        change_one_percent(people, rnd, next_id, 2)
        write()
        full = run("--full")
        violations = len(state()["violations"])
    finally:
        sim.terminate()
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {mem:.0f} GiB")
    print(f"inputs: {args.users} users, 1% change per day, latency {args.latency_ms} ms/call, processing "
          f"{args.processing_ms} ms, clock x{args.clock_scale:g} (5-minute spacing = {spacing:.2f} s real, "
          f"i.e. 1 real s = {args.clock_scale:g} Okta s)")
    print()
    print("| run | sent | unchanged skipped | sessions | okta requests | wall (s) | wall at Okta's real spacing (est.) | pull+map+diff (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in [("initial import", initial), ("daily, delta", delta), ("daily, --full", full)]:
        # The spacing waits scale with the clock; at Okta's real 5 minutes each gap costs 300 s.
        real = r["wall"] + max(r["sessions"] - 1, 0) * (300 - spacing)
        skipped = "-" if name == "daily, --full" else r["unchanged"]
        print(f"| {name} | {r['up']} up + {r['deact']} deact | {skipped} | {r['sessions']} | {r['calls']} | "
              f"{r['wall']:.1f} | {real / 60:.1f} min | {r['pull']:.2f} |")
    print(f"\nviolations recorded by the emulator: {violations}")


if __name__ == "__main__":
    main()
