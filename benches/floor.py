#!/usr/bin/python3
"""lvslab against the floor: the same work, side by side, in one run.

A benchmark, not a test: it prints a table and fails only when a run fails
or the two leave different trees. Run it by hand as root, after
`cargo build --release`:

    benches/floor.py                       # 1, 5, 20 and 50 hosts, 5 rounds
    HOSTS="1 5" ROUNDS=3 benches/floor.py  # what CI prints

Every host is a connection to one sshd on 127.0.0.1 (each login its own
sshd process and shell, as on separate machines), logging in as a throwaway
user whose shell is /bin/sh. Per host the workload is 30 idempotent steps
(benches/workload/): 5 directories, 9 files (4 from `src:` files), 1 template
rendered with lab, group and host variables, 10 `key = value` lines, 5
guarded commands, on a host with no lab role and no lab network.

The floor is what a person would type with no tool at all: one
`ssh host sh -s < script` per host, all hosts at once, the script as
idempotent as lvslab's steps (it checks before it writes), with the key
exchange russh negotiates (curve25519-sha256) and the same host key type.

Measured (medians of ROUNDS rounds; each round: both cold on fresh trees,
then both again with nothing to do, then `lvslab drift`):
  * wall time per host count, and lvslab's ratio to the floor;
  * processes each side starts on the host (1 host, counted with strace
    following the sshd: every process the logins create);
  * with LATENCY_MS (default 10) of delay each way (a 20 ms round trip)
    added by a proxy between the client and sshd, at 5 hosts.
"""

import asyncio
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOAD = REPO / "benches" / "workload"
BIN = Path(os.environ.get("LVSLAB", REPO / "target" / "release" / "lvslab"))
HOSTS = [int(h) for h in os.environ.get("HOSTS", "1 5 20 50").split()]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
LATENCY_MS = float(os.environ.get("LATENCY_MS", "10"))
LATENCY_HOSTS = int(os.environ.get("LATENCY_HOSTS", "5"))
KEX = "curve25519-sha256"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- workload

FILES = ["motd", "robots.txt", "limits.conf", "logrotate.conf"]
DIRS = ["etc", "www", "data", "logs", "run"]
VARS = {"app_name": "benchapp", "workers": 4, "backends": ["10.0.0.1:8080", "10.0.0.2:8080"]}


def host_vars(i):
    tier = "front" if i % 2 else "back"
    return tier, 8000 + i


def inline_files(name, i):
    """The 5 inline files of host i: (relative path, content)."""
    return [
        (f"www/index-{k}.html", f"<h1>{name}</h1>\n<p>page {k} of host {i}</p>\n") for k in range(1, 5)
    ] + [("etc/host.id", f"{name}\n")]


def settings(name):
    return [(f"key{k}", f"value{k}-{name}") for k in range(1, 11)]


def rendered_template(name, i):
    """What benches/workload/templates/app.conf.j2 renders to (the floor
    has no template engine: its script carries the result)."""
    tier, port = host_vars(i)
    out = f"# {VARS['app_name']} on {name} ({tier} tier), rendered by lvslab\n[server]\n"
    out += f"listen = 0.0.0.0:{port}\nworkers = {VARS['workers']}\n"
    for b in VARS["backends"]:
        out += f"backend = {b}\n"
    if tier == "front":
        out += "cache = on\n"
    return out


def topology(n, root, port, user, key, known_hosts):
    """The workload as a topology, written as a user would write it."""
    y = ["lab: bench", "provider: ssh", "vars:"]
    y += [f"  app_name: {VARS['app_name']}", f"  workers: {VARS['workers']}", "  backends:"]
    y += [f"    - \"{b}\"" for b in VARS["backends"]]
    fronts = [f"h{i}" for i in range(1, n + 1) if i % 2]
    backs = [f"h{i}" for i in range(1, n + 1) if not i % 2]
    y += ["groups:"]
    y += ["  front: { hosts: [" + ", ".join(fronts) + "], vars: { tier: front } }"]
    y += ["  back: { hosts: [" + ", ".join(backs) + "], vars: { tier: back } }"]
    y += ["defaults:", "  os: debian", "  init: daemon", "  packages: false", "  persist: false"]
    y += [
        f"  ssh: {{ host: 127.0.0.1, port: {port}, user: {user}, key: {key}, known_hosts: {known_hosts} }}",
        "hosts:",
    ]
    for i in range(1, n + 1):
        name = f"h{i}"
        w = f"{root}/{name}"
        _, hport = host_vars(i)
        y += [f"  {name}:", f"    vars: {{ port: {hport} }}", "    steps:"]
        for d in DIRS:
            y += [f"      - directory: {{ path: {w}/{d} }}", "        why: bench"]
        for f in FILES:
            y += [f"      - file: {{ path: {w}/etc/{f}, src: files/{f} }}", "        why: bench"]
        for rel, content in inline_files(name, i):
            c = content.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            y += [f"      - file: {{ path: {w}/{rel}, content: \"{c}\" }}", "        why: bench"]
        y += [
            f"      - file: {{ path: {w}/etc/app.conf, template: templates/app.conf.j2 }}",
            "        why: bench",
        ]
        for k, v in settings(name):
            y += [f"      - line: {{ path: {w}/etc/settings.conf, key: {k}, value: {v} }}", "        why: bench"]
        for k in range(1, 6):
            y += [
                f"      - command: {{ name: flag{k}, check: \"test -f {w}/run/flag{k}\", "
                f"run: \"touch {w}/run/flag{k}\", revert: \"rm -f {w}/run/flag{k}\" }}",
                "        why: bench",
            ]
    return "\n".join(y) + "\n"


def q(s):
    return "'" + s.replace("'", "'\\''") + "'"


def floor_script(w, name, i):
    """The same 30 steps as plain idempotent sh: check, then write."""
    s = []
    for d in DIRS:
        s.append(f"[ -d {w}/{d} ] || mkdir -p {w}/{d}")
    files = [(f"etc/{f}", (WORKLOAD / "files" / f).read_text()) for f in FILES]
    files += inline_files(name, i)
    files.append(("etc/app.conf", rendered_template(name, i)))
    for rel, content in files:
        s.append(f"c={q(content)}; printf '%s' \"$c\" | cmp -s - {w}/{rel} || printf '%s' \"$c\" > {w}/{rel}")
    for k, v in settings(name):
        line = f"{k} = {v}"
        s.append(f"grep -qxF -- {q(line)} {w}/etc/settings.conf 2>/dev/null || printf '%s\\n' {q(line)} >> {w}/etc/settings.conf")
    for k in range(1, 6):
        s.append(f"[ -f {w}/run/flag{k} ] || touch {w}/run/flag{k}")
    return "\n".join(s) + "\n"


# ------------------------------------------------------------------ runs


class Bench:
    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="lvslab-bench-"))
        os.chmod(self.tmp, 0o755)
        self.user = f"lvslab-bench-{os.getpid()}"
        sh("useradd", "-M", "-d", str(self.tmp), "-s", "/bin/sh", "-p", "*", self.user)
        pw = pwd.getpwnam(self.user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.tmp / "hostkey"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.tmp / "userkey"))
        shutil.copy(self.tmp / "userkey.pub", self.tmp / "authorized_keys")
        self.port = free_port()
        Path("/run/sshd").mkdir(exist_ok=True)
        (self.tmp / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.tmp}/hostkey\n"
            f"AuthorizedKeysFile {self.tmp}/authorized_keys\nPidFile {self.tmp}/sshd.pid\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "MaxStartups 500\nMaxSessions 500\n"
        )
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.tmp / "sshd_config")],
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        # The topology's `src:` and `template:` files, next to it.
        shutil.copytree(WORKLOAD / "files", self.tmp / "files")
        shutil.copytree(WORKLOAD / "templates", self.tmp / "templates")

    def close(self):
        self.sshd.terminate()
        self.sshd.wait()
        subprocess.run(["userdel", self.user], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fresh(self, side, n):
        """An empty tree for `side` (floor or lvslab) and its state."""
        root = self.tmp / side / str(n)
        shutil.rmtree(root, ignore_errors=True)
        for i in range(1, n + 1):
            (root / f"h{i}").mkdir(parents=True)
        for p in [root, *root.iterdir()]:
            os.chown(p, self.uid, self.gid)
        for f in ["known_hosts", "state"]:
            p = self.tmp / f"{side}-{f}"
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return root

    # -- the floor
    def floor(self, n, root, port):
        procs = []
        for i in range(1, n + 1):
            name = f"h{i}"
            script = floor_script(f"{root}/{name}", name, i)
            p = subprocess.Popen(
                ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", f"KexAlgorithms={KEX}",
                 "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "StrictHostKeyChecking=accept-new",
                 "-o", f"UserKnownHostsFile={self.tmp}/floor-known_hosts", "-i", f"{self.tmp}/userkey",
                 "-p", str(port), f"{self.user}@127.0.0.1", "sh", "-s"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append((p, script))
        # All started first, then fed: every host at once.
        for p, script in procs:
            p.stdin.write(script)
            p.stdin.close()
        for p, _ in procs:
            err = p.stderr.read()
            if p.wait() != 0:
                raise SystemExit(f"floor failed: {err}")

    # -- lvslab
    def topo(self, n, root, port):
        path = self.tmp / f"bench-{n}-{port}.yaml"
        path.write_text(topology(n, root, port, self.user, self.tmp / "userkey", self.tmp / "lvslab-known_hosts"))
        return path

    def lvslab(self, topo, *args, want=(0,)):
        env = dict(os.environ, LVSLAB_STATE_DIR=str(self.tmp / "lvslab-state"), HOME=str(self.tmp),
                   SSH_AUTH_SOCK="/nonexistent", NO_COLOR="1")
        r = subprocess.run([str(BIN), *args, str(topo)], env=env, capture_output=True, text=True)
        if r.returncode not in want:
            raise SystemExit(f"lvslab {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def round(self, n, port):
        """One round at n hosts: times of floor cold/no-op, lvslab cold/no-op/drift."""
        t = {}
        froot = self.fresh("floor", n)
        lroot = self.fresh("lvslab", n)
        topo = self.topo(n, lroot, port)

        def timed(key, f):
            s = time.perf_counter()
            f()
            t[key] = time.perf_counter() - s

        timed("floor cold", lambda: self.floor(n, froot, port))
        timed("lvslab cold", lambda: self.lvslab(topo, "up", "--accept-new-host-keys"))
        same_tree(froot, lroot)
        timed("floor no-op", lambda: self.floor(n, froot, port))
        timed("lvslab no-op", lambda: self.lvslab(topo, "up"))
        timed("lvslab drift", lambda: self.lvslab(topo, "drift"))
        same_tree(froot, lroot)
        self.lvslab(topo, "down")
        return t

    # -- processes the logins start, counted by strace on the sshd
    def processes(self, side):
        n = 1
        root = self.fresh(side, n)
        topo = self.topo(n, root, self.port)
        counts = {}
        for what in ["cold", "no-op"] + (["drift"] if side == "lvslab" else []):
            log = self.tmp / "strace.log"
            # Every process ends with exit_group (subshells too, which exec nothing).
            st = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=execve,exit_group", "-o", str(log),
                                   "-p", str(self.sshd.pid)], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            if side == "floor":
                self.floor(n, root, self.port)
            elif what == "cold":
                self.lvslab(topo, "up", "--accept-new-host-keys")
            elif what == "no-op":
                self.lvslab(topo, "up")
            else:
                self.lvslab(topo, "drift")
            time.sleep(0.3)
            st.terminate()
            st.wait()
            pids = set()
            programs = {}
            for line in log.read_text().splitlines():
                pid = line.split(" ", 1)[0]
                if pid.isdigit() and int(pid) != self.sshd.pid:
                    pids.add(pid)
                if "execve(\"" in line and "= 0" in line:
                    prog = line.split("execve(\"", 1)[1].split("\"", 1)[0]
                    programs[prog] = programs.get(prog, 0) + 1
            counts[what] = len(pids)
            if os.environ.get("PROCESS_DETAIL"):
                forks = len(pids) - sum(programs.values())
                print(f"  {side} {what}: {len(pids)} processes, {forks} without exec (subshells, pipes); "
                      + ", ".join(f"{k.rsplit('/', 1)[-1]} {v}" for k, v in sorted(programs.items(), key=lambda x: -x[1])))
        if side == "lvslab":
            self.lvslab(topo, "down")
        return counts

    # -- a proxy that delays each direction
    def start_proxy(self, delay):
        port = free_port()
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def pipe(reader, writer):
            queue = asyncio.Queue()

            async def pump():
                while True:
                    at, data = await queue.get()
                    wait = at + delay - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not data:
                        writer.close()
                        return
                    writer.write(data)
                    await writer.drain()

            task = asyncio.create_task(pump())
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time(), data))
                if not data:
                    break
            await task

        async def handle(cr, cw):
            sr, sw = await asyncio.open_connection("127.0.0.1", self.port)
            await asyncio.gather(pipe(cr, sw), pipe(sr, cw), return_exceptions=True)

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=500)
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True).start()
        ready.wait()
        return port


def tree(root):
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        mode = oct(p.stat().st_mode & 0o7777)
        out[str(rel)] = (mode, p.read_bytes() if p.is_file() else None)
    return out


def same_tree(a, b):
    ta, tb = tree(a), tree(b)
    if ta != tb:
        diff = sorted(set(ta.items()) ^ set(tb.items()))
        raise SystemExit(f"the floor and lvslab left different trees ({a} vs {b}):\n{diff[:10]}")


def med(rounds, key):
    return statistics.median(r[key] for r in rounds)


def table(results):
    print("| hosts | floor cold / no-op | lvslab up cold | lvslab up no-op | lvslab drift |")
    print("|---|---|---|---|---|")
    for n, rounds in results:
        fc, fn = med(rounds, "floor cold"), med(rounds, "floor no-op")
        lc, ln, ld = med(rounds, "lvslab cold"), med(rounds, "lvslab no-op"), med(rounds, "lvslab drift")
        print(f"| {n} | {fc:.2f} / {fn:.2f} s | {lc:.2f} s ({lc / fc:.2f}×) | "
              f"{ln:.2f} s ({ln / fn:.2f}×) | {ld:.2f} s ({ld / fn:.2f}×) |")


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root (it adds a throwaway user and starts an sshd)")
    if not BIN.exists():
        raise SystemExit(f"{BIN} is missing: cargo build --release (or set LVSLAB)")
    b = Bench()
    try:
        print(f"lvslab {BIN}; {ROUNDS} rounds; medians; ratios are lvslab / floor "
              "(no-op and drift against the floor's no-op)\n")
        results = []
        for n in HOSTS:
            rounds = [b.round(n, b.port) for _ in range(ROUNDS)]
            results.append((n, rounds))
        table(results)
        print("\nprocesses started on the host by one run (1 host, 30 steps; sshd's own included):")
        floor, lv = b.processes("floor"), b.processes("lvslab")
        print("| | floor | lvslab | ratio |\n|---|---|---|---|")
        for k in ["cold", "no-op"]:
            print(f"| {k} | {floor[k]} | {lv[k]} | {lv[k] / floor[k]:.2f}× |")
        print(f"| drift | | {lv['drift']} | {lv['drift'] / floor['no-op']:.2f}× (of the floor's no-op) |")
        if LATENCY_MS > 0:
            port = b.start_proxy(LATENCY_MS / 1000)
            rounds = [b.round(LATENCY_HOSTS, port) for _ in range(ROUNDS)]
            print(f"\nwith {LATENCY_MS:g} ms each way ({2 * LATENCY_MS:g} ms round trip) through a delaying proxy:")
            table([(LATENCY_HOSTS, rounds)])
        print("\nthe trees the floor and lvslab left were identical after every cold run and every no-op run")
    finally:
        b.close()


if __name__ == "__main__":
    main()
