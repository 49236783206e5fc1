"""CURVE authentication of the board's internal links (everything but 5555 and 5558).

One certificate for the whole board (``board.key`` / ``board.key_secret`` in a keys
directory): every daemon is a CURVE server with the board's secret key on the ports it
binds, and a CURVE client with the board's key pair on the ports it connects to. A ZAP
handler (pyzmq's ``ThreadAuthenticator``, one per ZeroMQ context) admits a client only if
its public key is one of the ``*.key`` certificates in the keys directory, so a process
without the board's secret key cannot complete the handshake, and another process can be
admitted by dropping its public certificate in.

What a daemon needs, in order (options before bind/connect, the guard before any bind):

    keys = auth.load(directory)                    # or None: authentication off
    guard = auth.Guard(context, keys).start()      # a no-op object when keys is None
    sock.setsockopt(...) for each of auth.server_options(keys)   # then bind
    sock.setsockopt(...) for each of auth.client_options(keys)   # then connect
    guard.stop()                                   # before the context terminates

Everything but ``Guard`` is pure and works without a running reactor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

BOARD = "board"  # the certificate's base name: board.key (public), board.key_secret
ZAP_DOMAIN = b"bbd"


class KeysError(Exception):
    """The keys directory is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class Keys:
    directory: Path
    public: bytes  # Z85, 40 bytes
    secret: bytes
    allowed: frozenset[bytes]  # Z85 public keys admitted by the ZAP handler

    def admits(self, public_key: bytes) -> bool:
        return public_key in self.allowed


def create(directory: Path) -> bool:
    """Create the board's certificate in ``directory`` unless it is there already; True if
    created. The directory and the secret key are readable by the owner only."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    secret = directory / f"{BOARD}.key_secret"
    if secret.exists():
        return False
    # Write both files under a temporary name, then rename: a crash never leaves half a key.
    old = os.umask(0o077)
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(directory), f".{BOARD}-new")
    finally:
        os.umask(old)
    os.chmod(secret_file, 0o600)
    os.replace(public_file, directory / f"{BOARD}.key")
    os.replace(secret_file, secret)
    return True


def load(directory: Path) -> Keys:
    directory = Path(directory)
    secret_file = directory / f"{BOARD}.key_secret"
    if not secret_file.exists():
        raise KeysError(f"no board key in {directory} ({secret_file.name} missing): "
                        "run `bbd keys DIR` or `bbd up` once, or pass --no-auth")
    try:
        public, secret = zmq.auth.load_certificate(str(secret_file))
        allowed = frozenset(zmq.auth.load_certificates(str(directory)).keys())
    except (OSError, ValueError) as e:
        raise KeysError(f"unreadable keys in {directory}: {e}") from None
    if secret is None:
        raise KeysError(f"{secret_file} holds no secret key")
    return Keys(directory, public, secret, allowed | {public})


def server_options(keys: Keys | None) -> dict[int, Any]:
    """Socket options of a port that accepts only the board's processes (before bind)."""
    if keys is None:
        return {}
    return {zmq.CURVE_SERVER: 1, zmq.CURVE_SECRETKEY: keys.secret, zmq.ZAP_DOMAIN: ZAP_DOMAIN}


def client_options(keys: Keys | None) -> dict[int, Any]:
    """Socket options of a connection to such a port (before connect)."""
    if keys is None:
        return {}
    return {zmq.CURVE_SERVERKEY: keys.public, zmq.CURVE_PUBLICKEY: keys.public,
            zmq.CURVE_SECRETKEY: keys.secret}


def secure(sock: zmq.Socket, options: dict[int, Any]) -> zmq.Socket:
    """Set ``options`` on a socket that has no endpoint yet."""
    for option, value in options.items():
        sock.setsockopt(option, value)
    return sock


class _AllowList:
    """ZAP credentials provider: admits the board's keys, reports every refusal."""

    def __init__(self, keys: Keys, refused: Callable[[bytes], None]) -> None:
        self.keys = keys
        self.refused = refused

    def callback(self, domain: str, key: bytes) -> bool:
        if self.keys.admits(key):
            return True
        self.refused(key)
        return False


class Guard:
    """The ZAP handler of one ZeroMQ context. Without it libzmq would accept any CURVE client
    that knows the (public) server key; with it, only the allow-list. ``refused`` is called
    from the authenticator's thread with each refused public key."""

    def __init__(self, context: zmq.Context, keys: Keys | None,
                 refused: Callable[[bytes], None] | None = None) -> None:
        self.context = context
        self.keys = keys
        self.refused = refused or (lambda key: None)
        self.authenticator: Any = None

    def start(self) -> Guard:
        if self.keys is not None and self.authenticator is None:
            from zmq.auth.thread import ThreadAuthenticator

            self.authenticator = ThreadAuthenticator(self.context)
            self.authenticator.start()
            self.authenticator.configure_curve_callback(
                ZAP_DOMAIN.decode(), _AllowList(self.keys, self.refused))
        return self

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def threadsafe_refusal_logger(log: Any, where: str) -> Callable[[bytes], None]:
    """A ``refused`` callback for daemons: logs on the reactor thread."""
    from twisted.internet import reactor

    def refused(key: bytes) -> None:
        reactor.callFromThread(
            log.warn, "{where}: refused a connection with an unknown CURVE key {key}",
            where=where, key=key.decode("ascii", "replace"))

    return refused


def name_token(keys: Keys, name: str) -> str:
    """The registration token of server ``name`` on a board with keys: derived from the
    board's secret, so a server that lost its data directory (a new disk, a new volume)
    still proves its name, and nobody without the keys can."""
    import hashlib
    import hmac

    return hmac.new(keys.secret, b"bbd-server-name:" + name.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def server_token(data_dir: Path) -> str:
    """This server's registration token without keys (authentication off): made once, kept
    in its data directory (owner only). The reference binds the server's name to it, so
    only this server can change the name's endpoints; a server whose data directory is
    lost cannot claim its name back (the reference's entry must be removed by hand)."""
    import secrets

    path = Path(data_dir) / "token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_hex(16)
    tmp = path.with_name(".token.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token
