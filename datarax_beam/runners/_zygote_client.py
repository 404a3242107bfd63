"""The command Beam runs for each local worker when workers are forked from a zygote.

Run as a script (``python .../_zygote_client.py SOCKET [ARG ...]``), never imported through the
package: it starts in milliseconds on the standard library alone. It hands the zygote (see
`datarax_beam.runners.zygote`) its standard streams, environment, working directory and
arguments, then waits for the worker the zygote forks for it and exits with that worker's status:
to Beam it is the worker process. If this process dies, its connection closes and the zygote
kills the worker.
"""

import json
import os
import socket
import struct
import sys


def main(argv: list[str]) -> int:
    path, args = argv[1], argv[2:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as e:
        print(f"datarax_beam: no worker zygote at {path}: {e}", file=sys.stderr)
        return 1
    socket.send_fds(conn, [b"F"], [0, 1, 2])
    payload = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": args}).encode()
    conn.sendall(struct.pack("!I", len(payload)) + payload)
    status = b""
    while len(status) < 4:
        chunk = conn.recv(4 - len(status))
        if not chunk:
            print("datarax_beam: the worker zygote went away", file=sys.stderr)
            return 1
        status += chunk
    code = struct.unpack("!i", status)[0]
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


if __name__ == "__main__":
    sys.exit(main(sys.argv))
