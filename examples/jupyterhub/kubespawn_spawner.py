"""A JupyterHub Spawner backed by kubespawn's spawner service (examples/spawner).

The hub never talks to Kubernetes: it decides the user's pod, as KubeSpawner
7.1 does (its configuration names: see README.md beside this file), and asks
the service, which runs it with the kubespawn library (a self-healing pod
cache that never decides "this pod does not exist" from the cache alone) and
keeps the last word on what only it may decide.

The wire contract
=================

``POST /users/{key}/server?progress=sse&cancelOnDisconnect=true`` starts a
server. ``{key}`` is the user name, or ``user/server`` for a named server,
URL-escaped. The body::

    {"pod": {"metadata": {"labels": {...}, "annotations": {...}},
             "spec": <a core/v1 PodSpec, JSON as the API server's, camelCase>},
     "claims": [<core/v1 PersistentVolumeClaim: metadata.name, metadata.labels, spec>],
     "services": [<core/v1 Service: metadata.name, spec.ports; no selector>],
     "annotations": {...}}

- The service decides the namespace, the pod's name, its own labels and
  annotations (``app.kubernetes.io/managed-by``, ``kubespawn.io/*``: the
  class leaves them out), its instance, and the owners of the companions:
  it ensures the claims before it creates the pod (they outlive pods), and
  creates each Service once the pod exists, owned by it and selecting it.
- The pod's first container is ``notebook``, the single-user server, with
  the hub's environment (``get_env()``: its token, service URL and prefix,
  OAuth), ``args`` = ``cmd`` + ``get_args()`` and port ``notebook-port`` =
  ``port``; the hub reaches it at the pod IP the start's result gives (or
  through the Service, with ``services_enabled``: at ``dns_name_template``,
  by default its cluster DNS name, or its ClusterIP with ``{cluster_ip}``).
- ``claims`` and ``services`` are always present (maybe empty).
- ``annotations`` (legacy) is present only when a user chose annotations
  allowed by ``user_annotation_keys`` (the tests pick pod-simulator
  scenarios with them); they are also in ``pod.metadata.annotations``. The
  old body ``{"image", "annotations"}`` stays accepted by the service.
- The service enforces its policy (by default no ``hostPath``, no
  ``hostNetwork``/``hostPID``/``hostIPC``, no privileged container) before
  it creates anything: a violation is ``400`` or ``403`` with
  ``{"error": "...", "field": "spec.volumes[0].hostPath"}``.
- Otherwise the answer is the start's event stream (Server-Sent Events):
  ``progress`` events ``{"progress", "message"}``, then one ``result``:
  ``{"state": "running", "podIP", "pod", "uid", "namespace", "objects"}``
  (``objects``: each Service ``{"kind": "Service", "name", "uid",
  "clusterIP", "dnsName"}``, the ClusterIP read back from the API server;
  ``dns_name_template`` may use it as ``{cluster_ip}``), or
  ``{"state": "failed", "reason", "error", "status", "field"}`` with reasons
  ``image_pull``, ``invalid_image``, ``rejected`` (the API server refused
  the pod: Pod Security Admission), ``unschedulable``, ``claim_conflict``,
  ``claim_incompatible``, ``claim_terminating``, ``claim_failed``,
  ``owned_object_failed``, ``owned_object_conflict``, ``timeout``, ... The
  start is bound to the request: when the connection closes (the hub
  process died, or the hub cancelled the start) the service cancels it and
  deletes its pod.

``GET /users/{key}/server`` polls, ``DELETE /users/{key}/server`` stops
(``200`` gone, ``202`` stop-pending: the service owns the cleanup), ``DELETE
/users/{key}/claims`` deletes the key's claims (``delete_forever``): ``200
{"state": "deleted", "claims": [{"kind", "name", "uid"}]}``, ``409`` while the key's pod exists.

What JupyterHub does with each method, and what this spawner answers
=====================================================================

- ``start()``: builds the start body (``get_start_body()``: the profile
  chosen, then ``get_pod_manifest()``, ``modify_pod_hook``, the claim and
  the Service) and streams the start. Returns the pod's address. Bad input
  (an unknown profile, a choice outside a profile's, what the service's
  policy forbids) and the user's failures (a bad image, a pod the cluster
  refused, no room, a claim in the way) raise ``SpawnException`` (JupyterHub
  6.0; before, an ``HTTPError`` of the same interface) whose message is one
  sentence for the user (``jupyterhub_message``): 6.0 does not count them
  toward ``consecutive_failure_limit``; errors of the system (the service
  unreachable, the API server failing) raise other exceptions, which it
  counts. Nothing is created before the service accepts the start.
  A start that times out in the hub is left running by JupyterHub 3.0 to
  5.0 (``gen.with_timeout``) and cancelled by 5.1+ (``asyncio.wait_for``):
  cancelled, it closes its stream at once (the service then cancels the
  start and deletes its pod), and the hub's ``stop()`` follows either way.
- JupyterHub 5.3+ call ``apply_user_options`` before ``start()``: unless
  configured otherwise, the class's hook applies the profile there (bad
  input is refused before anything starts; ``pre_spawn_hook`` sees the
  profile's settings). 6.0 nests the REST body's options under
  ``user_options``; a 6.0-style body sent to an older hub is understood too.
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
  cancels a start in progress), then cancels this spawner's own ``start()``
  if it still runs (JupyterHub before 5.1 leaves a timed-out start running).
  It returns only once the pod is
  confirmed gone: ``200``, or after ``202`` (stop-pending: the API server failed
  or was slow, the service owns the cleanup and retries) polls until the API
  server says NotFound. A failed or unreachable DELETE is retried (400, 401 and
  403 raise at once). Past
  ``stop_confirm_timeout`` it raises, saying whether the service owns the
  cleanup: the hub then forgets the server, never believing it stopped.
- ``progress()``: the start's events as ``{"progress", "message"}``.
- ``get_url()``: after a hub restart, the URL from the pod's current IP.
- ``delete_forever()``: the hub calls it, without arguments, on a stopped
  spawner when its user is deleted (every server) or a named server is
  removed, and forgets the server whatever it does: ``DELETE
  /users/{key}/claims``, retried while the pod still exists or the service
  fails, up to ``stop_confirm_timeout``; then it raises saying what is left.
- ``rename()`` (6.0): refused for a server with storage (its claims are
  kept under its key).

The hub's database keeps nothing of the pod (``get_state()`` holds only the
claim's name, with ``remember_pvc_name``): the service finds a user's pod
by the user's key. Every spawner of the hub shares one HTTP client per
event loop, closed when the loop ends; a start's stream has a connection
of its own.

Standard library and what JupyterHub depends on (tornado, traitlets, jinja2)
only. Configuration under ``c.KubeSpawner`` applies to this class too, so
that a zero-to-jupyterhub configuration carries over.
"""

import asyncio
import copy
import hashlib
import json
import re
import ssl
import string
import unicodedata
from decimal import Decimal
from inspect import isawaitable
from urllib.parse import quote, urlsplit

import jinja2
import jupyterhub
import jupyterhub.spawner
from jupyterhub.spawner import Spawner
from jupyterhub.traitlets import Callable
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Bool, Dict, Enum, Float, Integer, List, TraitError, Unicode, Union, default

__all__ = ["KubespawnSpawner", "ServiceError", "SpawnRefused"]

# One HTTP client per running event loop and size, shared by every spawner:
# the default AsyncHTTPClient queues beyond 10 requests. Keyed by the loop
# itself (a closed loop's id() can be reused) and closed with it: a task of
# the loop holds the client until it is cancelled, which JupyterHub's
# shutdown and asyncio.run() do to every task left; it then closes the
# client and forgets it.
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


# --- errors -------------------------------------------------------------------
#
# JupyterHub shows the user ``jupyterhub_message`` (else str(exc)) on the
# spawn-pending page and in the progress API ("Spawn failed: ..."), and the
# form re-rendered after a failed options_from_form shows str(exc) (3.0) or
# jupyterhub_message (6.0). 5.3+'s apply_user_options lets HTTPError through
# and turns anything else into "Invalid user options". 6.0 counts a failed
# spawn toward consecutive_failure_limit unless it is a SpawnException or an
# HTTPError below 500. So: every exception here is an HTTPError whose str()
# is the user's sentence; rejections are 4xx (SpawnException where it
# exists), errors 5xx; the detail goes to the hub's log.


class _KubespawnError(web.HTTPError):
    def __init__(self, message, *, reason, status_code, log_message=""):
        self.message = message
        self.jupyterhub_message = message
        self.detail = log_message or message  # for the class's own log lines
        # tornado keeps log_message %-escaped (its users format it with args).
        super().__init__(status_code, log_message or message, reason=reason)

    def __str__(self):
        return self.message


class SpawnRefused(_KubespawnError):
    """A spawn refused for what the user asked or caused (JupyterHub 6.0's
    SpawnException interface, for hubs without it)."""

    def __init__(self, message, *, reason, log_message="", message_html="", status_code=400):
        self.message_html = message_html
        super().__init__(message, reason=reason, status_code=status_code, log_message=log_message)


class ServiceError(_KubespawnError):
    """The spawner service failed, could not be reached, or this hub is
    misconfigured: an error of the system, not of the user."""

    def __init__(self, message, *, reason="error", log_message="", status_code=503):
        super().__init__(message, reason=reason, status_code=status_code, log_message=log_message)


def _refused(message, *, reason, status_code=400, log_message=""):
    # The sentence is also the log message: JupyterHub 3.0 to 5.x answer a
    # REST spawn that failed at once with log_message (the class logs the
    # detail itself). Looked up at each refusal: 6.0's own class where it
    # exists.
    cls = getattr(jupyterhub.spawner, "SpawnException", None)
    if cls is None:
        return SpawnRefused(message, reason=reason, status_code=status_code, log_message=log_message)
    e = cls(message, reason=reason, status_code=status_code, log_message=log_message)
    e.jupyterhub_message = message  # 6.0's str() is not for users
    return e


def _detail(e):
    """What to log of an exception: its detail, not the user's sentence."""
    return e.detail if isinstance(e, _KubespawnError) else str(e)


def _quoted(value, limit=60):
    """A user's value in a sentence: quoted, cut when long."""
    text = str(value)
    return '"' + (text if len(text) <= limit else text[: limit - 1] + "…") + '"'


def _sentence(phrase):
    return f"Your server could not start: {phrase.rstrip('.')}."


# Start failures the service reports: a rejection (the user's input or what
# it caused: not counted by 6.0) or not, and what to tell the user.
_REJECTED, _ERROR = True, False
_FAILURES = {
    "invalid_request": (_REJECTED, "the spawner service refused its configuration ({error})"),
    "already_running": (_REJECTED, "a server of yours is still running or stopping; try again in a minute"),
    "name_conflict": (_REJECTED, "a pod of its name exists that is not yours"),
    "image_pull": (_REJECTED, 'its image "{image}" could not be pulled'),
    "invalid_image": (_REJECTED, 'its image name "{image}" is not valid'),
    "create_container_config": (_REJECTED, "its container refers to what does not exist (a Secret or ConfigMap?)"),
    "crash_loop": (_REJECTED, "its server keeps exiting"),
    "pod_failed": (_REJECTED, "its pod failed before the server was ready"),
    "rejected": (_REJECTED, "the cluster refused its pod ({error})"),
    "unschedulable": (_REJECTED, "no node can run it now (not enough CPU or memory, or none matches its placement)"),
    "claim_conflict": (_REJECTED, "its storage volume belongs to something else"),
    "claim_incompatible": (
        _REJECTED, "its storage volume does not match this configuration (size, storage class or access modes)"
    ),
    "claim_terminating": (_REJECTED, "its storage volume is being deleted; try again in a minute"),
    "owned_object_conflict": (_REJECTED, "its Service's name is taken by another object"),
    "claim_failed": (_ERROR, "its storage volume could not be created"),
    "owned_object_failed": (_ERROR, "its Service could not be created"),
    "create_failed": (_ERROR, "the cluster could not create its pod"),
    "deleted_externally": (_ERROR, "its pod was deleted while it started"),
    "cancelled": (_ERROR, "its start was cancelled"),
    "stopped": (_ERROR, "it was stopped while it started"),
    "timeout": (_ERROR, "it did not become ready in time"),
}


# --- names (KubeSpawner 7's "safe" and "escape" schemes, same values) --------

_LOWER = tuple(string.ascii_lowercase)
_LOWER_DIGITS = tuple(string.ascii_lowercase + string.digits)
_ALNUM = tuple(string.ascii_letters + string.digits)
_OBJECT_CHARS = re.compile(r"^[a-z0-9-]+$")
_LABEL_CHARS = re.compile(r"^[a-z0-9._-]+$", re.IGNORECASE)
_NOT_LOWER_ALNUM = re.compile(r"[^a-z0-9]+")


def _is_object_name(s):
    return 0 < len(s) <= 63 and s.startswith(_LOWER) and s.endswith(_LOWER_DIGITS) and bool(_OBJECT_CHARS.match(s))


def _is_label_value(s):
    return not s or (len(s) <= 63 and s.startswith(_ALNUM) and s.endswith(_ALNUM) and bool(_LABEL_CHARS.match(s)))


def _readable(name, max_length):
    """Lower-case letters, digits and single '-', starting with a letter,
    at most max_length, never empty."""
    s = _NOT_LOWER_ALNUM.sub("-", name.lower()).lstrip("-")[:max_length].rstrip("-")
    if s and not s.startswith(_LOWER):
        s = "x-" + s[: max_length - 2]
    return s or "x"


def _hashed(name, max_length=32):
    digest = hashlib.sha256(name.encode("utf8")).hexdigest()[:8]
    return f"{_readable(name, max_length - 11)}---{digest}"


def _safe_slug(name, is_valid=_is_object_name, max_length=None):
    """name itself when valid (and short enough), else a readable part and
    a hash: distinct names never share a slug."""
    if "--" not in name and is_valid(name) and (max_length is None or len(name) <= max_length):
        return name
    return _hashed(name, max_length or 32)


def _multi_slug(names, max_length=48):
    h = hashlib.sha256()
    for i, n in enumerate(names):
        if i:
            h.update(b"\xff")  # never in UTF-8: no two lists hash alike
        h.update(n.encode("utf8"))
    per = (max_length - 9) // len(names) - 2
    return "--".join(_readable(n, per) for n in names) + "---" + h.hexdigest()[:8]


def _escape_slug(name):
    """KubeSpawner 6's scheme: every character but a-z0-9 as '-' and the
    hex of its UTF-8 bytes, lower-cased."""
    keep = set(string.ascii_lowercase + string.digits)
    return "".join(c if c in keep else "".join("-%X" % b for b in c.encode("utf8")) for c in name).lower()


def _slugify(text):
    """A profile's slug from its display name, when it has none."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _template_names(template):
    """The field names template uses ({name} → name)."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError:
        return set()


def _expand(template, fields):
    """template with the {fields} it names filled in; anything else (other
    placeholders, shell's ${VAR}, malformed braces) is left as it is."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return template
    out = []
    for literal, field, spec, conv in parts:
        out.append(literal)
        if field is None:
            continue
        if field in fields and not spec and not conv:
            out.append(str(fields[field]))
        else:
            out.append("{" + field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


# --- Kubernetes objects as JSON -------------------------------------------------

_CAMEL_EXCEPTIONS = {"host_ipc": "hostIPC", "host_pid": "hostPID"}


def _camel(key):
    """Top-level snake_case keys (the Python client's names, which
    KubeSpawner accepts in extra_pod_config and the like) as the API's."""
    if "_" not in key:
        return key
    if key in _CAMEL_EXCEPTIONS:
        return _CAMEL_EXCEPTIONS[key]
    first, *rest = key.split("_")
    return first + "".join(p[:1].upper() + p[1:] for p in rest)


def _camel_keys(obj):
    return {_camel(k): v for k, v in obj.items()} if isinstance(obj, dict) else obj


def _sorted_values(src):
    """KubeSpawner's list-or-dict traits: a dict's values sorted by key."""
    if isinstance(src, dict):
        return [src[k] for k in sorted(src)]
    return list(src or [])


def _quantity(v):
    """A resource quantity as the API's string: 0.5 -> "0.5", 4.0 -> "4",
    bytes as an integer."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format(Decimal(repr(v)).normalize(), "f")
    return v


def _recursive_update(target, new):
    """KubeSpawner's override of a dict trait: merged, None removes a key."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _recursive_update(target[k], v)
        elif isinstance(v, dict):
            target[k] = {}
            _recursive_update(target[k], v)
        elif v is None:
            target.pop(k, None)
        else:
            target[k] = v


def _format_value(obj, value):
    """An unlisted choice's override with {value} replaced (recursively;
    other placeholders are left for the templates)."""
    if isinstance(obj, str):
        return _expand(obj, {"value": value})
    if isinstance(obj, list):
        return [_format_value(i, value) for i in obj]
    if isinstance(obj, dict):
        return {_format_value(k, value): _format_value(v, value) for k, v in obj.items()}
    return obj


_ENV_REF = re.compile(r"\$\(([^)]+)\)")


def _sorted_env(env):
    """EnvVars sorted by name, except that one using $(OTHER) comes after
    OTHER where it can (circular references keep name order)."""
    entries = {}
    for key, value in env.items():
        if isinstance(value, dict):
            e = {"name": key, **value}
        else:
            e = {"name": key, "value": value if isinstance(value, str) else str(value)}
        deps = set(_ENV_REF.findall(e.get("value") or "")) - {e["name"]}
        entries[key] = (deps, e)
    out, done = [], set()
    while entries:
        ready = sorted(k for k, (deps, _) in entries.items() if deps <= done)
        if not ready:
            ready = sorted(entries)
        for k in ready:
            out.append(entries.pop(k)[1])
            done.add(k)
    return out


# Labels and annotations the service sets and reserves.
def _reserved(key):
    return key == "app.kubernetes.io/managed-by" or key.startswith("kubespawn.io/")


async def _resolve(value, spawner):
    """A trait that may be a callable of the spawner (maybe async)."""
    if callable(value):
        value = value(spawner)
        if isawaitable(value):
            value = await value
    return value


# --- the profile form -------------------------------------------------------------

_FORM_CSS = """
#kubespawner-profiles-list .profile { display: flex; gap: 1em; padding: 0.6em 0; border-bottom: 1px solid #ddd; }
#kubespawner-profiles-list .profile h3 { margin: 0 0 0.3em; font-size: 1.2em; }
#kubespawner-profiles-list .option { margin: 0.3em 0; }
#kubespawner-profiles-list .hidden { display: none; }
"""

# Field names as KubeSpawner's form: profile, profile-option-{slug}--{option},
# profile-option-{slug}--{option}--unlisted-choice. Profiles' texts are the
# operator's (HTML allowed, as KubeSpawner's); the user's options appear
# only as selections.
_FORM_HTML = """<style>{% include 'style.css' %}</style>
<div class="form-group" id="kubespawner-profiles-list">
{%- for profile in profile_list %}
  <label for="profile-item-{{ profile.slug }}" class="profile js-profile-label">
    <div class="radio">
      <input type="radio" name="profile" id="profile-item-{{ profile.slug }}" value="{{ profile.slug }}"
        {%- if profile.slug == selected_profile %} checked{% endif %}>
    </div>
    <div>
      <h3>{{ profile.display_name }}</h3>
      {%- if profile.description %}<p>{{ profile.description }}</p>{% endif %}
      {%- for key, option in (profile.profile_options or {}).items() %}
      {%- set field = "profile-option-" ~ profile.slug ~ "--" ~ key %}
      {%- set picked = selected_choices.get(profile.slug, {}).get(key) %}
      <div class="js-options-container">
        <div class="option">
          <label for="{{ field }}">{{ option.display_name }}</label>
          <select name="{{ field }}" id="{{ field }}" class="form-control js-profile-option-select">
          {%- for ckey, choice in (option.choices or {}).items() %}
            <option value="{{ ckey }}"{% if ckey == picked %} selected{% endif %}>{{ choice.display_name }}</option>
          {%- endfor %}
          {%- if option.unlisted_choice.enabled %}
            <option value="unlisted-choice"{% if picked == "unlisted-choice" %} selected{% endif %}>
              {{- option.unlisted_choice.display_name_in_choices }}</option>
          {%- endif %}
          </select>
        </div>
        {%- if option.unlisted_choice.enabled %}
        <div class="option js-other-input-container{% if picked != 'unlisted-choice' %} hidden{% endif %}">
          <label for="{{ field }}--unlisted-choice">{{ option.unlisted_choice.display_name }}</label>
          <input name="{{ field }}--unlisted-choice" id="{{ field }}--unlisted-choice"
            class="form-control js-other-input"
            {%- if option.unlisted_choice.validation_regex %}
            pattern="{{ option.unlisted_choice.validation_regex|e }}"{% endif %}
            title="{{ (option.unlisted_choice.validation_message or '')|e }}"
            value="{{ (unlisted_values.get(profile.slug, {}).get(key) or '')|e }}">
        </div>
        {%- endif %}
      </div>
      {%- endfor %}
    </div>
  </label>
{%- endfor %}
</div>
<script>
  document.querySelectorAll("#kubespawner-profiles-list .js-profile-option-select").forEach(function (select) {
    var container = select.closest(".js-options-container");
    var other = container.querySelector(".js-other-input-container");
    select.addEventListener("focus", function () {
      select.closest(".js-profile-label").querySelector("input[type=radio]").checked = true;
    });
    select.addEventListener("change", function () {
      if (other) other.classList.toggle("hidden", select.value !== "unlisted-choice");
    });
  });
</script>
"""


# --- the class --------------------------------------------------------------------------------


class _KubeSpawnerSection(Spawner):
    """Only a name: traitlets applies the configuration of every class
    name in a class's ancestry, so c.KubeSpawner.* (zero-to-jupyterhub's
    hub writes its configuration there) applies to KubespawnSpawner, and
    c.KubespawnSpawner.* over it."""

    async def start(self):
        raise NotImplementedError

    async def stop(self, now=False):
        raise NotImplementedError

    async def poll(self):
        raise NotImplementedError


_KubeSpawnerSection.__name__ = _KubeSpawnerSection.__qualname__ = "KubeSpawner"


def _list_or_dict(help_text):
    return Union([List(), Dict()], help=help_text).tag(config=True)


def _int_or_callable(help_text):
    return Union([Integer(), Callable()], default_value=None, allow_none=True, help=help_text).tag(config=True)


class KubespawnSpawner(_KubeSpawnerSection):
    """Spawner that asks kubespawn's spawner service for one pod per server."""

    # -- the service --------------------------------------------------------

    service_url = Unicode(
        "http://127.0.0.1:8082",
        help="Base URL of the kubespawn spawner service (examples/spawner).",
    ).tag(config=True)

    token_file = Unicode(
        "",
        help="""File holding the service's bearer token (its --token-file).
        Read once; empty for a service on loopback without a token.""",
    ).tag(config=True)

    user_annotation_keys = List(
        Unicode(),
        [],
        help="""Annotation keys users may set through user_options["annotations"]
        (empty: none). The tests use it to pick a pod-simulator scenario; a real
        deployment leaves it empty.""",
    ).tag(config=True)

    annotations = Dict(
        {}, help="Deprecated: use extra_annotations (applied before it)."
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
        owns a pending stop). delete_forever() waits as long for the claims.""",
    ).tag(config=True)

    stop_retry_interval = Float(
        1, help="Seconds between the retries and polls of a stop not yet confirmed."
    ).tag(config=True)

    max_connections = Integer(
        512,
        help="""Connections to the service at once for polls, stops and
        URLs, for the whole hub (a start's stream has a connection of its
        own).""",
    ).tag(config=True)

    # -- KubeSpawner's names: the server ----------------------------------

    @default("port")
    def _default_port(self):
        return 8888

    @default("env_keep")
    def _default_env_keep(self):
        return []  # the hub's environment is not the pod's

    ip = Unicode(
        "0.0.0.0",
        help="""The address the single-user server listens on in its pod
        (JUPYTERHUB_SERVICE_URL): every address, as KubeSpawner's.""",
    ).tag(config=True)

    image = Unicode(
        "quay.io/jupyterhub/singleuser:latest",
        help="Image of the single-user server's container (KubeSpawner's default).",
    ).tag(config=True)

    image_pull_policy = Unicode(
        None, allow_none=True, help="imagePullPolicy of the container (None: the cluster's default)."
    ).tag(config=True)

    image_pull_secrets = Union(
        [List(), Unicode()],
        help="Secrets to pull images with: names, or {\"name\": ...} (a single name is deprecated).",
    ).tag(config=True)

    working_dir = Unicode(
        None, allow_none=True, help="workingDir of the container (templates expanded); None: the image's."
    ).tag(config=True)

    service_account = Unicode(
        None, allow_none=True, help="serviceAccountName of the pod (templates expanded)."
    ).tag(config=True)

    automount_service_account_token = Bool(
        None,
        allow_none=True,
        help="""automountServiceAccountToken of the pod; None: mounted only
        with a service_account of its own.""",
    ).tag(config=True)

    extra_resource_guarantees = Dict(help="More resource requests, e.g. {\"nvidia.com/gpu\": \"1\"}.").tag(config=True)
    extra_resource_limits = Dict(help="More resource limits, e.g. {\"nvidia.com/gpu\": \"1\"}.").tag(config=True)

    uid = _int_or_callable("runAsUser of the container (or a callable of the spawner); None: the image's.")
    gid = _int_or_callable("runAsGroup of the container (or a callable of the spawner); None: the image's.")
    fs_gid = _int_or_callable("fsGroup of the pod (or a callable of the spawner).")
    supplemental_gids = Union(
        [List(), Callable()], help="supplementalGroups of the pod (or a callable of the spawner)."
    ).tag(config=True)
    privileged = Bool(False, help="A privileged container (the service's policy refuses it by default).").tag(
        config=True
    )
    allow_privilege_escalation = Bool(
        False, allow_none=True, help="allowPrivilegeEscalation of the container; None: the cluster's default."
    ).tag(config=True)
    container_security_context = Union(
        [Dict(), Callable()],
        help="securityContext of the container (camelCase), over uid/gid/privileged/allow_privilege_escalation.",
    ).tag(config=True)
    pod_security_context = Union(
        [Dict(), Callable()], help="securityContext of the pod (camelCase), over fs_gid/supplemental_gids."
    ).tag(config=True)

    node_selector = Dict(help="nodeSelector of the pod.").tag(config=True)
    tolerations = _list_or_dict("Tolerations of the pod (a dict's values sorted by key).")
    node_affinity_required = _list_or_dict("NodeSelectorTerms the pod's node must match.")
    node_affinity_preferred = _list_or_dict("PreferredSchedulingTerms of the pod.")
    pod_affinity_required = _list_or_dict("PodAffinityTerms of the pod.")
    pod_affinity_preferred = _list_or_dict("WeightedPodAffinityTerms of the pod.")
    pod_anti_affinity_required = _list_or_dict("Anti-affinity PodAffinityTerms of the pod.")
    pod_anti_affinity_preferred = _list_or_dict("Anti-affinity WeightedPodAffinityTerms of the pod.")
    scheduler_name = Unicode(None, allow_none=True, help="schedulerName of the pod.").tag(config=True)
    priority_class_name = Unicode(help="priorityClassName of the pod.").tag(config=True)

    volumes = _list_or_dict("Volumes of the pod (templates expanded).")
    volume_mounts = _list_or_dict("volumeMounts of the container (templates expanded).")
    lifecycle_hooks = Dict(help="lifecycle of the container (postStart, preStop).").tag(config=True)
    init_containers = _list_or_dict("initContainers of the pod (templates expanded).")
    extra_containers = _list_or_dict("Containers after the notebook's (templates expanded).")
    extra_container_config = Dict(
        help="Fields merged into the notebook container (replacing), e.g. envFrom."
    ).tag(config=True)
    extra_pod_config = Dict(help="Fields merged into the pod spec (replacing; templates expanded).").tag(config=True)

    modify_pod_hook = Callable(
        None,
        allow_none=True,
        help="""Callable (spawner, pod) -> pod, maybe async, to change the pod
        before it is sent. The pod is a dict in the API's JSON form
        ({"metadata": {"labels", "annotations"}, "spec"}), not a kubernetes
        client's V1Pod as KubeSpawner's; returning None keeps the pod as
        changed in place.""",
    ).tag(config=True)

    # -- labels, names ---------------------------------------------------------

    common_labels = Dict(
        {"app.kubernetes.io/name": "jupyterhub", "app": "jupyterhub", "heritage": "jupyterhub"},
        help="""Labels of the pods and claims. KubeSpawner's default, without
        app.kubernetes.io/managed-by, which the service sets (kubespawn).""",
    ).tag(config=True)
    component_label = Unicode(
        "singleuser-server", help="The component and app.kubernetes.io/component labels."
    ).tag(config=True)
    extra_labels = Dict(help="More labels of the pod (templates expanded).").tag(config=True)
    extra_annotations = Dict(help="More annotations of the pod (templates expanded).").tag(config=True)

    slug_scheme = Enum(
        ["safe", "escape"],
        default_value="safe",
        help="""How names and labels are made of user and server names:
        KubeSpawner 7's "safe" (valid, readable, a hash when needed) or
        KubeSpawner 6's "escape".""",
    ).tag(config=True)

    pod_name_template = Unicode(
        "jupyter-{user_server}",
        help="""The Service's name (services_enabled) and the {pod_name}
        template field. The pod itself is named by the spawner service.""",
    ).tag(config=True)

    dns_name_template = Unicode(
        "{name}.{namespace}.svc.cluster.local",
        help="""The host the hub connects to with services_enabled: {name} the
        Service's, {namespace} the one the service reports, {cluster_ip} the
        Service's ClusterIP as the service read it back from the API server
        (bracketed if IPv6). "{cluster_ip}" alone skips DNS: for a hub that
        cannot resolve cluster DNS names (outside the cluster, or a cluster
        without DNS for it) but can reach ClusterIPs. A start whose answer has
        no ClusterIP for the Service fails then; the hub stops the server.""",
    ).tag(config=True)

    services_enabled = Bool(
        False,
        help="""A Service per pod (port = port), owned by the pod; the hub
        connects to the server through it.""",
    ).tag(config=True)

    # -- storage -------------------------------------------------------------------

    storage_pvc_ensure = Bool(
        False,
        help="""A claim per server, ensured by the service before the pod (it
        outlives pods; delete_forever deletes it).""",
    ).tag(config=True)
    pvc_name_template = Unicode("claim-{user_server}", help="The claim's name (templates expanded).").tag(config=True)
    storage_capacity = Unicode(None, allow_none=True, help="The claim's storage request, e.g. 10Gi.").tag(config=True)
    storage_class = Unicode(
        None, allow_none=True, help="The claim's storageClassName (\"\": none; None: the cluster's default)."
    ).tag(config=True)
    storage_access_modes = List(["ReadWriteOnce"], help="The claim's access modes.").tag(config=True)
    storage_selector = Dict(help="The claim's selector (templates expanded).").tag(config=True)
    storage_extra_labels = Dict(help="More labels of the claim (templates expanded).").tag(config=True)
    remember_pvc_name = Bool(
        True, help="Keep the claim's name in the hub's state once used: a changed template keeps the data."
    ).tag(config=True)
    delete_pvc = Bool(True, help="delete_forever deletes the server's claims.").tag(config=True)

    # -- profiles ------------------------------------------------------------------

    profile_list = Union(
        [List(trait=Dict()), Dict(), Callable()],
        help="""Profiles users choose from (KubeSpawner's: display_name, slug,
        description, default, kubespawner_override, profile_options with
        choices and unlisted_choice), a dict of them (sorted by key), or a
        callable of the spawner returning them (maybe async).""",
    ).tag(config=True)
    profile_form_template = Unicode(
        "", help="A Jinja2 template of the form (variables profile_list, user_options); empty: the class's."
    ).tag(config=True)
    additional_profile_form_template_paths = List(
        help="Directories searched first for form.html (and style.css)."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._token = None
        self._start_task = None
        self._events = []
        self._events_changed = asyncio.Event()
        self._start_done = True
        # Whether start() has begun since the hub's spawn cleared the state:
        # progress() may be asked before (the hub's hooks still run).
        self._start_begun = False
        # The exit status of this server's pod once it terminated: the
        # service deletes such a pod before it answers, so the hub's next
        # polls find NotFound and must still report it.
        self._exit_status = None
        self._options_applied = False
        self._profile = None
        self._profile_overrides = False  # the profile chosen changed settings
        self._pvc_name = None  # remembered (state)
        # The Service's ClusterIP (services_enabled), remembered (state)
        # while the server runs: polls do not report it, get_url needs it.
        self._cluster_ip = None
        self._warned = set()
        # JupyterHub 5.3+ call apply_user_options before start(): apply the
        # profile there unless the deployment has a hook of its own (then
        # start() applies it, as with older hubs).
        if self.has_trait("apply_user_options") and self.apply_user_options is None:
            self.apply_user_options = _apply_user_options_hook

    # -- state ---------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self._pvc_name:
            state["pvc_name"] = self._pvc_name
        if self._cluster_ip:
            state["cluster_ip"] = self._cluster_ip
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("pvc_name") and self.remember_pvc_name:
            self._pvc_name = state["pvc_name"]
        if state.get("cluster_ip"):
            self._cluster_ip = state["cluster_ip"]

    def clear_state(self):
        # The claim's name stays: it outlives servers. The Service goes
        # with the pod, its ClusterIP with it.
        super().clear_state()
        self._cluster_ip = None
        self._exit_status = None
        self._options_applied = False
        self._profile = None
        self._profile_overrides = False
        self._start_begun = False

    # -- the service -------------------------------------------------------------

    @property
    def key(self):
        """The user/session key of the service: the user, or user/server."""
        return self.user.name if not self.name else f"{self.user.name}/{self.name}"

    def _url(self, suffix="", what="server"):
        base = self.service_url.rstrip("/")
        return f"{base}/users/{quote(self.key, safe='')}/{what}{suffix}"

    def _headers(self):
        if self._token is None:
            self._token = ""
            if self.token_file:
                with open(self.token_file) as f:
                    self._token = f.read().strip()
                if not self._token:
                    raise ServiceError(
                        "The spawner service is misconfigured on this hub; tell its administrators.",
                        log_message=f"token file {self.token_file} is empty",
                    )
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        return headers

    def _client(self):
        return _shared_client(self.max_connections)

    async def _call(self, method, suffix="", timeout=None, what="server"):
        """One request; returns (status, JSON body or {}). Raises on transport
        errors (unreachable, timeout)."""
        req = HTTPRequest(
            self._url(suffix, what),
            method=method,
            headers=self._headers(),
            request_timeout=timeout or self.request_timeout,
            connect_timeout=min(timeout or self.request_timeout, 10),
        )
        resp = await self._client().fetch(req, raise_error=False)
        if resp.code == 599:
            raise ServiceError(
                "The spawner service could not be reached.", log_message=f"{method} {req.url}: {resp.error}"
            )
        try:
            body = json.loads(resp.body or b"{}")
        except ValueError:
            body = {}
        return resp.code, body if isinstance(body, dict) else {}

    def _warn_once(self, what, msg, *args):
        if what not in self._warned:
            self._warned.add(what)
            self.log.warning(msg, *args)

    # -- templates -----------------------------------------------------------------

    def _template_fields(self, server_name=None, names=True):
        """KubeSpawner's template fields. {namespace} and {hubnamespace}
        are the service's, unknown here: left as they are."""
        raw_user = self.user.name
        raw_server = self.name if server_name is None else server_name
        safe_user = _safe_slug(raw_user, max_length=48)
        safe_server = _safe_slug(raw_server, max_length=48) if raw_server else ""
        if len(safe_user) + len(safe_server) + 2 > 48:
            safe_user_server = _multi_slug([raw_user, raw_server])
        elif raw_server:
            safe_user_server = f"{safe_user}--{safe_server}"
        else:
            safe_user_server = safe_user
        esc_user, esc_server = _escape_slug(raw_user), _escape_slug(raw_server)
        esc_user_server = f"{esc_user}--{esc_server}" if esc_server else esc_user
        scheme = {
            "safe": (safe_user, safe_server, safe_user_server),
            "escape": (esc_user, esc_server, esc_user_server),
        }[self.slug_scheme]
        fields = dict(
            userid=getattr(self.user, "id", ""),
            unescaped_username=raw_user,
            unescaped_servername=raw_server,
            username=scheme[0],
            servername=scheme[1],
            user_server=scheme[2],
            safe_username=safe_user,
            safe_servername=safe_server,
            safe_user_server=safe_user_server,
            escaped_username=esc_user,
            escaped_servername=esc_server,
            escaped_user_server=f"{esc_user}--{esc_server}",
        )
        if names:
            fields["pod_name"] = self._expand_template(self.pod_name_template, server_name, names=False)
            fields["pvc_name"] = self._claim_name(server_name)
        return fields

    def _expand_template(self, template, server_name=None, names=True):
        rendered = _expand(template, self._template_fields(server_name, names))
        # An empty server name leaves a trailing '-' of a template like
        # "{username}-{servername}": drop it (not one the template ends with).
        return rendered if template.endswith("-") else rendered.rstrip("-")

    def expand_user_properties(self, template):
        """template with KubeSpawner's fields ({username}, {servername},
        {user_server}, {pod_name}, {pvc_name}, ...) filled in."""
        return self._expand_template(template)

    def _expand_all(self, src):
        if isinstance(src, list):
            return [self._expand_all(i) for i in src]
        if isinstance(src, dict):
            return {k: self._expand_all(v) for k, v in src.items()}
        if isinstance(src, str):
            return self._expand_template(src)
        return src

    def _claim_name(self, server_name=None):
        if self._pvc_name and server_name is None:
            return self._pvc_name
        rendered = _expand(self.pvc_name_template, self._template_fields(server_name, names=False))
        return rendered if self.pvc_name_template.endswith("-") else rendered.rstrip("-")

    @property
    def pvc_name(self):
        """The claim's name: remembered, else from pvc_name_template."""
        return self._claim_name()

    # -- profiles ------------------------------------------------------------------

    def _options(self):
        """user_options, unnested: a 6.0-style REST body ({"user_options",
        "display_name"}) reaching an older hub arrives whole."""
        opts = self.user_options or {}
        nested = opts.get("user_options")
        if isinstance(nested, dict) and set(opts) <= {"user_options", "display_name"}:
            return nested
        return opts

    async def _profiles(self):
        """The profile list, initialized as KubeSpawner's: slugs, one
        default profile, one default choice per option."""
        profiles = self.profile_list
        if callable(profiles):
            profiles = await _resolve(profiles, self)
        profiles = copy.deepcopy(_sorted_values(profiles))
        for p in profiles:
            if not p.get("slug"):
                p["slug"] = _slugify(p.get("display_name", ""))
            for option in (p.get("profile_options") or {}).values():
                choices = option.get("choices") or {}
                if choices and not any(c.get("default") for c in choices.values()):
                    next(iter(choices.values()))["default"] = True
                unlisted = option.setdefault("unlisted_choice", {})
                unlisted.setdefault("enabled", False)
                if unlisted["enabled"]:
                    unlisted.setdefault("display_name_in_choices", "Other...")
        if profiles and not any(p.get("default") for p in profiles):
            profiles[0]["default"] = True
        return profiles

    def _choose(self, options, profiles):
        """The profile and the overrides options select, validated: one
        sentence for the user on bad input."""
        slug = options.get("profile")
        if slug is not None and not isinstance(slug, str):
            raise _refused(_sentence("the profile must be given as a name"), reason="invalid_user_options")
        if not slug:
            profile = next(p for p in profiles if p.get("default"))
        else:
            profile = next((p for p in profiles if p["slug"] == slug), None)
            if profile is None:
                slugs = ", ".join(p["slug"] for p in profiles)
                raise _refused(
                    _sentence(f"there is no profile {_quoted(slug)} (choose one of: {slugs})"), reason="unknown_profile"
                )
        name = profile.get("display_name") or profile["slug"]
        chosen = [("profile", profile.get("kubespawner_override") or {})]
        for key, option in (profile.get("profile_options") or {}).items():
            label = option.get("display_name") or key
            unlisted = option.get("unlisted_choice") or {}
            value = options.get(f"{key}--unlisted-choice")
            choice = options.get(key)
            choices = option.get("choices") or {}
            if value is not None and value != "":
                if not isinstance(value, str):
                    raise _refused(_sentence(f"the value for {label} must be text"), reason="invalid_user_options")
                if not unlisted.get("enabled"):
                    raise _refused(
                        _sentence(f'the profile "{name}" accepts no value of your own for {label}'),
                        reason="invalid_user_options",
                    )
                regex = unlisted.get("validation_regex")
                if regex and not re.match(regex, value):
                    why = unlisted.get("validation_message") or f"it must match {regex}"
                    raise _refused(
                        _sentence(f"{_quoted(value)} is not valid for {label}: {why}"), reason="invalid_user_options"
                    )
                chosen.append((key, _format_value(unlisted.get("kubespawner_override") or {}, value)))
                continue
            if choice is not None and choice != "":
                if not isinstance(choice, str) or choice not in choices:
                    raise _refused(
                        _sentence(
                            f'the profile "{name}" has no choice {_quoted(choice)} for {label}'
                            f' (choose one of: {", ".join(choices)})'
                        ),
                        reason="invalid_user_options",
                    )
            else:
                choice = next((k for k, c in choices.items() if c.get("default")), None)
                if choice is None:
                    raise ServiceError(
                        _sentence(f"this hub's profile \"{name}\" is misconfigured; tell its administrators"),
                        status_code=500,
                        log_message=f"profile {profile['slug']!r}: option {key!r} has no choices, and no value was given",
                    )
            chosen.append((key, choices[choice].get("kubespawner_override") or {}))
        return profile, chosen

    async def _apply_overrides(self, profile, overrides):
        name = profile.get("display_name") or profile["slug"]
        for k, v in overrides.items():
            try:
                if not self.has_trait(k):
                    raise TraitError(f"no setting {k!r}")
                v = await _resolve(v, self)
                current = getattr(self, k)
                if isinstance(v, dict) and isinstance(current, dict):
                    merged = copy.deepcopy(current)
                    _recursive_update(merged, v)
                    v = merged
                setattr(self, k, v)
            except web.HTTPError:
                raise  # a callable's own refusal, for the user
            except Exception as e:
                raise ServiceError(
                    _sentence(f"this hub's profile \"{name}\" is misconfigured; tell its administrators"),
                    status_code=500,
                    log_message=f"profile {profile['slug']!r}: kubespawner_override {k!r}: {e}",
                ) from e

    async def load_user_options(self, user_options=None):
        """Applies the profile user_options chose (KubeSpawner's order: the
        configuration, then the profile's kubespawner_override, then each
        option's choice in order). Raises, with one sentence for the user,
        on bad input; applies nothing then."""
        self._options_applied = True
        options = self._options() if user_options is None else user_options
        if not isinstance(options, dict):
            raise _refused(_sentence("its options must be an object"), reason="invalid_user_options")
        profiles = await self._profiles()
        if not profiles:
            if options.get("profile"):
                self.log.warning(
                    "kubespawn: profile %r requested, but no profile_list is configured", options["profile"]
                )
            return
        profile, chosen = self._choose(options, profiles)
        self._profile = profile
        self._profile_overrides = any(overrides for _, overrides in chosen)
        for _, overrides in chosen:
            await self._apply_overrides(profile, overrides)

    # -- the form ------------------------------------------------------------------

    @default("options_form")
    def _default_options_form(self):
        if not self.profile_list:
            return ""
        # Rendered at each request: the profiles may be a callable, and the
        # form preselects the user's last options.
        return KubespawnSpawner._render_options_form

    async def _render_options_form(self):
        profiles = await self._profiles()
        selected, choices, unlisted = None, {}, {}
        options = self._options()
        try:
            profile, _ = self._choose(options, profiles)
            selected = profile["slug"]
            for key in profile.get("profile_options") or {}:
                if options.get(f"{key}--unlisted-choice"):
                    choices.setdefault(selected, {})[key] = "unlisted-choice"
                    unlisted.setdefault(selected, {})[key] = options[f"{key}--unlisted-choice"]
                elif options.get(key):
                    choices.setdefault(selected, {})[key] = options[key]
        except Exception:
            selected = next(p["slug"] for p in profiles if p.get("default"))  # stale or invalid: defaults
        for p in profiles:
            for key, option in (p.get("profile_options") or {}).items():
                default_choice = next((k for k, c in (option.get("choices") or {}).items() if c.get("default")), None)
                choices.setdefault(p["slug"], {}).setdefault(key, default_choice)
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [
                    jinja2.FileSystemLoader(self.additional_profile_form_template_paths),
                    jinja2.DictLoader({"form.html": _FORM_HTML, "style.css": _FORM_CSS}),
                ]
            )
        )
        env.policies["json.dumps_kwargs"] = {"sort_keys": False}
        if self.profile_form_template:
            template = env.from_string(self.profile_form_template)
        else:
            template = env.get_template("form.html")
        return template.render(
            profile_list=profiles, user_options=options, selected_profile=selected,
            selected_choices=choices, unlisted_values=unlisted,
        )

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    async def _options_from_form(self, formdata):
        """KubeSpawner's user_options from the form: {"profile": slug,
        "<option>": choice, "<option>--unlisted-choice": value}, checked
        against the profiles (the form then shows the sentence)."""
        slug = (formdata.get("profile") or [None])[0]
        options = {}
        if slug:
            options["profile"] = slug
            prefix = f"profile-option-{slug}--"
            for k, v in formdata.items():
                if k.startswith(prefix) and v:
                    options[k[len(prefix):]] = v[0]
            for k in [k for k in options if k.endswith("--unlisted-choice")]:
                key = k[: -len("--unlisted-choice")]
                if options.get(key) == "unlisted-choice":
                    del options[key]
                else:
                    del options[k]  # another choice was selected
        ignored = sorted(k for k in formdata if k != "profile" and not k.startswith("profile-option-"))
        if ignored:
            self.log.warning("kubespawn: ignoring unrecognized form data: %s", ", ".join(map(str, ignored)))
        profiles = await self._profiles()
        if profiles:
            self._choose(options, profiles)
        return options

    # -- the manifest --------------------------------------------------------------

    def get_env(self):
        """The hub's environment (get_env: token, URLs, OAuth, resources),
        the image, then the configured environment with its templates
        expanded (the hub's own values are not templates)."""
        env = super().get_env()
        env["JUPYTER_IMAGE_SPEC"] = self.image
        env["JUPYTER_IMAGE"] = self.image
        for k, v in self.environment.items():
            if isinstance(v, (str, list, dict)):
                env[k] = self._expand_all(v)
        return env

    def _labels(self, extra):
        labels = {"hub.jupyter.org/username": _safe_slug(self.user.name, is_valid=_is_label_value)}
        labels.update(self._expand_all(extra))
        labels.update(self.common_labels)
        return labels

    def _without_reserved(self, what, meta):
        for k in [k for k in meta if _reserved(k)]:
            del meta[k]
            self._warn_once(k, "kubespawn: %s %s is set by the spawner service: left out", what, k)
        return meta

    async def get_pod_manifest(self):
        """The pod to send: {"metadata": {"labels", "annotations"}, "spec"}."""
        uid, gid, fs_gid, supplemental_gids, csc, psc = [
            await _resolve(v, self)
            for v in (
                self.uid, self.gid, self.fs_gid, self.supplemental_gids,
                self.container_security_context, self.pod_security_context,
            )
        ]
        args = self.get_args()
        real_cmd = None
        if self.cmd:
            real_cmd = list(self.cmd) + list(args)
        elif args:
            self.log.warning(
                "kubespawn: Ignoring arguments when using implicit command from image: %s."
                " Set cmd explicitly to pass them.", args,
            )

        labels = self._labels(self.extra_labels)
        labels["app.kubernetes.io/component"] = self.component_label
        labels["component"] = self.component_label
        labels["hub.jupyter.org/servername"] = _safe_slug(self.name, is_valid=_is_label_value)
        annotations = {"hub.jupyter.org/username": self.user.name}
        if self.name:
            annotations["hub.jupyter.org/servername"] = self.name
        annotations["hub.jupyter.org/jupyterhub-version"] = jupyterhub.__version__
        annotations.update(self.annotations)
        annotations.update(self._expand_all(self.extra_annotations))
        annotations.update(self._user_annotations())

        container = {"name": "notebook", "image": self.image}
        if self.image_pull_policy:
            container["imagePullPolicy"] = self.image_pull_policy
        if real_cmd:
            container["args"] = real_cmd
        if self.working_dir:
            container["workingDir"] = self._expand_template(self.working_dir)
        container["ports"] = [{"name": "notebook-port", "containerPort": self.port}]
        env = _sorted_env(self.get_env())
        if env:
            container["env"] = env
        resources = {}
        requests = {}
        if self.cpu_guarantee:
            requests["cpu"] = _quantity(self.cpu_guarantee)
        if self.mem_guarantee:
            requests["memory"] = _quantity(self.mem_guarantee)
        requests.update({k: _quantity(v) for k, v in self.extra_resource_guarantees.items()})
        limits = {}
        if self.cpu_limit:
            limits["cpu"] = _quantity(self.cpu_limit)
        if self.mem_limit:
            limits["memory"] = _quantity(self.mem_limit)
        limits.update({k: _quantity(v) for k, v in self.extra_resource_limits.items()})
        if requests:
            resources["requests"] = requests
        if limits:
            resources["limits"] = limits
        if resources:
            container["resources"] = resources
        mounts = self._expand_all(_sorted_values(self.volume_mounts))
        if mounts:
            container["volumeMounts"] = [_camel_keys(m) for m in mounts]
        if self.lifecycle_hooks:
            container["lifecycle"] = _camel_keys(self.lifecycle_hooks)

        sc = {}
        if uid is not None:
            sc["runAsUser"] = int(uid)
        if gid is not None:
            sc["runAsGroup"] = int(gid)
        if self.privileged:
            sc["privileged"] = True
        if self.allow_privilege_escalation is not None:
            sc["allowPrivilegeEscalation"] = self.allow_privilege_escalation
        sc.update(self._camel_only("container_security_context", csc))
        if sc:
            container["securityContext"] = sc
        for k, v in _camel_keys(self.extra_container_config).items():
            container[k] = v

        extra = self._expand_all(_sorted_values(self.extra_containers))
        spec = {"containers": [container] + [_camel_keys(c) for c in extra]}
        init = self._expand_all(_sorted_values(self.init_containers))
        if init:
            spec["initContainers"] = [_camel_keys(c) for c in init]
        volumes = self._expand_all(_sorted_values(self.volumes))
        if volumes:
            spec["volumes"] = [_camel_keys(v) for v in volumes]
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        tolerations = _sorted_values(self.tolerations)
        if tolerations:
            spec["tolerations"] = [_camel_keys(t) for t in tolerations]
        affinity = {}
        node = {}
        if self.node_affinity_required:
            node["requiredDuringSchedulingIgnoredDuringExecution"] = {
                "nodeSelectorTerms": [_camel_keys(t) for t in _sorted_values(self.node_affinity_required)]
            }
        if self.node_affinity_preferred:
            node["preferredDuringSchedulingIgnoredDuringExecution"] = [
                _camel_keys(t) for t in _sorted_values(self.node_affinity_preferred)
            ]
        if node:
            affinity["nodeAffinity"] = node
        for key, required, preferred in (
            ("podAffinity", self.pod_affinity_required, self.pod_affinity_preferred),
            ("podAntiAffinity", self.pod_anti_affinity_required, self.pod_anti_affinity_preferred),
        ):
            part = {}
            if required:
                part["requiredDuringSchedulingIgnoredDuringExecution"] = [
                    _camel_keys(t) for t in _sorted_values(required)
                ]
            if preferred:
                part["preferredDuringSchedulingIgnoredDuringExecution"] = [
                    _camel_keys(t) for t in _sorted_values(preferred)
                ]
            if part:
                affinity[key] = part
        if affinity:
            spec["affinity"] = affinity
        secrets = self.image_pull_secrets
        if isinstance(secrets, str):
            secrets = [secrets] if secrets else []
        if secrets:
            spec["imagePullSecrets"] = [{"name": s} if isinstance(s, str) else s for s in secrets]
        pod_sc = {}
        if fs_gid is not None:
            pod_sc["fsGroup"] = int(fs_gid)
        if supplemental_gids:
            pod_sc["supplementalGroups"] = [int(g) for g in supplemental_gids]
        pod_sc.update(self._camel_only("pod_security_context", psc))
        if pod_sc:
            spec["securityContext"] = pod_sc
        service_account = self._expand_all(self.service_account)
        if service_account is not None:
            spec["serviceAccountName"] = service_account
        if self.automount_service_account_token is not None:
            spec["automountServiceAccountToken"] = self.automount_service_account_token
        elif service_account is None:
            # No access to the Kubernetes API from users' pods by accident.
            spec["automountServiceAccountToken"] = False
        if self.scheduler_name:
            spec["schedulerName"] = self.scheduler_name
        if self.priority_class_name:
            spec["priorityClassName"] = self.priority_class_name
        spec["restartPolicy"] = "OnFailure"
        for k, v in _camel_keys(self._expand_all(self.extra_pod_config)).items():
            spec[k] = v
        return {
            "metadata": {
                "labels": self._without_reserved("label", labels),
                "annotations": self._without_reserved("annotation", annotations),
            },
            "spec": spec,
        }

    def _camel_only(self, name, ctx):
        ctx = ctx or {}
        for k in ctx:
            if "_" in k:
                raise ServiceError(
                    _sentence("this hub's configuration is invalid; tell its administrators"),
                    status_code=500,
                    log_message=f"{name}'s keys must have the API's camelCase names, got {k!r}",
                )
        return ctx

    def _user_annotations(self):
        asked = self._options().get("annotations") or {}
        if not isinstance(asked, dict):
            return {}
        return {k: v for k, v in asked.items() if k in self.user_annotation_keys and isinstance(v, str)}

    def _claim_shared_with_default_server(self):
        # A named server whose claim name does not depend on the server's:
        # it mounts the default server's claim, kept under that key.
        return bool(self.name) and not self._pvc_name and self._claim_name() == self._claim_name(server_name="")

    def get_pvc_manifest(self):
        """The claim to send: {"metadata": {"name", "labels"}, "spec"}."""
        if not self.storage_capacity:
            raise ServiceError(
                _sentence("this hub's storage configuration is invalid; tell its administrators"),
                status_code=500,
                log_message="storage_pvc_ensure is set without a storage_capacity",
            )
        labels = self._labels(self.storage_extra_labels)
        labels["app.kubernetes.io/component"] = self.component_label
        labels["component"] = "singleuser-storage"
        spec = {
            "accessModes": list(self.storage_access_modes),
            "resources": {"requests": {"storage": self.storage_capacity}},
        }
        if self.storage_class is not None:
            spec["storageClassName"] = self.storage_class
        selector = self._expand_all(self.storage_selector)
        if selector:
            spec["selector"] = selector
        return {"metadata": {"name": self.pvc_name, "labels": self._without_reserved("label", labels)}, "spec": spec}

    def get_service_manifest(self):
        """The Service to send (services_enabled): the service selects the
        pod and owns the Service by it."""
        name = self._expand_template(self.pod_name_template)
        return {
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": self.port, "targetPort": self.port}]},
        }

    async def get_start_body(self):
        """The start request's body (the wire contract: module docstring)."""
        pod = await self.get_pod_manifest()
        if self.modify_pod_hook:
            self.log.info("kubespawn: pod of %s modified by modify_pod_hook", self.key)
            changed = await _resolve_hook(self.modify_pod_hook, self, pod)
            pod = pod if changed is None else changed
        meta = pod.get("metadata") or {}
        pod = {
            "metadata": {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
            "spec": pod["spec"],
        }
        body = {"pod": pod, "claims": [], "services": []}
        if self.storage_pvc_ensure:
            if self._claim_shared_with_default_server():
                self.log.info("kubespawn: %s uses the default server's claim %s", self.key, self.pvc_name)
            else:
                body["claims"].append(self.get_pvc_manifest())
        if self.services_enabled:
            body["services"].append(self.get_service_manifest())
        legacy = self._user_annotations()
        if legacy:
            body["annotations"] = legacy
        return body

    # -- start ---------------------------------------------------------------------

    def _add_event(self, events, event):
        events.append(event)
        changed, self._events_changed = self._events_changed, asyncio.Event()
        changed.set()

    async def start(self):
        self._start_task = asyncio.current_task()
        self._exit_status = None
        events = self._events = []
        self._start_done = False
        self._start_begun = True
        self._add_event(events, {})  # wakes progress() readers waiting for it
        try:
            if self.internal_ssl:
                raise ServiceError(
                    _sentence("this hub's configuration is not supported; tell its administrators"),
                    status_code=500,
                    log_message="internal_ssl is not supported by KubespawnSpawner",
                )
            if not self._options_applied:
                await self.load_user_options()
            body = await self.get_start_body()
            result = await self._start_stream(body, events)
        finally:
            self._options_applied = False
            self._start_done = True
            self._add_event(events, {})  # wakes progress() readers; never yielded
        if self.storage_pvc_ensure and self.remember_pvc_name and body["claims"]:
            self._pvc_name = body["claims"][0]["metadata"]["name"]
        self.log.info(
            "kubespawn: %s running in pod %s (uid %s)", self.key, result.get("pod", ""), result.get("uid", "")
        )
        return self._server_address(result)

    def _server_address(self, answer):
        """Where the hub connects: (pod IP, port), or with services_enabled
        the URL of the Service (dns_name_template). answer is the start's
        result or a poll's; a start's names the Service's ClusterIP, which
        is kept for get_url (polls do not report it)."""
        ip = answer.get("podIP")
        if self.services_enabled:
            ns = answer.get("namespace")
            if ns:
                name = self._expand_template(self.pod_name_template)
                if "objects" in answer:
                    self._cluster_ip = next(
                        (o.get("clusterIP") for o in answer.get("objects") or []
                         if isinstance(o, dict) and o.get("kind") == "Service" and o.get("name") == name),
                        None,
                    )
                fields = {"name": name, "namespace": ns}
                if self._cluster_ip:
                    fields["cluster_ip"] = f"[{self._cluster_ip}]" if ":" in self._cluster_ip else self._cluster_ip
                elif "cluster_ip" in _template_names(self.dns_name_template):
                    raise ServiceError(
                        _sentence("the address of its Service is unknown"),
                        log_message=f"dns_name_template {self.dns_name_template!r} has {{cluster_ip}}, but the "
                        f"service reports no ClusterIP for Service {name} (answer: {answer})",
                    )
                host = _expand(self.dns_name_template, fields)
                return f"http://{host}:{self.port}"
            self._warn_once("namespace", "kubespawn: the service reports no namespace: connecting to the pod IP")
        return (ip, self.port)

    async def _start_stream(self, body, events):
        result = {}
        buf = bytearray()

        def on_data(chunk):
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
                if name == "progress" and isinstance(value, dict):
                    self._add_event(events, value)
                elif name == "result" and isinstance(value, dict):
                    result.update(value)

        url = self._url("?progress=sse&cancelOnDisconnect=true")
        # Longer than the hub's own start_timeout: the hub gives up first and
        # calls stop(), which ends this stream.
        timeout = self.start_timeout + self.stop_timeout + 60
        try:
            code = await asyncio.wait_for(
                _stream_request("POST", url, self._headers(), json.dumps(body).encode(), on_data), timeout
            )
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            raise ServiceError(
                _sentence("the spawner service could not be reached"), log_message=f"POST {url}: {e!r}"
            ) from e
        if code != 200:
            try:
                err = json.loads(bytes(buf) or b"{}")
            except ValueError:
                err = {}
            raise self._refusal(code, err if isinstance(err, dict) else {})
        if result.get("state") != "running":
            raise self._failure(result)
        if not result.get("podIP"):
            raise ServiceError(_sentence("the spawner service gave no address"), log_message=f"result: {result}")
        return result

    def _profile_phrase(self):
        if self._profile is None or not self._profile_overrides:
            return ""
        name = self._profile.get("display_name") or self._profile["slug"]
        return f'the profile "{name}" asks for what this hub does not allow: '

    def _refusal(self, code, err):
        """The service refused the start before creating anything."""
        error = (err.get("error") or f"HTTP {code}").rstrip(".")
        field = err.get("field")
        detail = f"start of {self.key} refused: HTTP {code} {error}" + (f" (field {field})" if field else "")
        self.log.error("kubespawn: %s", detail)
        if code in (400, 403, 422):
            where = f" ({field})" if field else ""
            return _refused(
                _sentence(f"{self._profile_phrase()}{error}{where}"),
                reason="forbidden" if code == 403 else "invalid_request",
                status_code=code,
            )
        if code == 409:
            phrase = _FAILURES["already_running"][1]
            return _refused(_sentence(phrase), reason="already_running", status_code=409)
        if code == 401:
            return ServiceError(
                _sentence("the spawner service does not accept this hub's credentials; tell its administrators"),
                status_code=500, log_message=detail,
            )
        return ServiceError(_sentence("the spawner service is unavailable; try again in a minute"), log_message=detail)

    def _failure(self, result):
        reason = result.get("reason") or "error"
        error = (result.get("error") or "the stream ended without a result").rstrip(".")
        detail = f"start of {self.key} failed ({reason}): {error}"
        if result.get("field"):
            detail += f" (field {result['field']})"
        self.log.error("kubespawn: %s", detail)
        kind, phrase = _FAILURES.get(reason, (_ERROR, "the spawner service failed to start it"))
        message = _sentence(phrase.format(image=self.image, error=error))
        status = result.get("status")
        if kind is _REJECTED:
            code = status if isinstance(status, int) and 400 <= status < 600 else 400
            return _refused(message, reason=reason, status_code=code)
        return ServiceError(message, reason=reason, log_message=detail)

    async def progress(self):
        # Asked while the hub's spawn runs its hooks, before start(): wait
        # for the start (the hub stops reading when its spawn ends).
        while not self._start_begun and getattr(self, "_spawn_pending", False):
            await self._events_changed.wait()
        i = 0
        while True:
            changed = self._events_changed
            events = self._events
            while i < len(events):
                ev = events[i]
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
            self.log.warning("kubespawn: poll of %s: service unreachable (%s); assuming running", self.key, _detail(e))
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
            # JupyterHub before 5.1 leaves a timed-out start() running (5.1+
            # cancel it before calling stop()): cancel it here, after the
            # DELETE cancelled it on the service's side. Its stream closes.
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
                last = _detail(e)
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
                    raise ServiceError(
                        "Your server could not be stopped: the spawner service refused.",
                        log_message=f"stop of {self.key} refused: {last}",
                    )
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
                raise ServiceError("Your server's stop is not confirmed yet.", log_message=msg)
            await asyncio.sleep(min(self.stop_retry_interval, max(deadline - loop.time(), 0)))
        self.log.info("kubespawn: stop of %s confirmed: the pod is gone", self.key)

    async def get_url(self):
        url = self.server.url if self.server else ""
        try:
            code, body = await self._call("GET")
        except Exception as e:
            self.log.warning("kubespawn: get_url of %s: %s", self.key, _detail(e))
            return url
        ip = body.get("podIP")
        if code != 200 or not ip or body.get("state") != "running" or not self.server:
            return url
        addr = self._server_address(body)
        if isinstance(addr, str):
            return addr + self.server.base_url
        host = f"[{ip}]" if ":" in ip else ip
        return f"{self.server.proto}://{host}:{self.port}{self.server.base_url}"

    # -- delete_forever, rename --------------------------------------------------

    async def delete_forever(self):
        """Deletes the server's claims (DELETE /users/{key}/claims). The
        hub calls it on a stopped spawner and forgets the server after,
        whatever happens: retried while the pod still exists (a stop the
        service still owns) or the service fails, up to
        stop_confirm_timeout; then it raises, saying what is left."""
        if not self.delete_pvc:
            self.log.info("kubespawn: not deleting the claims of %s (delete_pvc is False)", self.key)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_confirm_timeout
        last = ""
        while True:
            try:
                code, body = await self._call("DELETE", timeout=self.stop_timeout, what="claims")
            except Exception as e:
                code, body = 0, {}
                last = _detail(e)
            if code:
                last = f"HTTP {code} {body.get('error', '')}".strip()
            if code == 200:
                for c in body.get("claims") or []:
                    self.log.info("kubespawn: claim %s (uid %s) of %s deleted", c.get("name"), c.get("uid"), self.key)
                if not body.get("claims"):
                    self.log.info("kubespawn: %s had no claims", self.key)
                self._pvc_name = None
                return
            if code in (400, 401, 403, 404):
                break
            if loop.time() >= deadline:
                break
            await asyncio.sleep(min(self.stop_retry_interval, max(deadline - loop.time(), 0)))
        msg = (
            f"the claims of {self.key} were not deleted ({last}): they remain on the cluster, "
            f"labelled kubespawn.io/key-hash for the key {self.key!r}"
        )
        self.log.error("kubespawn: %s", msg)
        # Only the hub's log shows it ("Error cleaning up persistent resources").
        raise ServiceError(msg)

    async def rename(self, old_name, new_name):
        """JupyterHub 6.0 renames a stopped named server: refused when it
        has storage, which the service keeps under the server's key."""
        if self.storage_pvc_ensure or self._pvc_name:
            raise _refused(
                f'The server "{old_name}" keeps its storage under its name: it cannot be renamed'
                " (its storage would be left behind).",
                reason="rename_with_storage",
            )


async def _apply_user_options_hook(spawner, user_options):
    """KubespawnSpawner's apply_user_options (JupyterHub 5.3+)."""
    await spawner.load_user_options()


async def _resolve_hook(hook, spawner, pod):
    r = hook(spawner, pod)
    if isawaitable(r):
        r = await r
    return r


async def _stream_request(method, url, headers, body, on_data):
    """One HTTP/1.1 request on a connection of its own; the body is passed
    to on_data as it arrives (chunked, sized or to the end). Returns the
    status. Cancelled, it closes its connection at once: the service's
    cancelOnDisconnect then cancels the start and deletes its pod."""
    u = urlsplit(url)
    https = u.scheme == "https"
    port = u.port or (443 if https else 80)
    ctx = ssl.create_default_context() if https else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(u.hostname, port, ssl=ctx, server_hostname=u.hostname if https else None), 10
    )
    try:
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        if u.port:
            host += f":{u.port}"
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept: text/event-stream", "Connection: close",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status = (await reader.readline()).split()
        if len(status) < 2 or not status[0].startswith(b"HTTP/"):
            raise ValueError(f"not an HTTP answer: {b' '.join(status)[:80]!r}")
        code = int(status[1])
        fields = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            fields[k.strip().lower()] = v.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                on_data(await reader.readexactly(size))
                await reader.readline()
        elif "content-length" in fields:
            left = int(fields["content-length"])
            while left:
                chunk = await reader.read(min(left, 65536))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(chunk)
                on_data(chunk)
        else:
            while chunk := await reader.read(65536):
                on_data(chunk)
        return code
    finally:
        writer.close()
