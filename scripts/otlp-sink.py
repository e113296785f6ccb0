"""A discard OTLP/HTTP receiver for benchmarks: takes every export, answers 200.

Like an OpenTelemetry Collector with a no-op exporter: the node under test pays
its whole export path (encoding, HTTP), the receiver costs next to nothing.
Prints the exports and bytes it took when it gets SIGTERM.
Usage: python3 scripts/otlp-sink.py PORT
"""

import http.server
import signal
import socketserver
import sys

taken = {"exports": 0, "bytes": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        taken["exports"] += 1
        taken["bytes"] += length
        # An empty ExportTraceServiceResponse: full success.
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)

    def stop(*_):
        print(f"otlp-sink: {taken['exports']} exports, {taken['bytes']} bytes", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
