"""A JupyterHub Spawner backed by kubespawn's spawner service (examples/spawner).

The hub never talks to Kubernetes: it asks the service, which starts one pod per
user with the kubespawn library (a self-healing pod cache that never decides
"this pod does not exist" from the cache alone).

What JupyterHub does with each method, and what this spawner answers (see
README.md beside this file):

- ``start()``: ``POST /users/{key}/server?progress=sse&cancelOnDisconnect=true``.
  The answer is the start's event stream: progress events, then one result.
  Returns ``(pod IP, port)``. The start is bound to this request: if the hub
  process dies, the service cancels the start and deletes its pod.
- ``poll()``: ``GET /users/{key}/server``. ``None`` (running) while this
  spawner's start is in progress, while the pod is starting or running, or
  its state is unknown (service unreachable, slow, 5xx,
  401, ...); an exit status only when the service says the pod is stopped, which
  it does only on the API server's NotFound or for a pod that terminated (and
  that the service deleted before answering). JupyterHub never calls ``stop()``
  after a ``poll()`` that is not ``None``, and at start-up drops any server whose
  ``poll()`` raised or was not ``None``: so ``poll()`` never raises. The exit
  status follows the hub's (``Popen.poll()``'s) convention, as KubeSpawner's
  does: the container's exit code for a pod that terminated (kept for the
  hub's later polls, which find the pod deleted, until the state is cleared);
  ``1`` for a server that ended without ``stop()`` in a way not known (its pod
  gone, or terminated without an exit code); ``0`` for a spawner without a
  server (never started, or stopped).
- ``stop()``: ``DELETE /users/{key}/server`` (always reaches the API server,
  cancels a start in progress), then cancels this spawner's own ``start()`` if
  the hub left it running after a start timeout. It returns only once the pod is
  confirmed gone: ``200``, or after ``202`` (stop-pending: the API server failed
  or was slow, the service owns the cleanup and retries) polls until the API
  server says NotFound. A failed or unreachable DELETE is retried (400, 401 and
  403 raise at once). Past
  ``stop_confirm_timeout`` it raises, saying whether the service owns the
  cleanup: the hub then forgets the server, never believing it stopped.
- ``progress()``: the start's events as ``{"progress", "message"}``.
- ``get_url()``: after a hub restart, the URL from the pod's current IP.

The hub's database keeps nothing of the pod (``get_state()`` adds nothing):
the service finds a user's pod by the user's key. Every spawner of the hub
shares one HTTP client per event loop, closed when the loop ends.

Standard library and what JupyterHub depends on (tornado, traitlets) only.
"""

import asyncio
import json
from urllib.parse import quote

from jupyterhub.spawner import Spawner
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Dict, Float, Integer, List, Unicode, default

__all__ = ["KubespawnSpawner"]

# One HTTP client per running event loop and size, shared by every spawner:
# the default AsyncHTTPClient queues beyond 10 requests, and every start in
# progress holds one. Keyed by the loop itself (a closed loop's id() can be
# reused) and closed with it: a task of the loop holds the client until it
# is cancelled, which JupyterHub's shutdown and asyncio.run() do to every
# task left; it then closes the client and forgets it.
_clients = {}


def _shared_client(max_connections):
    loop = asyncio.get_running_loop()
    key = (loop, max_connections)
    entry = _clients.get(key)
    if entry is None:
        client = AsyncHTTPClient(force_instance=True, max_clients=max_connections)
        # The loop keeps only a weak reference to a task: the entry keeps it.
        entry = _clients[key] = (client, loop.create_task(_close_with_loop(key, client)))
    return entry[0]


async def _close_with_loop(key, client):
    try:
        await asyncio.get_running_loop().create_future()  # until cancelled
    finally:
        _clients.pop(key, None)
        client.close()


class ServiceError(Exception):
    """The spawner service refused or failed a request."""


class KubespawnSpawner(Spawner):
    """Spawner that asks kubespawn's spawner service for one pod per server."""

    service_url = Unicode(
        "http://127.0.0.1:8082",
        help="Base URL of the kubespawn spawner service (examples/spawner).",
    ).tag(config=True)

    token_file = Unicode(
        "",
        help="""File holding the service's bearer token (its --token-file).
        Read once; empty for a service on loopback without a token.""",
    ).tag(config=True)

    image = Unicode(
        "", help="Image of the user's pod; empty for the service's --image."
    ).tag(config=True)

    annotations = Dict(
        {}, help="Annotations added to every user pod."
    ).tag(config=True)

    user_annotation_keys = List(
        Unicode(),
        [],
        help="""Annotation keys users may set through user_options["annotations"]
        (empty: none). The tests use it to pick a pod-simulator scenario; a real
        deployment leaves it empty.""",
    ).tag(config=True)

    request_timeout = Float(
        10, help="Timeout in seconds of poll and get_url requests to the service."
    ).tag(config=True)

    stop_timeout = Float(
        90,
        help="""Timeout in seconds of a stop request: above the service's
        --stop-timeout, which bounds the wait for the pod to be gone.""",
    ).tag(config=True)

    stop_confirm_timeout = Float(
        300,
        help="""How long, in seconds, stop() waits in all for the pod to be
        confirmed gone: failed DELETEs are retried, and a stop the service
        accepted without completing (202 stop-pending: it retries in the
        background) is followed by polls until the API server says NotFound.
        Past it stop() raises (the hub forgets the server; the service still
        owns a pending stop).""",
    ).tag(config=True)

    stop_retry_interval = Float(
        1, help="Seconds between the retries and polls of a stop not yet confirmed."
    ).tag(config=True)

    max_connections = Integer(
        512,
        help="""Connections to the service at once, for the whole hub: each
        start in progress holds one. Keep it above concurrent_spawn_limit.""",
    ).tag(config=True)

    @default("port")
    def _default_port(self):
        return 8888

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._token = None
        self._start_task = None
        self._events = []
        self._events_changed = asyncio.Event()
        self._start_done = True
        # The exit status of this server's pod once it terminated: the
        # service deletes such a pod before it answers, so the hub's next
        # polls find NotFound and must still report it.
        self._exit_status = None

    def clear_state(self):
        super().clear_state()
        self._exit_status = None

    # -- the service -------------------------------------------------------

    @property
    def key(self):
        """The user/session key of the service: the user, or user/server."""
        return self.user.name if not self.name else f"{self.user.name}/{self.name}"

    def _url(self, suffix=""):
        base = self.service_url.rstrip("/")
        return f"{base}/users/{quote(self.key, safe='')}/server{suffix}"

    def _headers(self):
        if self._token is None:
            self._token = ""
            if self.token_file:
                with open(self.token_file) as f:
                    self._token = f.read().strip()
                if not self._token:
                    raise ServiceError(f"token file {self.token_file} is empty")
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        return headers

    def _client(self):
        return _shared_client(self.max_connections)

    async def _call(self, method, suffix="", timeout=None):
        """One request; returns (status, JSON body or {}). Raises on transport
        errors (unreachable, timeout)."""
        req = HTTPRequest(
            self._url(suffix),
            method=method,
            headers=self._headers(),
            request_timeout=timeout or self.request_timeout,
            connect_timeout=min(timeout or self.request_timeout, 10),
        )
        resp = await self._client().fetch(req, raise_error=False)
        if resp.code == 599:
            raise ServiceError(f"{method} {req.url}: {resp.error}")
        try:
            body = json.loads(resp.body or b"{}")
        except ValueError:
            body = {}
        return resp.code, body if isinstance(body, dict) else {}

    # -- start -------------------------------------------------------------

    def _start_body(self):
        body = {}
        if self.image:
            body["image"] = self.image
        annotations = dict(self.annotations)
        asked = (self.user_options or {}).get("annotations") or {}
        for k, v in asked.items():
            if k in self.user_annotation_keys and isinstance(v, str):
                annotations[k] = v
        if annotations:
            body["annotations"] = annotations
        return body

    def _add_event(self, event):
        self._events.append(event)
        changed, self._events_changed = self._events_changed, asyncio.Event()
        changed.set()

    async def start(self):
        self._start_task = asyncio.current_task()
        self._exit_status = None
        self._events = []
        self._start_done = False
        result = {}
        buf = bytearray()

        def on_chunk(chunk):
            buf.extend(chunk)
            while b"\n\n" in buf:
                raw, _, rest = bytes(buf).partition(b"\n\n")
                buf[:] = rest
                name, data = "", ""
                for line in raw.decode("utf-8", "replace").split("\n"):
                    if line.startswith("event: "):
                        name = line[len("event: "):]
                    elif line.startswith("data: "):
                        data += line[len("data: "):]
                if not name or not data:
                    continue  # comments, keep-alives
                try:
                    value = json.loads(data)
                except ValueError:
                    continue
                if name == "progress":
                    self._add_event(value)
                elif name == "result":
                    result.update(value)

        # Longer than the hub's own start_timeout: the hub gives up first and
        # calls stop(), which ends this stream.
        timeout = self.start_timeout + self.stop_timeout + 60
        req = HTTPRequest(
            self._url("?progress=sse&cancelOnDisconnect=true"),
            method="POST",
            headers=self._headers(),
            body=json.dumps(self._start_body()),
            streaming_callback=on_chunk,
            request_timeout=timeout,
            connect_timeout=10,
        )
        try:
            resp = await self._client().fetch(req, raise_error=False)
        finally:
            self._start_done = True
            self._add_event({})  # wakes progress() readers; never yielded
        if resp.code != 200:
            try:
                err = json.loads(bytes(buf) or resp.body or b"{}").get("error", "")
            except ValueError:
                err = ""
            raise ServiceError(f"start of {self.key} refused: HTTP {resp.code} {err or resp.error}")
        if result.get("state") != "running":
            raise ServiceError(
                f"start of {self.key} failed ({result.get('reason', 'no result')}): "
                f"{result.get('error', 'the stream ended without a result')}"
            )
        ip = result.get("podIP")
        if not ip:
            raise ServiceError(f"start of {self.key}: running pod without an IP")
        self.log.info("kubespawn: %s running in pod %s (uid %s)", self.key, result.get("pod", ""), result.get("uid", ""))
        return (ip, self.port)

    async def progress(self):
        i = 0
        while True:
            changed = self._events_changed
            while i < len(self._events):
                ev = self._events[i]
                i += 1
                if ev:
                    yield {"progress": ev.get("progress", 0), "message": ev.get("message", "")}
            if self._start_done:
                return
            await changed.wait()

    # -- poll, stop, url ---------------------------------------------------

    async def poll(self):
        task = self._start_task
        if task is not None and not task.done():
            # JupyterHub's contract: a start not finished polls as running.
            # (Before its pod is created the API server has none: "stopped"
            # would keep the hub from calling stop(), and the start would go
            # on to leave a pod nobody knows.)
            return None
        try:
            code, body = await self._call("GET")
        except Exception as e:  # unknown reads as running: never raise
            self.log.warning("kubespawn: poll of %s: service unreachable (%s); assuming running", self.key, e)
            return None
        state = body.get("state")
        if code == 404 and state == "stopped" and body.get("reason") == "NotFound":
            if body.get("serviceState") in ("starting", "stopping", "stop-pending"):
                return None  # a start or stop in progress in the service
            # The API server said so.
            if self._exit_status is not None:
                return self._exit_status  # the pod terminated, then was deleted
            if self.server is None:
                return 0  # never started, or stopped: "not running"
            return 1  # ended without stop(), in a way not known
        if code == 200 and state == "stopped":
            # Terminated on its own; the service deleted the pod before saying so.
            exit_code = body.get("exitCode")
            known = isinstance(exit_code, int) and not isinstance(exit_code, bool)
            self._exit_status = exit_code if known else 1
            return self._exit_status
        if code == 200:
            return None  # running, pending, unknown
        self.log.warning(
            "kubespawn: poll of %s: HTTP %s %s; assuming running", self.key, code, body.get("error", "")
        )
        return None

    def _cancel_own_start(self):
        task, self._start_task = self._start_task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            # A timed-out start is not cancelled by the hub: cancel it here
            # (the DELETE already cancelled it on the service's side).
            task.cancel()

    async def stop(self, now=False):
        # JupyterHub forgets the server once stop() returns, and also when it
        # raises: so return only once the pod is confirmed gone, and raise
        # with a message that says who owns the pod then.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_confirm_timeout
        pending = False  # the service answered 202: it owns the cleanup
        first, last = True, ""
        while True:
            try:
                if pending:
                    code, body = await self._call("GET")
                else:
                    code, body = await self._call("DELETE", timeout=self.stop_timeout)
            except Exception as e:  # unreachable, timed out: try again
                code, body = 0, {}
                last = str(e)
            if first:
                first = False
                self._cancel_own_start()
            if code:
                last = f"HTTP {code} {body.get('error', '')}".strip()
            if not pending:
                if code == 200:
                    break  # the API server confirmed the pod gone
                if code == 202:
                    pending = True
                    self.log.warning(
                        "kubespawn: stop of %s not complete yet (%s): the service retries; waiting",
                        self.key, body.get("error", ""),
                    )
                elif code in (400, 401, 403):
                    self.log.error("kubespawn: stop of %s refused: %s", self.key, last)
                    raise ServiceError(f"stop of {self.key} refused: {last}")
            elif (code == 404 and body.get("reason") == "NotFound") or (code == 200 and body.get("deleted")):
                break  # the API server said NotFound (or the poll deleted it)
            elif code == 200 and body.get("serviceState") not in ("stop-pending", "stopping"):
                # The service no longer holds the stop (it restarted before
                # its DELETE reached the API server): send it again.
                pending = False
            if loop.time() >= deadline:
                if pending:
                    msg = (
                        f"stop of {self.key} not confirmed within {self.stop_confirm_timeout:g}s: "
                        f"the pod still exists ({last}); the spawner service keeps deleting it "
                        "and will finish the cleanup"
                    )
                else:
                    msg = (
                        f"stop of {self.key} not confirmed: the spawner service did not accept it "
                        f"within {self.stop_confirm_timeout:g}s ({last}); the pod may still be running"
                    )
                # The hub logs nothing when stop() raises: say it here.
                self.log.error("kubespawn: %s", msg)
                raise ServiceError(msg)
            await asyncio.sleep(min(self.stop_retry_interval, max(deadline - loop.time(), 0)))
        self.log.info("kubespawn: stop of %s confirmed: the pod is gone", self.key)

    async def get_url(self):
        url = self.server.url if self.server else ""
        try:
            code, body = await self._call("GET")
        except Exception as e:
            self.log.warning("kubespawn: get_url of %s: %s", self.key, e)
            return url
        ip = body.get("podIP")
        if code != 200 or not ip or body.get("state") != "running" or not self.server:
            return url
        host = f"[{ip}]" if ":" in ip else ip
        return f"{self.server.proto}://{host}:{self.port}{self.server.base_url}"
