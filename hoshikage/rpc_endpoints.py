"""RPC server addresses and connections, without the native library (the server imports this).

llama.cpp's RPC client aborts the whole process (``GGML_ABORT``) when an endpoint cannot be
reached, and on any call over a connection whose server went away (ggml-rpc.cpp:
``rpc_dispatcher::start``, ``RPC_STATUS_ASSERT``). So ``check_reachable`` opens a plain TCP
connection before llama.cpp is asked to connect, and ``ConnectionWatch`` tells whether the
connections llama.cpp holds still have their server, looking at this process's own sockets and
sending nothing.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from .errors import ModelLoadError, ParameterError

CONNECT_TIMEOUT_S = 5.0


class RPCConnectionLost(ModelLoadError):
    """An RPC server a loaded model uses closed its connection (it stopped or was killed)."""


def parse_endpoint(text: str, param: str = "rpc") -> str:
    """``HOST:PORT`` checked and normalised (port 1-65535); ParameterError naming ``param`` otherwise."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in " ,/"):
        raise ParameterError(f"{param}: {text!r} is not an RPC server address HOST:PORT (e.g. 127.0.0.1:50052)",
                             param)
    return f"{host}:{int(port)}"


def parse_endpoints(value: str | Sequence[str] | None, param: str = "rpc") -> list[str]:
    """A comma-separated string or a list of ``HOST:PORT`` (llama.cpp's ``--rpc``), duplicates refused."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    endpoints = [parse_endpoint(item, param) for item in items if str(item).strip()]
    if len(set(endpoints)) != len(endpoints):
        raise ParameterError(f"{param}: an RPC server is listed twice: {', '.join(endpoints)}", param)
    return endpoints


def parse_tensor_split(value: str | Sequence[float] | None, param: str = "tensor_split") -> list[float]:
    """Proportions per device (llama.cpp's ``--tensor-split 3,1``): finite, >= 0, not all 0."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        split = [float(x) for x in items if str(x).strip()]
    except ValueError:
        raise ParameterError(f"{param}: {value!r} is not a list of numbers (e.g. 3,1)", param) from None
    if any(not (x >= 0.0) or x == float("inf") for x in split) or (split and sum(split) == 0):
        raise ParameterError(f"{param}: proportions must be finite, >= 0 and not all 0, got {value!r}", param)
    return split


def check_reachable(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ModelLoadError naming ``endpoint`` unless a TCP connection to it opens (nothing is sent)."""
    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ModelLoadError(f"the RPC server {endpoint} cannot be reached ({why}); start rpc-server there "
                             f"(rpc-server -H HOST -p PORT) or remove it from the RPC servers") from None


def _peer_addresses(endpoint: str) -> set[tuple[str, int]]:
    host, _, port = endpoint.rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {(info[4][0], info[4][1]) for info in infos}


class ConnectionWatch:
    """This process's TCP connections to some RPC servers, found once (right after llama.cpp
    opened them, while their servers are alive) and then watched without sending anything:
    ``lost()`` names a server whose connection was closed or reset, or whose socket is gone.

    Linux: the sockets are found in ``/proc/self/fd`` by their peer address and remembered by
    file descriptor and inode (a killed server's socket no longer reports its peer). Elsewhere a
    TCP connect to each endpoint stands in.
    """

    def __init__(self, endpoints: Sequence[str]):
        self.endpoints = list(endpoints)
        self.sockets: dict[int, tuple[str, str]] = {}  # fd -> (its "socket:[inode]", endpoint)
        if os.path.isdir("/proc/self/fd"):
            wanted = {addr: e for e in self.endpoints for addr in _peer_addresses(e)}
            for fd, inode, peer in _tcp_sockets():
                if peer in wanted:
                    self.sockets[fd] = (inode, wanted[peer])

    def lost(self) -> str | None:
        """The first endpoint whose connection was lost, else None."""
        if not os.path.isdir("/proc/self/fd"):
            for endpoint in self.endpoints:
                try:
                    check_reachable(endpoint, timeout=1.0)
                except ModelLoadError:
                    return endpoint
            return None
        for fd, (inode, endpoint) in self.sockets.items():
            try:
                if os.readlink(f"/proc/self/fd/{fd}") != inode:
                    return endpoint
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                return endpoint
            with sock:
                try:
                    sock.getpeername()
                except OSError:  # not connected any more
                    return endpoint
                if _peer_closed(sock):
                    return endpoint
        return None


def _tcp_sockets() -> list[tuple[int, str, tuple[str, int]]]:
    """(fd, "socket:[inode]", peer address) of this process's connected TCP sockets."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            inode = os.readlink(f"/proc/self/fd/{name}")
            if not inode.startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                out.append((int(name), inode, sock.getpeername()[:2]))
            except OSError:  # not connected (a listening socket)
                continue
    return out


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # nothing to read: the connection is open
        return False
    except OSError:  # reset by the peer
        return True
