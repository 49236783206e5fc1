"""Mutated frames against real daemons: every frame gets exactly one reply, and no reply
shows a clock that a poisoned value pushed out of range."""

from __future__ import annotations

import json
import os
import random

import msgpack
import zmq

from bbd import protocol
from bbd.localcluster import Cluster

SEEDS = [
    {"service": "login", "data": {"user": "fuzz", "clock": 3, "timestamp": 1.5}},
    {"service": "publish", "data": {"user": "fuzz", "channel": "fz", "message": "hi",
                                    "id": "x1"}},
    {"service": "message", "data": {"src": "fuzz", "dst": "fuzz", "message": "m"}},
    {"service": "history", "data": {"channel": "fz", "limit": 5, "before": "s:1"}},
    {"service": "channels", "data": {}},
]
SWAPS = [None, True, -1, 0, 2**53, 2**63 - 1, 2**64 - 200, 1.5e308, "", "x" * 70,
         "\u0301", "a\u2028b", "servers", b"\xff", [], {}, [1, [2, [3]]]]


def mutate(rng: random.Random) -> bytes:
    msg = msgpack.unpackb(msgpack.packb(rng.choice(SEEDS)))
    choice = rng.random()
    if choice < 0.5:  # swap a value for a hostile one
        key = rng.choice(list(msg["data"]) or ["clock"])
        msg["data"][key] = rng.choice(SWAPS)
    elif choice < 0.6:
        msg[rng.choice(["service", "data"])] = rng.choice(SWAPS)
    frame = bytearray(msgpack.packb(msg, use_bin_type=True))
    if choice >= 0.8:  # flip, cut or duplicate bytes
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(frame))
            frame[i] = rng.randrange(256)
        if rng.random() < 0.3:
            frame = frame[: rng.randrange(1, len(frame) + 1)]
    return bytes(frame)


def test_every_mutated_frame_gets_one_reply(cluster: Cluster) -> None:
    n = int(os.environ.get("BBD_FUZZ_FRAMES", "1500"))
    rng = random.Random(int(os.environ.get("BBD_FUZZ_SEED", "8")))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.frontend)
    replies = 0
    in_flight = 0
    sent = 0
    highest = 0
    try:
        while replies < n:
            while sent < n and in_flight < 50:
                sock.send_multipart([b"", mutate(rng)])
                sent += 1
                in_flight += 1
            assert sock.poll(10_000), f"{sent - replies} frames unanswered after {replies}"
            body = sock.recv_multipart()[-1]
            replies += 1
            in_flight -= 1
            reply = (msgpack.unpackb(body, strict_map_key=False) if body[:1] != b"{"
                     else json.loads(body))
            highest = max(highest, reply["data"].get("clock", 0))
    finally:
        sock.close(0)
    assert replies == n
    assert highest < protocol.MAX_CLOCK_LEAP * 2
    for name in cluster.names():
        status = cluster.status(name)
        assert status is not None and status["ready"] and status["clock"] < 2**40
