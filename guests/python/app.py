"""The echo server in Python, calling wasi:sockets directly.

Built into a component with componentize-py against the same world as the
Rust guest (wit/echo.wit); see build.sh. One client at a time, like the
study notes' server. Every resource is closed with `with`, which drops it:
a client's streams go before its socket (the wasmtime CLI traps on the
other order, "resource has children"), so they are listed after it
(`with` exits in reverse order).
"""

from wit_world import exports
from wit_world.imports import environment, instance_network, network, poll, streams, tcp, tcp_create_socket
from componentize_py_types import Err

DEFAULT_LISTEN_ADDR = "0.0.0.0:9000"
BUFSIZE = 4096
SOMAXCONN = 4096


class Run(exports.Run):
    def run(self) -> None:
        # WSAStartup(): not needed; the host grants the network.
        net = instance_network.instance_network()
        addr = listen_addr()

        # socket(AF_INET, SOCK_STREAM, 0)
        sock = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV4)
        # bind(): start, then finish once it stops answering would-block
        sock.start_bind(net, addr)
        finish(sock, sock.finish_bind)
        # listen(SOMAXCONN)
        sock.set_listen_backlog_size(SOMAXCONN)
        sock.start_listen()
        finish(sock, sock.finish_listen)
        print(f"[python echo] listening on {show(addr)}", flush=True)

        with sock.subscribe() as accept_ready:
            while True:
                # accept(): wait on the listener's pollable, then accept
                try:
                    client, rx, tx = sock.accept()
                except Err as e:
                    if e.value == network.ErrorCode.WOULD_BLOCK:
                        accept_ready.block()
                    else:
                        print(f"[python echo] accept() failed: {e.value}", flush=True)
                    continue
                with client, rx, tx:
                    echo(rx, tx)
                # closesocket(): `with` dropped tx, rx, then the socket


def echo(rx: streams.InputStream, tx: streams.OutputStream) -> None:
    """recv() and send() until the client closes its side."""
    while True:
        try:
            data = rx.blocking_read(BUFSIZE)  # recv()
        except Err as e:
            if not isinstance(e.value, streams.StreamError_Closed):
                print("[python echo] recv() failed", flush=True)
            return  # closed: recv() == 0
        try:
            send_all(tx, data)  # send()
        except Err:
            print("[python echo] send() failed", flush=True)
            return


def send_all(tx: streams.OutputStream, data: bytes) -> None:
    """Writes no more than check-write allows at a time, then flushes."""
    with tx.subscribe() as writable:
        while data:
            allowed = tx.check_write()
            if allowed == 0:
                writable.block()
                continue
            tx.write(data[:allowed])
            data = data[allowed:]
    tx.blocking_flush()


def finish(sock: tcp.TcpSocket, step) -> None:
    with sock.subscribe() as ready:
        while True:
            try:
                return step()
            except Err as e:
                if e.value != network.ErrorCode.WOULD_BLOCK:
                    raise
                ready.block()


def listen_addr() -> network.IpSocketAddress:
    env = dict(environment.get_environment())
    text = env.get("LISTEN_ADDR", DEFAULT_LISTEN_ADDR).split(",")[0]
    host, port = text.rsplit(":", 1)
    octets = tuple(int(part) for part in host.split("."))
    return network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port=int(port), address=octets))


def show(addr: network.IpSocketAddress) -> str:
    return ".".join(map(str, addr.value.address)) + f":{addr.value.port}"
