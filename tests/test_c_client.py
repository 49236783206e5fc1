"""The interactive C client (clients/c), driven through a pseudo-terminal like a user would.

The session test runs against the `cluster` fixture (broker + proxy + servers); the others
need no cluster: an unreachable broker, over-long input, end of input and malformed replies.
"""

import os
import re
import select
import shutil
import socket
import subprocess
import termios
import threading
import time
import uuid
from pathlib import Path

import msgpack
import pytest
import zmq

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIR = ROOT / "clients" / "c"
CLIENT = CLIENT_DIR / "cliente"


@pytest.fixture(scope="module")
def cliente():
    # A build failure is a test failure, never a skip.
    r = subprocess.run(["make", "-C", str(CLIENT_DIR)], capture_output=True, text=True)
    assert r.returncode == 0, f"make failed:\n{r.stdout}\n{r.stderr}"
    assert CLIENT.is_file()
    return str(CLIENT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(broker, proxy, timeout_ms):
    env = dict(os.environ)
    env.update(BROKER=broker, PROXY=proxy, BBD_TIMEOUT_MS=str(timeout_ms))
    return env


class Terminal:
    """The client on a pseudo-terminal, with deadline-bounded waits on its output."""

    def __init__(self, argv, env, canonical=False):
        master, slave = os.openpty()
        if not canonical:
            # Character mode: a canonical tty caps a line at 4095 bytes, which would hide the
            # client's own long-line handling; no echo keeps typed text out of the output.
            attrs = termios.tcgetattr(slave)
            attrs[3] &= ~(termios.ICANON | termios.ECHO)
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.fd = master
        self.buf = b""
        self.pos = 0  # expect() searches from here, so each wait needs new output

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the client closed the terminal (exited)
            data = b""
        self.buf += data
        return bool(data)

    def send(self, text):
        data = text.encode() if isinstance(text, str) else text
        while data:
            # Keep draining output while writing, so neither side blocks on a full buffer.
            r, w, _ = select.select([self.fd], [self.fd], [], 10)
            if r:
                self._read(0)
            if w:
                n = os.write(self.fd, data[:4096])
                data = data[n:]
            elif not r:
                pytest.fail("terminal input blocked\n" + self.transcript())

    def line(self, text=""):
        self.send(text + "\n")

    def lines(self, *texts):
        for text in texts:
            self.line(text)

    def expect(self, text, timeout=10.0, start=None):
        needle = text.encode() if isinstance(text, str) else text
        if start is not None:
            self.pos = start
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(needle, self.pos)
            if i >= 0:
                self.pos = i + len(needle)
                return
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)) and self.proc.poll() is not None:
                pytest.fail(f"did not see {text!r} within {timeout}s\n" + self.transcript())

    def seen(self, text):
        return text.encode() in self.buf

    def transcript(self):
        return "--- client output ---\n" + self.buf.decode("utf-8", "replace").replace("\r", "")

    def wait_exit(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        if self.proc.poll() is None:
            pytest.fail("client did not exit\n" + self.transcript())
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


@pytest.fixture
def terminals():
    opened = []
    yield lambda *a, **kw: opened.append(Terminal(*a, **kw)) or opened[-1]
    for t in opened:
        t.close()


def test_session_against_cluster(cliente, cluster, terminals):
    from bbd.client import Client

    tag = uuid.uuid4().hex[:8]
    me, other, chan = f"ana{tag}", f"bob{tag}", f"geral{tag}"
    t = terminals([cliente], client_env(cluster.frontend, cluster.xpub, 3000))
    t.expect("Opcao: ")

    t.lines("1", me)
    t.expect(f"Login OK: {me}")
    t.lines("3", chan)
    t.expect(f"Canal cadastrado: {chan}")
    t.lines("3", chan)
    t.expect("Erro: o canal ja existe")  # the server's English error, in Portuguese
    t.lines("7", chan)
    t.expect(f"Inscrito no canal {chan}")

    # A new subscription reaches the servers asynchronously: post until our own post
    # comes back over SUB, which proves the subscription is in place.
    for n in range(20):
        mark = t.pos  # the post may be shown before or after the reply
        t.lines("5", chan, f"post {n}")
        t.expect(f"Publicado em {chan}")
        try:
            t.expect(f"[canal {chan}] {me}: post {n}", timeout=1.0, start=mark)
            break
        except pytest.fail.Exception:
            continue
    else:
        pytest.fail("own posts never came back over SUB\n" + t.transcript())
    t.expect("Opcao: ")

    with Client(cluster.frontend) as py:
        assert py.request("login", {"user": other})["status"] == "sucesso"
        assert py.request("login", {"user": me + "x"})["status"] == "sucesso"
        # Same prefix as our user: ZeroMQ delivers it, the client must not show it.
        assert py.request("message", {"src": other, "dst": me + "x",
                                      "message": "nao e para voce"})["status"] == "OK"
        # Both must appear with no further input on the client.
        assert py.request("publish", {"user": other, "channel": chan,
                                      "message": "ola do python"})["status"] == "OK"
        t.expect(f"[canal {chan}] {other}: ola do python")
        assert py.request("message", {"src": other, "dst": me,
                                      "message": "oi privado"})["status"] == "OK"
        t.expect(f"[privada] {other} -> {me}: oi privado")

    t.line("2")
    t.expect("Usuarios (")
    t.expect(f"  - {other}")
    t.line("4")
    t.expect(f"  - {chan}")
    t.lines("6", other, "resposta")
    t.expect(f"Mensagem enviada para {other}")
    t.lines("8", chan)
    t.expect("Historico (")
    t.expect(f"[canal {chan}] {other}: ola do python")
    t.lines("8", "")
    t.expect(f"[privada] {other} -> {me}: oi privado")

    t.lines("5", chan, "x" * 300_000)
    t.expect("Erro: linha muito longa")
    t.lines("5", chan, "x" * 65_537)
    t.expect("Erro: texto muito longo (maximo 65536 caracteres)")
    # The longest message the protocol allows, in two-byte characters, goes through whole.
    longest = "é" * 65_536
    t.lines("5", chan, longest)
    t.expect(f"Publicado em {chan}", timeout=20)
    with Client(cluster.frontend) as py:
        posts = py.request("history", {"channel": chan})["messages"]
        assert posts[-1]["message"] == longest
    t.lines("5", "n" * 65)
    t.expect("Erro: nome muito longo")
    t.line("4")  # still answering
    t.expect(f"  - {chan}")

    assert not t.seen("nao e para voce"), t.transcript()
    t.line("0")
    t.expect("Ate logo!")
    assert t.wait_exit() == 0


def test_unreachable_broker(cliente, terminals):
    broker = f"tcp://127.0.0.1:{free_port()}"
    t = terminals([cliente], client_env(broker, f"tcp://127.0.0.1:{free_port()}", 200))
    t.expect("Opcao: ")
    started = time.monotonic()
    t.line("2")
    t.expect(f"Erro: servidor indisponivel (broker {broker})")
    assert time.monotonic() - started < 5, "3 tries of 200 ms should fail fast"
    t.lines("1", "ana")
    t.expect("Erro: servidor indisponivel")
    t.line("4")
    t.expect("Erro: servidor indisponivel")
    t.line("0")
    t.expect("Ate logo!")
    assert t.wait_exit() == 0


def test_long_and_bad_input(cliente, terminals):
    t = terminals([cliente], client_env(f"tcp://127.0.0.1:{free_port()}",
                                        f"tcp://127.0.0.1:{free_port()}", 200))
    t.expect("Opcao: ")
    t.line("z" * 300_000)
    t.expect("Erro: linha muito longa (maximo 65536 caracteres)")
    t.lines("1", "a" * 300_000)
    t.expect("Erro: linha muito longa")
    t.lines("1", "b" * 65)
    t.expect("Erro: nome muito longo")
    t.line("1")
    t.send(b"\xff\xfe\n")
    t.expect("Erro: texto nao e UTF-8 valido")
    t.line("6")  # refused before anything is asked
    t.expect("Erro: faca login primeiro")
    t.expect("Opcao: ")
    assert not t.seen("Destinatario: ")
    t.line("42")
    t.expect("Opcao invalida (? mostra o menu)")
    t.line("0")
    t.expect("Ate logo!")
    assert t.wait_exit() == 0


def test_end_of_input_exits_cleanly(cliente, terminals):
    env = client_env(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", 200)
    # Ctrl-D on a real (canonical) terminal, at the menu and inside a prompt.
    t = terminals([cliente], env, canonical=True)
    t.expect("Opcao: ")
    t.send(b"\x04")
    t.expect("Ate logo!")
    assert t.wait_exit() == 0
    t = terminals([cliente], env, canonical=True)
    t.expect("Opcao: ")
    t.line("7")
    t.expect("Canal para inscrever: ")
    t.send(b"\x04")
    t.expect("Ate logo!")
    assert t.wait_exit() == 0
    # Piped input ending without a newline.
    r = subprocess.run([cliente], input=b"7\ngeral\n7\ngeral", env=env, capture_output=True,
                       timeout=10)
    assert r.returncode == 0
    assert b"Inscrito no canal geral" in r.stdout and b"Ja inscrito" in r.stdout


def test_malformed_replies_do_not_crash(cliente):
    """A stub broker answering every request with something wrong."""
    bad = [
        b"", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x91" * 5000, msgpack.packb([1, 2]),
        msgpack.packb({"service": 1, "data": [1]}),
        msgpack.packb({"data": {"status": 5, "users": "x", "channels": [1, None, b"b"],
                                "messages": [1, {"dst": 3}, {"channel": ["x"], "timestamp": "t"},
                                             {"channel": "c", "timestamp": 1e300}]}}),
        msgpack.packb({"data": {"status": "erro", "description": b"bytes", "clock": -5}}),
        msgpack.packb({"data": {"status": "erro", "message": "\x1b[2J", "clock": 2**64 - 1}}),
    ]
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve():
        i = 0
        while not stop.is_set():
            if router.poll(100):
                frames = router.recv_multipart()
                router.send_multipart([frames[0], b"", bad[i % len(bad)]])
                i += 1

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        script = "".join("1\nana\n2\n4\n8\ngeral\n3\nc\n" for _ in range(3)) + "0\n"
        r = subprocess.run([cliente], input=script.encode(), capture_output=True, timeout=30,
                           env=client_env(f"tcp://127.0.0.1:{port}",
                                          f"tcp://127.0.0.1:{free_port()}", 2000))
    finally:
        stop.set()
        th.join()
        router.close()
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out + r.stderr.decode("utf-8", "replace")
    assert "Ate logo!" in out
    assert "resposta invalida" in out
    assert "\x1b" not in out  # control characters from the network are neutralised
    assert not re.search(r"servidor indisponivel", out)  # every request got its (bad) answer


class StubBroker:
    """A broker that answers like a board, with canned lists, and keeps every request."""

    def __init__(self, users=(), channels=(), errors=None):
        self.users, self.channels = list(users), list(channels)
        self.errors = errors or {}  # service -> description of an erro reply
        self.requests = []
        self.router = zmq.Context.instance().socket(zmq.ROUTER)
        self.router.linger = 0
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, service, data):
        if service in self.errors:
            key = "message" if service in ("publish", "message") else "description"
            return {"status": "erro", key: self.errors[service]}
        return {"login": {"status": "sucesso"}, "channel": {"status": "sucesso"},
                "users": {"users": self.users}, "channels": {"channels": self.channels},
                "publish": {"status": "OK"}, "message": {"status": "OK"},
                "history": {"messages": []}}.get(service, {"status": "erro"})

    def _serve(self):
        while not self.stop.is_set():
            if self.router.poll(50):
                frames = self.router.recv_multipart()
                req = msgpack.unpackb(frames[-1], raw=False)
                self.requests.append(req)
                reply = {"service": req["service"],
                         "data": {**self._answer(req["service"], req["data"]), "clock": 1}}
                self.router.send_multipart([frames[0], b"", msgpack.packb(reply)])

    def services(self):
        return [r["service"] for r in self.requests]

    def close(self):
        self.stop.set()
        self.thread.join()
        self.router.close()


@pytest.fixture
def stub():
    made = []
    yield lambda **kw: made.append(StubBroker(**kw)) or made[-1]
    for s in made:
        s.close()


def test_checks_come_before_the_questions(cliente, terminals, stub):
    """Login before publish/message, the name and its existence before the text."""
    b = stub(users=["ana", "bob"], channels=["geral"])
    t = terminals([cliente], client_env(b.endpoint, f"tcp://127.0.0.1:{free_port()}", 2000))
    t.expect("Opcao: ")
    for option in ("5", "6"):
        t.line(option)
        t.expect("Erro: faca login primeiro (opcao 1)")
        t.expect("Opcao: ")
    assert not t.seen("Canal: ") and not t.seen("Destinatario: ")
    assert b.requests == [], "nothing is sent before the login"
    t.lines("1", "ana")
    t.expect("Login OK: ana")
    t.lines("6", "")  # empty recipient: refused at once
    t.expect("Erro: valor vazio")
    t.expect("Opcao: ")
    t.lines("6", "carla")  # nobody of that name
    t.expect("Erro: o usuario carla nao existe")
    t.expect("Opcao: ")
    t.lines("5", "naoexiste")
    t.expect("Erro: o canal naoexiste nao existe (crie-o com [3] Cadastrar canal)")
    t.expect("Opcao: ")
    assert not t.seen("Mensagem: "), t.transcript()
    assert "publish" not in b.services() and "message" not in b.services()
    t.lines("6", "bob", "oi bob")
    t.expect("Mensagem enviada para bob")
    t.lines("5", "geral", "ola")
    t.expect("Publicado em geral")
    t.lines("7", "naoexiste")
    t.expect("Inscrito no canal naoexiste")
    t.expect("Aviso: o canal naoexiste nao existe (ainda)")
    t.lines("8", "naoexiste")
    t.expect("Historico (0 mensagens):")
    t.expect("Aviso: o canal naoexiste nao existe (ainda); por isso nao ha historico")
    t.lines("8", "geral")  # an existing channel with no posts: no hint
    t.expect("Historico (0 mensagens):")
    t.expect("Opcao: ")
    assert t.buf.count(b"Aviso: o canal") == 2, t.transcript()
    sent = [r["data"] for r in b.requests if r["service"] in ("publish", "message")]
    assert [d["message"] for d in sent] == ["oi bob", "ola"]
    t.line("0")
    t.expect("Ate logo!")
    assert t.wait_exit() == 0


def test_menu_is_shown_once_then_on_demand(cliente, terminals, stub):
    b = stub(channels=["geral"])
    t = terminals([cliente], client_env(b.endpoint, f"tcp://127.0.0.1:{free_port()}", 2000))
    t.expect("Opcao: ")
    for _ in range(3):
        t.line("4")
        t.expect("  - geral")
    t.line("")
    t.line("4")
    t.expect("  - geral")
    t.expect("Opcao: ")
    assert t.buf.count(b"[1] Login") == 1, t.transcript()
    t.line("?")
    t.expect("[1] Login")
    assert t.buf.count(b"[1] Login") == 2
    t.line("0")
    assert t.wait_exit() == 0


# The server's English error texts (bbd/state.py, bbd/protocol.py) and what a person reads.
SERVER_ERRORS = [
    ("channel", "channel already exists", "o canal ja existe"),
    ("publish", "channel 'x' does not exist", "o canal 'x' nao existe"),
    ("message", "user 'zé' has not logged in", "o usuario 'zé' nao fez login"),
    ("channel", "channel name is empty", "nome de canal vazio"),
    ("login", "user name is longer than 64 characters",
     "nome de usuario longo demais (maximo 64 caracteres)"),
    ("login", "user name has leading or trailing blanks",
     "nome de usuario com espacos no inicio ou no fim"),
    ("channel", "channel name contains control characters",
     "nome de canal com caracteres de controle"),
    ("login", "'servers' is a reserved name", "'servers' e um nome reservado"),
    ("publish", "message is empty", "mensagem vazia"),
    ("message", "message is longer than 65536 characters", "mensagem longa demais"),
    ("login", "missing field 'user'", "falta o campo 'user'"),
    ("login", "field 'user' must be a string, got int", "o campo 'user' deve ser texto"),
    ("login", "field 'id' must be 1 to 128 characters", "o campo 'id' deve ter de 1 a 128"),
    ("login", "internal error; the request was not applied", "erro interno no servidor"),
    ("login", "unknown service 'login'", "servico desconhecido 'login'"),
    ("login", "text is not valid UTF-8", "texto nao e UTF-8 valido"),
    ("login", "frame is not valid MessagePack (ExtraData)", "pedido ilegivel"),
    ("login", "something new", "erro do servidor: something new"),
]


@pytest.mark.parametrize("service,english,portuguese", SERVER_ERRORS)
def test_server_errors_are_shown_in_portuguese(cliente, stub, service, english, portuguese):
    b = stub(users=["ana", "bob"], channels=["geral"], errors={service: english})
    script = {"login": "1\nana\n0\n", "channel": "3\ngeral\n0\n",
              "publish": "1\nana\n5\ngeral\nola\n0\n",
              "message": "1\nana\n6\nbob\noi\n0\n"}[service]
    if service != "login":
        b.errors = {service: english}
    r = subprocess.run([cliente], input=script.encode(), capture_output=True, timeout=30,
                       env=client_env(b.endpoint, f"tcp://127.0.0.1:{free_port()}", 2000))
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert f"Erro: {portuguese}" in out, out
    if "something new" not in english:
        assert english not in out, out


def test_a_terminal_line_may_be_as_long_as_the_protocol_allows(cliente, terminals, stub):
    """A terminal in its normal mode cuts lines at 4095 bytes; the client edits lines itself
    so that 65,536 characters get through, and Backspace still works."""
    b = stub(users=["ana"], channels=["geral"])
    t = terminals([cliente], client_env(b.endpoint, f"tcp://127.0.0.1:{free_port()}", 2000),
                  canonical=True)
    t.expect("Opcao: ")
    t.lines("1", "ana")
    t.expect("Login OK: ana")
    longest = "ç" * 65_536
    t.lines("5", "geral", longest)
    t.expect("Publicado em geral", timeout=30)
    t.lines("5", "geral")
    t.expect("Mensagem: ")
    t.send("abx\x7fc\x1b[Dd\n")  # Backspace erases x, the arrow key is ignored
    t.expect("Publicado em geral")
    t.lines("5", "geral")
    t.expect("Mensagem: ")
    t.send("rascunho\x15ok\n")  # Ctrl-U erases the line typed so far
    t.expect("Publicado em geral")
    sent = [r["data"]["message"] for r in b.requests if r["service"] == "publish"]
    assert sent == [longest, "abcd", "ok"]
    t.send(b"\x04")  # Ctrl-D at an empty prompt
    t.expect("Ate logo!")
    assert t.wait_exit() == 0
    # The terminal got its mode back.
    attrs = termios.tcgetattr(t.fd)
    assert attrs[3] & termios.ICANON and attrs[3] & termios.ECHO


def _stops_on_sigterm(t, pid):
    started = time.monotonic()
    os.kill(pid, 15)
    t.expect("Ate logo!", timeout=5)
    assert time.monotonic() - started < 2


def test_sigterm_stops_the_client(cliente, terminals):
    env = client_env(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", 5000)
    t = terminals([cliente], env)
    t.expect("Opcao: ")
    _stops_on_sigterm(t, t.proc.pid)
    assert t.wait_exit() == 0
    # Also in the middle of a request that gets no answer.
    t = terminals([cliente], env)
    t.expect("Opcao: ")
    t.line("2")
    time.sleep(0.3)  # inside the 5 s wait for a reply
    _stops_on_sigterm(t, t.proc.pid)
    assert t.wait_exit() == 0


def test_sigterm_stops_the_client_as_pid_1(cliente, terminals):
    """As in a container without an init: PID 1 ignores signals it has no handler for."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed for this test"
    env = client_env(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", 2000)
    t = terminals([unshare, "--pid", "--fork", cliente], env)
    t.expect("Opcao: ")
    children = Path(f"/proc/{t.proc.pid}/task/{t.proc.pid}/children").read_text().split()
    assert len(children) == 1
    _stops_on_sigterm(t, int(children[0]))
    assert t.wait_exit() == 0
