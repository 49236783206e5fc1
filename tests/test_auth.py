"""bbd.auth: the board's keys on disk and CURVE + the ZAP allow-list on real sockets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq

from bbd import auth


def test_keys_are_made_once_and_readable_by_the_owner_only(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    assert auth.create(d) is True
    first = auth.load(d)
    assert auth.create(d) is False  # kept: a restart must not change the board's key
    assert auth.load(d) == first
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "board.key_secret").stat().st_mode) == 0o600
    assert first.admits(first.public) and len(first.public) == 40


def test_missing_keys_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(auth.KeysError, match="--no-auth"):
        auth.load(tmp_path)


def test_options_are_empty_without_keys() -> None:
    assert auth.server_options(None) == {} and auth.client_options(None) == {}


def test_server_token_is_made_once(tmp_path: Path) -> None:
    token = auth.server_token(tmp_path)
    assert auth.server_token(tmp_path) == token and len(token) == 32
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600


def test_only_the_board_keys_get_through(tmp_path: Path) -> None:
    auth.create(tmp_path / "keys")
    keys = auth.load(tmp_path / "keys")
    ctx = zmq.Context()
    refused: list[bytes] = []
    guard = auth.Guard(ctx, keys, refused.append).start()
    try:
        server = auth.secure(ctx.socket(zmq.ROUTER), auth.server_options(keys))
        server.setsockopt(zmq.LINGER, 0)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        pub, sec = zmq.curve_keypair()
        stranger = {zmq.CURVE_SERVERKEY: keys.public, zmq.CURVE_PUBLICKEY: pub,
                    zmq.CURVE_SECRETKEY: sec}
        socks = []
        for options in ({}, stranger, auth.client_options(keys)):  # only the last is ours
            c = auth.secure(ctx.socket(zmq.DEALER), options)
            c.setsockopt(zmq.LINGER, 0)
            c.connect(f"tcp://127.0.0.1:{port}")
            c.send(options and options[zmq.CURVE_PUBLICKEY] or b"null")
            socks.append(c)
        assert server.poll(3000)
        assert server.recv_multipart()[-1] == keys.public
        assert not server.poll(300)  # nothing from the two others
        assert refused == [pub]  # the stranger's key reached the allow-list and was refused
        for c in [*socks, server]:
            c.close(0)
    finally:
        guard.stop()
        ctx.term()
