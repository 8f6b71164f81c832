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

c.JupyterHub.services = []
c.JupyterHub.load_roles = []
if env("KUBESPAWN_HUB_API_TOKEN"):
    c.JupyterHub.services.append({"name": "tester", "api_token": env("KUBESPAWN_HUB_API_TOKEN")})
    c.JupyterHub.load_roles.append(
        {
            "name": "tester-role",
            "scopes": ["admin:users", "admin:servers", "read:hub", "tokens"],
            "services": ["tester"],
        }
    )
# The rig reads the proxy's routes (GET /hub/api/proxy: where the hub sends
# each user's traffic) with a token of its own that may do nothing else.
if env("KUBESPAWN_ROUTE_READER_TOKEN"):
    c.JupyterHub.services.append({"name": "route-reader", "api_token": env("KUBESPAWN_ROUTE_READER_TOKEN")})
    c.JupyterHub.load_roles.append({"name": "route-reader-role", "scopes": ["proxy"], "services": ["route-reader"]})

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
c.JupyterHub.allow_named_servers = True

# Real single-user servers (the rig's KUBESPAWN_PROCESS_RUNTIME): the pod
# simulator runs each pod of this RuntimeClass as a local process at the
# pod's own loopback IP, so the pod is Debian's jupyterhub-singleuser as
# KubeSpawner would start it (cmd + get_args(), the hub's environment),
# as uid 1000 (notebook refuses root).
process_runtime = env("KUBESPAWN_PROCESS_RUNTIME")
if process_runtime:
    c.KubespawnSpawner.image = env("KUBESPAWN_SINGLEUSER_IMAGE", "kubespawn.test/jupyterhub-singleuser:3.0")
    c.KubespawnSpawner.extra_pod_config = {"runtimeClassName": process_runtime}
    c.KubespawnSpawner.uid = 1000
    c.KubespawnSpawner.gid = 1000
    c.KubespawnSpawner.port = 8888

# Profiles as a z2jh values.yaml would give them (KUBESPAWN_PROFILES: the
# browser test, the profile tests, make demo-jupyterhub): the spawn form
# shows them; each changes the pod's resources and placement.
if env("KUBESPAWN_PROFILES"):
    c.KubespawnSpawner.profile_list = [
        {
            "display_name": "Small",
            "slug": "small",
            "description": "1 CPU, 1 GiB",
            "default": True,
            "kubespawner_override": {"cpu_limit": 1, "mem_limit": "1G", "mem_guarantee": "512M"},
        },
        {
            "display_name": "Large",
            "slug": "large",
            "description": "4 CPUs, 8 GiB, on the large nodes",
            "kubespawner_override": {
                # hubtest.LargeProfileImage: the simulator runs the same
                # jupyterhub-singleuser for it.
                "image": "kubespawn.test/datascience-notebook:3.0",
                "cpu_limit": 4,
                "cpu_guarantee": 2,
                "mem_limit": "8G",
                "node_selector": {"kubespawn.test/size": "large"},
                # A slower start (the simulated image pull), so its progress shows.
                "extra_annotations": {"podsim.kubespawn.io/start-delay": "2s"},
            },
            # One choice the spawner service's policy refuses (the host's
            # network): what a hub operator's mistake looks like to the
            # user (the bad-input test); the default choice changes nothing.
            "profile_options": {
                "network": {
                    "display_name": "Network",
                    "choices": {
                        "pod": {"display_name": "The pod's own", "default": True, "kubespawner_override": {}},
                        "host": {
                            "display_name": "The node's",
                            "kubespawner_override": {"extra_pod_config": {"hostNetwork": True}},
                        },
                    },
                },
            },
        },
    ]

# Per-user storage as z2jh's singleuser.storage (KUBESPAWN_STORAGE: the
# storage test): a claim per user, kept across stops, deleted with the user
# (delete_forever).
if env("KUBESPAWN_STORAGE"):
    c.KubespawnSpawner.storage_pvc_ensure = True
    c.KubespawnSpawner.storage_capacity = env("KUBESPAWN_STORAGE")
    # z2jh's singleuser.storage.type=dynamic mounts the claim as the home.
    c.KubespawnSpawner.volumes = [
        {"name": "volume-{user_server}", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}
    ]
    c.KubespawnSpawner.volume_mounts = [{"name": "volume-{user_server}", "mountPath": "/home/jovyan"}]

# A Service per server (KUBESPAWN_SERVICES: the services test), which the
# hub connects through. Nothing resolves cluster DNS names here, so by
# default the hub goes to the Service's ClusterIP, which the rig's
# kube-proxy stand-in (internal/svcproxy) serves on loopback;
# KUBESPAWN_DNS_NAME_TEMPLATE sets another dns_name_template.
if env("KUBESPAWN_SERVICES"):
    c.KubespawnSpawner.services_enabled = True
    c.KubespawnSpawner.dns_name_template = env("KUBESPAWN_DNS_NAME_TEMPLATE", "{cluster_ip}")
