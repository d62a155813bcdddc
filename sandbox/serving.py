"""Run an ASGI app (Starlette) on 127.0.0.1 in a background thread, optionally over TLS.

Every sandbox server (the GKE API, each cluster's Kubernetes API) is one of these, so the official
clients reach them over real sockets. `port=0` picks a free port; `ServerHandle.port` tells which.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

HOST = "127.0.0.1"


@dataclass
class ServerHandle:
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    tls: bool

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)


def start_server(app, *, port: int = 0, certfile: str | None = None, keyfile: str | None = None,
                 name: str = "sandbox-server", startup_timeout_s: float = 10.0) -> ServerHandle:
    """Start `app` on 127.0.0.1:`port` in a daemon thread and return once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a keep-alive response written in two parts waits
    # for the client's delayed ACK, ~40 ms per request (Nagle), which is minutes at a high time scale.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((HOST, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            ssl_certfile=certfile, ssl_keyfile=keyfile,
                            # Watches are long-lived streams; a short keep-alive would cut idle clients.
                            timeout_keep_alive=120)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # we run in a thread; signals stay with the host

    def run() -> None:
        asyncio.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start on {HOST}:{bound_port}")
        time.sleep(0.01)
    logging.getLogger("sandbox").debug("%s listening on %s:%d", name, HOST, bound_port)
    return ServerHandle(server, thread, bound_port, tls=certfile is not None)
