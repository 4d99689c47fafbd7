"""The network test bed for the benchmark scripts: runs the `netbed` program (crates/trinity-netbed)
so that a bare repository is reached over ssh or HTTPS through its fault proxy, on loopback only.

    bed = NetBed(bin_dir, repo, work_dir, "ssh", latency="25ms")   # 25 ms each way: a 50 ms round trip
    bed.url, bed.env            # the remote's URL and the variables a client's git needs
    bed.command("cut blackhole"); bed.command("heal"); bed.stats()["connections"]
    bed.close()
"""
import json, os, subprocess


class NetBed:
    def __init__(self, bin_dir, repo, work_dir, transport, latency="0ms", lifetime="3h"):
        self.transport = transport
        self.work_dir = work_dir
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "netbed"), "--repo", repo, "--dir", work_dir,
             "--transport", transport, "--latency", latency, "--lifetime", lifetime],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"netbed did not start (is {transport}'s server installed? sshd: apt-get install openssh-server)")
        hello = json.loads(line)[transport]
        self.url = hello["url"]
        self.env = hello["env"]

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"netbed: {reply['error']}")
        return reply.get(self.transport, reply)

    def stats(self):
        return self.command("stats")

    def requests(self):
        """Requests the server answered: ssh sessions started (each a check, fetch or push,
        from sshd's log), or HTTP requests."""
        if self.transport == "https":
            return self.stats()["http_requests"]
        try:
            log = open(os.path.join(self.work_dir, "ssh", "sshd", "sshd.log")).read()
        except OSError:
            return 0
        return log.count("Starting session:")

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
