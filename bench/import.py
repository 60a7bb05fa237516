#!/usr/bin/env python3
"""Import benchmark: N users (+ leavers) through `xaas run` into `xaas sim`.

Builds xaas in release mode, generates the data, starts the emulator with the given latency,
rate limit and clock scale, seeds the leavers as existing Okta users, runs one import and
prints a table: wall time, Okta calls, sessions, 429s, spacing waits, and the floor that Okta's
limits set (the larger of (sessions - 1) x spacing and calls x latency, calls being sequential).

    bench/import.py --users 25000 --leavers-pct 10 --latency-ms 0 --clock-scale 300

Only loopback traffic; the emulator is stopped at the end.
"""
import argparse, json, os, random, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "id,active,title,first_name,last_name,street_number,street_name,city,state,country,postcode,email,phone,cell,dob"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def person(i, active, rnd):
    first = rnd.choice(["Ana", "Jörg", "Zoë", "Łukasz", "Chloé", "Søren", "Nuño", "Amélie"])
    last = rnd.choice(["García", "Müller", "Østergaard", "Nowak", "Dubois", "Smith"])
    email = f"emp{i:07}@example.com"
    row = [email, "true" if active else "false", "Mr", first, last, str(1 + i % 9000),
           "Calle del Arenal", "Las Palmas", "Andalucía", "ES", f"{i % 100000:05}", email,
           f"973-{i % 1000:03}-{(i // 1000) % 1000:03}", f"630-{(i * 7) % 1000:03}-000",
           "1990-01-01T00:00:00.000Z"]
    profile = {"userName": email, "email": email, "firstName": first, "lastName": last}
    return ",".join(row), profile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=25000, help="active users")
    ap.add_argument("--leavers-pct", type=float, default=10.0, help="leavers, as a percentage of --users")
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--rate-limit", type=int, default=600)
    ap.add_argument("--clock-scale", type=float, default=300.0)
    ap.add_argument("--processing-ms", type=int, default=100)
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "xaas")
    work = tempfile.mkdtemp(prefix="xaas-bench-")
    rnd = random.Random(42)
    leavers = int(args.users * args.leavers_pct / 100)
    lines, leaver_profiles = [HEADER], []
    for i in range(args.users + leavers):
        active = i >= leavers
        row, profile = person(i, active, rnd)
        lines.append(row)
        if not active:
            leaver_profiles.append(profile)
    csv_path = os.path.join(work, "users.csv")
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen([exe, "sim", "--listen", f"127.0.0.1:{port}", "--clock-scale", str(args.clock_scale),
                            "--latency-ms", str(args.latency_ms), "--rate-limit", str(args.rate_limit),
                            "--processing-ms", str(args.processing_ms)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/__sim/state", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        for p in leaver_profiles:
            req = urllib.request.Request(base + "/__sim/users", method="POST",
                                         data=json.dumps({"externalId": p["userName"], "profile": p, "active": True}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
        spacing = 300.0 / args.clock_scale * 1.05
        cfg = os.path.join(work, "xaas.yaml")
        with open(cfg, "w") as f:
            f.write(f"""okta:
  org_url: {base}
  auth: {{type: api_token, token: sim-token}}
  session_spacing_secs: {spacing}
  poll_initial_ms: 50
  poll_max_secs: 1
jobs:
  - name: bench
    identity_source_id: 0oasim0000000000000
    source: {{type: csv, path: users.csv}}
    mapping: {os.path.join(ROOT, 'mappings', 'seed-dynamodb.yaml')}
""")
        report = os.path.join(work, "report.json")
        t0 = time.monotonic()
        run = subprocess.run([exe, "run", "--config", cfg, "--report", report], capture_output=True, text=True,
                             env={**os.environ, "XAAS_LOG": "xaas=warn"})
        wall = time.monotonic() - t0
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            sys.exit(f"xaas run exited {run.returncode}")
        state = json.loads(urllib.request.urlopen(base + "/__sim/state", timeout=10).read())
        rep = json.load(open(report))
    finally:
        sim.terminate()
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)

    job = rep["jobs"][0]
    sessions = len(job["sessions"])
    waits = sum((s.get("outcome") or {}).get("spacing_wait_ms", 0) for s in job["sessions"]) / 1000
    calls = state["requests_total"]
    # A lower bound: the spacing between session creations, and the calls at concurrency 1,
    # must both elapse (they can overlap: polling a session counts toward the next spacing).
    floor = max((sessions - 1) * spacing, calls * args.latency_ms / 1000)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {mem:.0f} GiB")
    print(f"inputs: {args.users} active + {leavers} leavers, latency {args.latency_ms} ms/call, "
          f"rate limit {args.rate_limit}/min, clock x{args.clock_scale:g} (5-minute spacing = {spacing:.2f} s real)")
    print()
    print("| users sent | sessions | okta calls | 429s | spacing waits (s) | wall (s) | floor (s) | pull+map (s) |")
    print("|---|---|---|---|---|---|---|---|")
    c = job["counts"]
    print(f"| {c['upserted']} up + {c['deactivated']} deact | {sessions} | {calls} | {state['rate_limited_total']} | "
          f"{waits:.1f} | {wall:.1f} | {max(floor, 0):.1f} | {job['timings']['pull_ms'] / 1000:.2f} |")
    print(f"\nviolations recorded by the emulator: {len(state['violations'])}")


if __name__ == "__main__":
    main()
