"""The echo server as one instance per client (the host's --per-client).

The host accepts each client and starts a fresh instance of this program
with the client's connection as stdin and stdout: what is left of the
study notes' server is its recv/send loop. Built with componentize-py
against the `echo-stdio` world (wit/echo.wit); see build.sh.
"""

import os
import sys

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        client = os.environ.get("REMOTE_ADDR", "?")
        print(f"[python] serving {client}", file=sys.stderr, flush=True)
        connection, reply = sys.stdin.buffer, sys.stdout.buffer
        while True:
            data = connection.read1(4096)  # recv(): what has arrived; b"" once the client closed
            if not data:
                break
            reply.write(data)  # send()
            reply.flush()
