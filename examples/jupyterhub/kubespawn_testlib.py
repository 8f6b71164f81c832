"""What the Python tests of kubespawn_spawner.py share (not a test module):
a stand-in spawner service on loopback, the objects the hub gives a
spawner, and fakes of what JupyterHub 4, 5 and 6 do differently from the
3.0 installed here (written from their public source: user.py, spawner.py,
handlers/base.py and apihandlers/users.py of each version's tag).
"""

import asyncio
import json
import select
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from inspect import isawaitable
from types import SimpleNamespace

from jupyterhub import orm
from jupyterhub.objects import Server
from jupyterhub.traitlets import Callable
from tornado import gen, web
from traitlets import Dict, Union

import kubespawn_spawner as ks


class Hold:
    """A start answer that streams events (chunked, as the service does)
    and then holds the stream open until released (then sends result, if
    any) or the client goes away."""

    def __init__(self, *events, result=None):
        self.events = list(events)
        self.result = result
        self.release = threading.Event()
        self.streaming = threading.Event()  # the first events were sent
        self.disconnected = threading.Event()


class StandInService:
    """Answers each method with the next of its queued answers (the last
    one repeats), and records the requests: ``requests`` (method, path) in
    order, with ("DISCONNECT", path) when a client leaves a held stream,
    and ``bodies`` (method, path, decoded JSON body)."""

    def __init__(self):
        self.answers = {}
        self.requests = []
        self.bodies = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with stand_in.lock:
                    stand_in.requests.append((self.command, self.path))
                    stand_in.bodies.append((self.command, self.path, body))
                    queue = stand_in.answers.get(self.command) or [(500, {"error": "no answer queued"})]
                    code, answer = queue.pop(0) if len(queue) > 1 else queue[0]
                if isinstance(answer, Hold):
                    self._hold(code, answer)
                    return
                if isinstance(answer, str):  # an event stream
                    data, ctype = answer.encode(), "text/event-stream"
                else:
                    data, ctype = json.dumps(answer).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def _chunk(self, data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _hold(self, code, hold):
                self.send_response(code)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for ev in hold.events:
                    self._chunk(b"event: progress\ndata: " + json.dumps(ev).encode() + b"\n\n")
                hold.streaming.set()
                self.close_connection = True
                while not stand_in.closing.is_set():
                    if hold.release.is_set():
                        if hold.result is not None:
                            self._chunk(b"event: result\ndata: " + json.dumps(hold.result).encode() + b"\n\n")
                        self._chunk(b"")
                        return
                    readable, _, _ = select.select([self.connection], [], [], 0.02)
                    if readable and not self.connection.recv(1):
                        with stand_in.lock:
                            stand_in.requests.append(("DISCONNECT", self.path))
                        hold.disconnected.set()
                        return

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, method, *answers):
        with self.lock:
            self.answers[method] = list(answers)

    def posts(self):
        """The JSON bodies of the POSTs received."""
        with self.lock:
            return [b for m, _, b in self.bodies if m == "POST"]

    def methods(self):
        with self.lock:
            return [m for m, _ in self.requests]

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def result_stream(**result):
    return 'event: progress\ndata: {"progress": 50, "message": "Started"}\n\n' + (
        "event: result\ndata: " + json.dumps(result) + "\n\n"
    )


RUNNING_RESULT = dict(state="running", pod="kubespawn-p", uid="u-1", podIP="10.0.0.7")


def fake_user(name="alice", server_name=""):
    """The parts of JupyterHub's User a spawner reads (get_env, templates)."""
    return SimpleNamespace(name=name, id=7, url=f"/user/{name}/", escaped_name=name)


def fake_hub():
    return SimpleNamespace(
        public_host="", api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/", url="http://127.0.0.1:8081/hub/"
    )


def fake_orm_spawner(name):
    """The hub's database row of a named server (Spawner.name is its name)."""
    return SimpleNamespace(name=name, server=None, user_options=None, state=None)


def give_server(spawner):
    """What the hub gives a spawner it starts, or loads from its database
    at start-up."""
    prefix = f"/user/{spawner.user.name}/" + (f"{spawner.name}/" if spawner.name else "")
    if spawner.orm_spawner is not None:
        spawner.orm_spawner.server = orm.Server(proto="http", ip="127.0.0.1", port=8888, base_url=prefix, cookie_name="c")
    else:
        spawner.server = Server(ip="127.0.0.1", port=8888, base_url=prefix)
    return spawner


# --- JupyterHub 3.0 to 5.0: start_timeout with gen.with_timeout -------------


async def hub_start_before_5_1(spawner, timeout):
    """User.spawn of JupyterHub 3.0 to 5.0: ``gen.with_timeout`` leaves a
    start() that times out running; the hub then calls User.stop, which
    calls stop() when poll() is None."""
    f = asyncio.ensure_future(spawner.start())
    try:
        return await gen.with_timeout(timedelta(seconds=timeout), f)
    except gen.TimeoutError:
        if await spawner.poll() is None:
            await spawner.stop()
        raise


# --- JupyterHub 5.1+: asyncio.wait_for cancels a timed-out start() ---------


async def hub_start_5_1(spawner, timeout):
    """User.spawn of JupyterHub 5.1 and later: ``asyncio.wait_for(f,
    timeout=start_timeout)`` cancels the start() task on timeout (and waits
    for it to end), then User.stop calls stop() when poll() is None."""
    f = asyncio.ensure_future(spawner.start())
    try:
        return await asyncio.wait_for(f, timeout=timeout)
    except asyncio.TimeoutError:
        if await spawner.poll() is None:
            await spawner.stop()
        raise


# --- JupyterHub 5.3+: apply_user_options -------------------------------------


class Hub53Spawner(ks.KubespawnSpawner):
    """KubespawnSpawner on a Spawner base with 5.3's apply_user_options
    trait and the hub's _run_apply_user_options (HTTPError passes through,
    anything else becomes a 400 "Invalid user options")."""

    apply_user_options = Union([Callable(), Dict()], default_value=None, allow_none=True).tag(config=True)

    async def _run_apply_user_options(self, user_options):
        try:
            r = None
            if isinstance(self.apply_user_options, dict):
                for key, attr in self.apply_user_options.items():
                    if key in user_options:
                        setattr(self, attr, user_options[key])
            elif self.apply_user_options:
                r = self.apply_user_options(self, user_options)
            if isawaitable(r):
                await r
        except Exception as e:
            if isinstance(e, web.HTTPError):
                raise
            raise web.HTTPError(400, "Invalid user options")


async def hub_spawn_5_3(spawner, options):
    """User.spawn of 5.3+: user_options set, state cleared, then
    apply_user_options, pre_spawn_hook and start()."""
    spawner.user_options = options
    spawner.clear_state()
    await spawner._run_apply_user_options(spawner.user_options)
    r = spawner.run_pre_spawn_hook()
    if isawaitable(r):
        await r
    return await spawner.start()


# --- JupyterHub 6.0: SpawnException and failure counting ---------------------


class SpawnException6(web.HTTPError):
    """jupyterhub.spawner.SpawnException as 6.0 defines it."""

    def __init__(self, message, *, reason, log_message="", message_html="", status_code=400):
        self.message = message
        self.reason = reason
        self.log_message = log_message or message
        self.message_html = message_html
        self.status_code = status_code
        super().__init__(status_code, message, reason=reason)

    def get_message(self):
        return self.log_message

    def __str__(self):
        return f"{self.status_code} {self.__class__.__name__}(reason={self.reason}): {self.log_message}"


def spawn_status_6_0(exc):
    """6.0's BaseHandler._track_failure_count: "failure" (a rejection, not
    counted toward consecutive_failure_limit) or "error" (counted)."""
    if isinstance(exc, SpawnException6):
        return "failure"
    if isinstance(exc, web.HTTPError) and exc.status_code < 500:
        return "failure"
    return "error"


def user_message(exc):
    """What the hub shows the user for a failed spawn: the progress
    event's "Spawn failed: <message>" (3.0 to 6.0: jupyterhub_message, else
    str(exc))."""
    return getattr(exc, "jupyterhub_message", str(exc))


def server_json_body_6_0(body):
    """6.0's get_server_json_body: the REST body's user_options, which 6.0
    nests under "user_options" (a body without "user_options" and
    "display_name" is itself the user_options, as before 6.0)."""
    if not body:
        return None
    if "display_name" in body:
        body.setdefault("user_options", None)
    if "user_options" not in body:
        return body
    return body["user_options"]
