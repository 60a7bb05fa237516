"""What the Python benchmarks share: the release build, the machine line, the emulator, the
synthetic people in the seed's CSV schema, and one `xaas run`.

Only loopback traffic. Every emulator is a `xaas sim` process stopped when its `with` ends.
"""
import json, os, platform, socket, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
EXE = os.path.join(TARGET, "release", "xaas")
SOURCE = "0oasim0000000000000"
TOKEN = "sim-token"
OKTA_SPACING_S = 300.0
HEADER = ("id,active,title,first_name,last_name,street_number,street_name,city,state,country,postcode,"
          "email,phone,cell,dob")
MAPPING = os.path.join(ROOT, "mappings", "seed-dynamodb.yaml")


def build():
    """The release binary (cargo does nothing when it is up to date)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked", "--bin", "xaas"], cwd=ROOT, check=True)
    return EXE


def _probe_loop(_=None):
    start = time.perf_counter()
    sum(i * i for i in range(5_000_000))
    return time.perf_counter() - start


def cpu_probe():
    """Seconds a fixed Python loop takes on one core and on every core at once, best of three.
    This VM's host changes speed under it (the same loop took 0.50 s and 0.80 s an hour apart
    with the guest idle and no steal time reported; the all-core figure moves more than the
    one-core one), so figures from two days compare only beside their probes."""
    from concurrent.futures import ProcessPoolExecutor
    cores = os.cpu_count() or 1
    one = min(_probe_loop() for _ in range(3))
    with ProcessPoolExecutor(cores) as pool:
        every = min(max(pool.map(_probe_loop, range(cores))) for _ in range(3))
    return f"cpu probe {one:.2f} s on one core, {every:.2f} s on all {cores} (lower is faster)"


def machine():
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (f"machine: {os.cpu_count()} cores, {mem:.0f} GiB, {platform.machine()}, load average {load:.1f} "
            f"at start, {cpu_probe()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sim:
    """`xaas sim` on a free loopback port: `with Sim(latency_ms=…) as sim: sim.state()`."""

    def __init__(self, clock_scale=1.0, latency_ms=0, rate_limit=600, processing_ms=100):
        self.args = ["--clock-scale", str(clock_scale), "--latency-ms", str(latency_ms),
                     "--rate-limit", str(rate_limit), "--processing-ms", str(processing_ms)]
        self.clock_scale = clock_scale
        self.base = None
        self.proc = None

    def __enter__(self):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([EXE, "sim", "--listen", f"127.0.0.1:{port}", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                self.state()
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the emulator did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()

    @property
    def spacing_s(self):
        """Okta's 5 minutes in real seconds on this emulator's clock."""
        return OKTA_SPACING_S / self.clock_scale

    def state(self):
        return json.loads(urllib.request.urlopen(self.base + "/__sim/state", timeout=60).read())

    def seed_user(self, external_id, profile, active=True):
        body = json.dumps({"externalId": external_id, "profile": profile, "active": active}).encode()
        req = urllib.request.Request(self.base + "/__sim/users", method="POST", data=body,
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()


def person(i, rnd):
    """One synthetic employee, active, with non-ASCII names (the seed's schema)."""
    return {"id": f"emp{i:07}@example.com", "active": True, "n": 1 + i % 9000, "city": "Las Palmas",
            "first": rnd.choice(["Ana", "Jörg", "Zoë", "Łukasz", "Chloé", "Søren", "Nuño", "Amélie"]),
            "last": rnd.choice(["García", "Müller", "Østergaard", "Nowak", "Dubois", "Smith"])}


def row(p):
    return ",".join([p["id"], "true" if p["active"] else "false", "Mr", p["first"], p["last"],
                     str(p["n"]), "Calle del Arenal", p["city"], "Andalucía", "ES", f"{p['n'] % 100000:05}",
                     p["id"], "973-000-000", "630-000-000", "1990-01-01T00:00:00.000Z"])


def write_csv(path, people):
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "\n" + "\n".join(row(p) for p in people) + "\n")


def change_one_percent(people, rnd, next_id, day):
    """A day of HR changes touching 1% of the people: 80% profile updates, 10% terminations,
    5% deleted rows, 5% new hires. Returns the next unused employee number."""
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


def write_config(path, sim, spacing_s=None, okta_extra="", job_extra=""):
    """A one-job config reading users.csv next to it, with the seed's mapping. Every Okta
    setting not given here is xaas's default."""
    spacing = sim.spacing_s if spacing_s is None else spacing_s
    with open(path, "w") as f:
        f.write(f"""okta:
  org_url: {sim.base}
  auth: {{type: api_token, token: {TOKEN}}}
  session_spacing_secs: {spacing:.3f}
{okta_extra}jobs:
  - name: bench
    identity_source_id: {SOURCE}
    source: {{type: csv, path: users.csv}}
    mapping: {MAPPING}
{job_extra}""")


def run_xaas(cfg, *extra):
    """One `xaas run`; returns (wall seconds, the job's report). Exits on failure."""
    report = os.path.join(os.path.dirname(cfg), "report.json")
    t0 = time.monotonic()
    r = subprocess.run([EXE, "run", "--config", cfg, "--report", report, *extra], capture_output=True, text=True,
                       env={**os.environ, "XAAS_LOG": "xaas=warn"})
    wall = time.monotonic() - t0
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        sys.exit(f"xaas run {' '.join(extra)} exited {r.returncode}")
    with open(report) as f:
        return wall, json.load(f)["jobs"][0]
