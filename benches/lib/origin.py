"""Loopback origin for the bench scripts: GET /N/anything answers N bytes ("x"), any other
path 1 KiB, with Cache-Control: max-age=3600. Usage: python3 origin.py PORT (binds 127.0.0.1)."""
import http.server
import sys

BODIES = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self):
        first = self.path.split("/")[1]
        n = int(first) if first.isdigit() else 1024
        body = BODIES.setdefault(n, b"x" * n)
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
