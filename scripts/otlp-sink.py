"""A discard OTLP/HTTP receiver for benchmarks: takes every export, answers 200.

Like an OpenTelemetry Collector with a no-op exporter: the node under test pays
its whole export path (encoding, HTTP), the receiver costs next to nothing. It
shares the machine with the node in a benchmark, so it is plain sockets (a
thread per connection, bodies read into one reused buffer) rather than
http.server, whose header parsing cost about a microsecond per exported span.
Prints the exports and bytes it took when it gets SIGTERM.
Usage: python3 scripts/otlp-sink.py PORT
"""

import signal
import socket
import sys
import threading

taken = {"exports": 0, "bytes": 0}
lock = threading.Lock()
# An empty ExportTraceServiceResponse: full success.
OK = (b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
      b"content-length: 0\r\n\r\n")
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def serve(conn):
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pending = b""
    with conn:
        while True:
            # Headers: read until the blank line (they arrive in the first segment).
            while b"\r\n\r\n" not in pending:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, _, rest = pending.partition(b"\r\n\r\n")
            try:
                length = content_length(head)
            except ValueError:
                conn.sendall(BAD)
                return
            got = min(len(rest), length)
            pending = rest[length:]
            while got < length:
                n = conn.recv_into(view[: min(len(buf), length - got)])
                if n == 0:
                    return
                got += n
            with lock:
                taken["exports"] += 1
                taken["bytes"] += length
            conn.sendall(OK)


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(64)

    def stop(*_):
        print(f"otlp-sink: {taken['exports']} exports, {taken['bytes']} bytes", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
