#!/usr/bin/env python3
"""Client concurrency benchmark: 10,000 users into `xaas sim` with 1.5 s latency per call.

Runs `xaas run` once per concurrency level (default: 1 and 4, the default of
`okta.max_concurrent_requests`) against a fresh emulator and prints the time from the start of
the run to the session being TRIGGERED (watched on /__sim/state, which has no added latency),
the total wall time and the emulator's counters.

    bench/client_concurrency.py                       # 10,000 users, 1500 ms, concurrency 1 and 4
    bench/client_concurrency.py --concurrency 1 4 8 --latency-ms 1500 --users 10000

Only loopback traffic; each emulator is stopped at the end.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module

imp = import_module("import")  # bench/import.py: data generation and helpers
ROOT = imp.ROOT


def state(base):
    return json.loads(urllib.request.urlopen(base + "/__sim/state", timeout=10).read())


def run_once(exe, work, csv_path, users, latency_ms, concurrency):
    port = imp.free_port()
    base = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen([exe, "sim", "--listen", f"127.0.0.1:{port}", "--latency-ms", str(latency_ms),
                            "--processing-ms", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                state(base)
                break
            except OSError:
                time.sleep(0.05)
        cfg = os.path.join(work, f"xaas-{concurrency}.yaml")
        with open(cfg, "w") as f:
            f.write(f"""okta:
  org_url: {base}
  auth: {{type: api_token, token: sim-token}}
  max_concurrent_requests: {concurrency}
  poll_initial_ms: 100
  poll_max_secs: 1
jobs:
  - name: bench
    identity_source_id: 0oasim0000000000000
    source: {{type: csv, path: {csv_path}}}
    mapping: {os.path.join(ROOT, 'mappings', 'seed-dynamodb.yaml')}
""")
        triggered_at = {}

        def watch(t0):
            while "t" not in triggered_at:
                try:
                    for s in state(base)["sessions"]:
                        if s["status"] in ("TRIGGERED", "COMPLETED"):
                            triggered_at["t"] = time.monotonic() - t0
                except OSError:
                    pass
                time.sleep(0.05)

        t0 = time.monotonic()
        watcher = threading.Thread(target=watch, args=(t0,), daemon=True)
        watcher.start()
        run = subprocess.run([exe, "run", "--config", cfg], capture_output=True, text=True,
                             env={**os.environ, "XAAS_LOG": "xaas=warn"})
        wall = time.monotonic() - t0
        watcher.join(timeout=2)
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            sys.exit(f"xaas run exited {run.returncode}")
        st = state(base)
        users_in = sum(1 for u in st["users"] if u["status"] == "ACTIVE")
        return triggered_at.get("t"), wall, st["requests_total"], st["rate_limited_total"], len(st["violations"]), users_in
    finally:
        sim.terminate()
        sim.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--latency-ms", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "xaas")
    work = tempfile.mkdtemp(prefix="xaas-bench-conc-")
    try:
        import random
        rnd = random.Random(42)
        lines = [imp.HEADER] + [imp.person(i, True, rnd)[0] for i in range(args.users)]
        csv_path = os.path.join(work, "users.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(f"machine: {os.cpu_count()} cores, {mem:.0f} GiB")
        print(f"inputs: {args.users} users, latency {args.latency_ms} ms per api call, emulator rate limit 600/min")
        print()
        print("| max_concurrent_requests | time to TRIGGERED (s) | wall incl. processing (s) | okta calls | 429s | violations | users in okta |")
        print("|---|---|---|---|---|---|---|")
        for c in args.concurrency:
            t, wall, calls, limited, violations, users_in = run_once(exe, work, csv_path, args.users, args.latency_ms, c)
            t_text = f"{t:.1f}" if t is not None else "n/a"
            print(f"| {c} | {t_text} | {wall:.1f} | {calls} | {limited} | {violations} | {users_in} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
