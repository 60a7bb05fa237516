#!/usr/bin/env python3
"""Mover benchmark (issue 16): a 100,000-user full import with a department and a location
group per person, then a 1% mover delta (1,000 people change department, so 1,000 membership
removals and 1,000 additions), beside the same two runs with a mapping without groups, and
with groups and a manager link (`references:`, a hierarchy of ten reports per manager).

Also prints what the membership state costs: the state file's growth and the peak RSS growth
over the run without groups, per membership.

Prints per run: wall time, Okta calls, sessions, loads by kind, peak RSS of `xaas run`, and
the state file's size. Against `xaas sim` (clock 300x, no added latency, 100 ms processing),
so the figures compare the two mappings, not a real org's latency.

    bench/mover.py [--size 100000]
"""
import argparse, collections, os, random, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

MAPPING = """version: 2
source_fields: [id, email, first, last, dept, location, active, manager_id]
external_id: "{{ id }}"
status:
  active_if: '{"true": true, "false": false}[active]'
  when_missing: reject
attributes:
  userName: "{{ email }}"
  email: "{{ email }}"
  firstName: "{{ first }}"
  lastName: "{{ last }}"
  department: "{{ dept }}"
required: [userName, email]
"""
GROUPS = """groups:
  - external_id: "dept-{{ dept }}"
    name: "Department {{ dept }}"
  - external_id: "loc-{{ location }}"
    name: "Location {{ location }}"
"""
REFERENCES = """references:
  manager: { person: manager_id, attribute: userName }
"""


def write(path, rows):
    with open(path, "w") as f:
        f.write("id,email,first,last,dept,location,active,manager_id\n")
        for r in rows:
            f.write(f"{r['id']},{r['id']}@example.com,Ana,García,{r['dept']},{r['loc']},true,{r['mgr']}\n")


def run(cfg, sim):
    before = sim.state()
    t0 = time.monotonic()
    # GNU time reads the peak RSS: the rusage of a child forked from this (large) Python
    # process would count the parent's pages it held before exec.
    rss = cfg + ".rss"
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, c.EXE, "run", "--config", cfg],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env={**os.environ, "XAAS_LOG": "xaas=warn"})
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"xaas run failed: {p.stderr.decode()[-2000:]}")
    with open(rss) as f:
        rss_kib = int(f.read().split()[-1])
    after = sim.state()
    new = after["sessions"][len(before["sessions"]):]
    loads = collections.Counter(l["kind"] for s in new for l in s["loads"])
    return {"wall": wall, "calls": after["requests_total"] - before["requests_total"], "sessions": len(new),
            "loads": dict(sorted(loads.items())), "rss_mib": rss_kib / 1024,
            "violations": len(after["violations"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100_000)
    args = ap.parse_args()
    c.build()
    print(c.machine())
    print(f"{args.size:,} people, 20 departments, 10 locations; delta: 1% change department")
    base = {}
    configs = (("without groups", MAPPING), ("with groups", MAPPING + GROUPS),
               ("groups+managers", MAPPING + GROUPS + REFERENCES))
    for label, mapping in configs:
        with tempfile.TemporaryDirectory() as d, c.Sim(clock_scale=300.0, latency_ms=0, rate_limit=100000,
                                                       processing_ms=100) as sim:
            with open(os.path.join(d, "mapping.yaml"), "w") as f:
                f.write(mapping)
            cfg = os.path.join(d, "xaas.yaml")
            with open(cfg, "w") as f:
                f.write(f"""okta:
  org_url: {sim.base}
  auth: {{type: api_token, token: {c.TOKEN}}}
  session_spacing_secs: {sim.spacing_s:.3f}
state: {{path: {d}/state.db}}
jobs:
  - name: bench
    identity_source_id: {c.SOURCE}
    source: {{type: csv, path: {d}/people.csv}}
    mapping: {d}/mapping.yaml
    safeguards: {{max_membership_removals: 5000}}
""")
            rows = [{"id": f"emp{i:07}", "dept": f"d{i % 20}", "loc": f"l{i % 10}",
                     "mgr": f"emp{i // 10:07}" if i else ""} for i in range(args.size)]
            write(os.path.join(d, "people.csv"), rows)
            full = run(cfg, sim)
            time.sleep(sim.spacing_s)
            rnd = random.Random(16)
            for r in rnd.sample(rows, args.size // 100):
                r["dept"] = f"d{(int(r['dept'][1:]) + 1) % 20}"
            write(os.path.join(d, "people.csv"), rows)
            delta = run(cfg, sim)
            state_mb = os.path.getsize(os.path.join(d, "state.db")) / 2**20
            groups = sim.state()["groups"]
            members = sum(len(g["members"]) for g in groups)
            for name, r in (("full", full), ("delta 1% movers", delta)):
                print(f"{label:15} {name:16} wall {r['wall']:6.1f} s  calls {r['calls']:4}  sessions {r['sessions']:2}  "
                      f"peak RSS {r['rss_mib']:6.1f} MiB  violations {r['violations']}  loads {r['loads']}")
            print(f"{label:15} okta holds {len(groups)} groups, {members:,} memberships; state file {state_mb:.1f} MiB")
            if not base:
                base = {"state": state_mb, "rss": full["rss_mib"]}
            elif members:
                per = lambda mib: mib * 2**20 / members  # noqa: E731
                print(f"{label:15} per membership: state file +{per(state_mb - base['state']):.0f} B, "
                      f"peak RSS of the full run +{per(full['rss_mib'] - base['rss']):.0f} B")


if __name__ == "__main__":
    main()
