# JupyterHub 3.0 configuration for KubespawnSpawner with the local control
# plane (the tests and `make demo-jupyterhub` set the KUBESPAWN_* variables;
# see README.md). Everything listens on loopback.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

c = get_config()  # noqa: F821 (provided by JupyterHub)
env = os.environ.get

state_dir = env("KUBESPAWN_HUB_DIR", os.path.join(os.getcwd(), "jupyterhub-state"))
os.makedirs(state_dir, exist_ok=True)

c.JupyterHub.bind_url = f"http://127.0.0.1:{env('KUBESPAWN_HUB_PORT', '8000')}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("KUBESPAWN_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('KUBESPAWN_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.pid_file = os.path.join(state_dir, "jupyterhub-proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + os.path.join(state_dir, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(state_dir, "jupyterhub_cookie_secret")
# Keep servers when the hub stops: a restart finds them (check_spawner).
c.JupyterHub.cleanup_servers = False
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "kubespawn_spawner.KubespawnSpawner"
# POST /hub/api/users/{name}/server answers 202 at once.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}

if env("KUBESPAWN_HUB_API_TOKEN"):
    c.JupyterHub.services = [{"name": "tester", "api_token": env("KUBESPAWN_HUB_API_TOKEN")}]
    c.JupyterHub.load_roles = [
        {
            "name": "tester-role",
            "scopes": ["admin:users", "admin:servers", "read:hub"],
            "services": ["tester"],
        }
    ]

c.Spawner.start_timeout = int(env("KUBESPAWN_START_TIMEOUT", "60"))
c.Spawner.http_timeout = int(env("KUBESPAWN_HTTP_TIMEOUT", "30"))
c.Spawner.poll_interval = int(env("KUBESPAWN_POLL_INTERVAL", "30"))

c.KubespawnSpawner.service_url = env("KUBESPAWN_SERVICE_URL", "http://127.0.0.1:8082")
c.KubespawnSpawner.token_file = env("KUBESPAWN_TOKEN_FILE", "")
# The stand-in notebook server's port (the pods' port on a real cluster).
c.KubespawnSpawner.port = int(env("KUBESPAWN_NOTEBOOK_PORT", "8888"))
# Demo only: users pick a pod-simulator scenario through user_options.
c.KubespawnSpawner.user_annotation_keys = [
    "podsim.kubespawn.io/scenario",
    "podsim.kubespawn.io/start-delay",
]
