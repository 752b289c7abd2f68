#!/usr/bin/env python3
"""What a reload costs, and whether the replaced body is served after it.

    python3 benches/reload.py target/release/hoard [ROUNDS]

Starts a loopback origin (every answer `version N`, fresh for an hour, N moved on before each
round) and the given hoard binary (forward proxy, a fresh cache directory), then for a small
body (1 KiB, answered whole with its head) and a streamed one (2 MiB):
  - miss: ROUNDS first GETs of new URLs (a fill that replaces nothing),
  - reload: ROUNDS `Cache-Control: no-cache` GETs of one stored URL (a fill that replaces),
    each followed at once by a plain GET on a connection opened before the reload: `old`
    counts those answered with the replaced version.
Prints median and 90th percentile of each request's time (send to last byte) in ms.
Everything binds 127.0.0.1; the hoard process is stopped by its PID on exit.
"""

import http.client
import http.server
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SIZES = {"1 KiB": 1024, "2 MiB": 2 * 1024 * 1024}


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True
    version = 1


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are two writes: without this, Nagle and the proxy's delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def do_GET(self):
        n = self.server.version
        size = int(self.path.rsplit("/", 1)[-1])
        first = f"version {n}\n".encode()
        body = first + b"x" * (size - len(first))
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("ETag", f'"v{n}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def get(conn, url, headers=None):
    """One GET through the proxy on `conn`: (seconds, first line of the body)."""
    t0 = time.perf_counter()
    conn.request("GET", url, headers=headers or {})
    body = conn.getresponse().read()
    return time.perf_counter() - t0, body.split(b"\n", 1)[0].decode()


def ms(samples):
    q = statistics.quantiles(samples, n=10)
    return f"median {statistics.median(samples) * 1e3:6.2f} ms, p90 {q[8] * 1e3:6.2f} ms"


def main():
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    origin = Origin(("127.0.0.1", 0), Handler)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{origin.server_address[1]}"
    with tempfile.TemporaryDirectory() as cache:
        hoard = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--cache-dir", cache],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            port = None
            for line in hoard.stderr:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            threading.Thread(target=hoard.stderr.read, daemon=True).start()
            proxy = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for label, size in SIZES.items():
                misses = [get(proxy(), f"{base}/miss/{i}/{size}")[0] for i in range(rounds)]
                url = f"{base}/reload/{size}"
                get(proxy(), url)
                time.sleep(0.5)  # stored
                reloads, old = [], 0
                for _ in range(rounds):
                    origin.version += 1
                    want = f"version {origin.version}"
                    after = proxy()
                    after.connect()
                    t, got = get(proxy(), url, {"Cache-Control": "no-cache"})
                    assert got == want, (got, want)
                    reloads.append(t)
                    old += get(after, url)[1] != want
                print(f"{label}: miss   {ms(misses)}")
                print(f"{label}: reload {ms(reloads)}, old after the reload {old} of {rounds}")
        finally:
            hoard.terminate()
            hoard.wait()
    origin.shutdown()


if __name__ == "__main__":
    main()
