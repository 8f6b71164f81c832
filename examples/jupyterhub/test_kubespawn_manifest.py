"""What kubespawn_spawner.py sends the spawner service to start a server
(the pod the hub decides, its claims and Service: the wire contract in the
module's docstring), built from KubeSpawner's configuration names; the
profile form; bad input refused with one sentence before anything is
asked of the service; delete_forever.
"""

import asyncio
import unittest

import jupyterhub
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets.config import Config

import kubespawn_spawner as ks
from kubespawn_testlib import (
    RUNNING_RESULT,
    StandInService,
    fake_hub,
    fake_orm_spawner,
    fake_user,
    give_server,
    result_stream,
    user_message,
)

TOLERATE_USER = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}
TOLERATE_GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_NODES = {"matchExpressions": [{"key": "cloud.example.org/gpu", "operator": "In", "values": ["a100"]}]}


def z2jh_config():
    """A configuration as zero-to-jupyterhub's hub writes it (c.KubeSpawner
    and c.Spawner), with profiles."""
    c = Config()
    c.Spawner.args = ["--debug"]
    c.Spawner.cpu_limit = 1.0
    c.Spawner.cpu_guarantee = 0.5
    c.Spawner.mem_limit = "2G"
    c.Spawner.mem_guarantee = "1G"
    c.Spawner.environment = {
        "GREETING": "hello {username}",
        "TOKEN_FROM_SECRET": {"valueFrom": {"secretKeyRef": {"name": "site", "key": "token"}}},
        "A_TOOLS": "$(HOME)/tools",
        "HOME": "/home/jovyan",
    }
    c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
    c.KubeSpawner.image_pull_policy = "IfNotPresent"
    c.KubeSpawner.image_pull_secrets = ["regcred"]
    c.KubeSpawner.uid = 1000
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.working_dir = "/home/jovyan"
    c.KubeSpawner.node_selector = {"hub.jupyter.org/node-purpose": "user"}
    c.KubeSpawner.tolerations = [TOLERATE_USER]
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.storage_capacity = "10Gi"
    c.KubeSpawner.storage_class = "standard"
    c.KubeSpawner.storage_extra_labels = {"hub.jupyter.org/storage-kind": "user"}
    c.KubeSpawner.pvc_name_template = "claim-{username}{servername}"
    c.KubeSpawner.volumes = [
        {"name": "volume-{username}{servername}", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}
    ]
    c.KubeSpawner.volume_mounts = [{"name": "volume-{username}{servername}", "mountPath": "/home/jovyan"}]
    c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true", "release": "jhub"}
    c.KubeSpawner.extra_annotations = {"example.org/owner": "{unescaped_username}"}
    c.KubeSpawner.lifecycle_hooks = {"postStart": {"exec": {"command": ["sh", "-c", "echo ready"]}}}
    c.KubeSpawner.init_containers = [{"name": "block-metadata", "image": "busybox:1", "command": ["true"]}]
    c.KubeSpawner.extra_pod_config = {"dns_policy": "ClusterFirst", "terminationGracePeriodSeconds": 30}
    c.KubeSpawner.extra_container_config = {"envFrom": [{"configMapRef": {"name": "site"}}]}
    c.KubeSpawner.services_enabled = True
    c.KubeSpawner.profile_list = [
        {"display_name": "Small", "slug": "small", "default": True},
        {
            "display_name": "GPU",
            "slug": "gpu",
            "kubespawner_override": {
                "cpu_limit": 4,
                "mem_limit": "16G",
                "extra_resource_limits": {"nvidia.com/gpu": "1"},
                "node_selector": {"cloud.example.org/gpu-node": "true"},
                "tolerations": [TOLERATE_GPU],
                "node_affinity_required": [GPU_NODES],
            },
            "profile_options": {
                "image": {
                    "display_name": "Image",
                    "choices": {
                        "pytorch": {
                            "display_name": "PyTorch",
                            "kubespawner_override": {"image": "example.org/pytorch:2"},
                        },
                        "tensorflow": {
                            "display_name": "TensorFlow",
                            "default": True,
                            "kubespawner_override": {"image": "example.org/tensorflow:2"},
                        },
                    },
                }
            },
        },
    ]
    return c


class ManifestTestCase(unittest.TestCase):
    def setUp(self):
        self.service = StandInService()
        self.addCleanup(self.service.close)

    def spawner(self, user="alice", name="", config=None, **traits):
        traits.setdefault("stop_retry_interval", 0.01)
        s = ks.KubespawnSpawner(
            user=fake_user(user), hub=fake_hub(), orm_spawner=fake_orm_spawner(name) if name else None,
            config=config or Config(), service_url=self.service.url, **traits
        )
        s.api_token = "token-abc"
        return give_server(s)

    def start(self, s, result=RUNNING_RESULT):
        self.service.answer("POST", (200, result_stream(**result)))
        return asyncio.run(s.start())

    def refused(self, s):
        """start() raises: the exception the hub shows the user."""
        with self.assertRaises(Exception) as cm:
            asyncio.run(s.start())
        return cm.exception

    def sent(self):
        posts = self.service.posts()
        self.assertEqual(len(posts), 1)
        return posts[0]


class TestZ2JHManifest(ManifestTestCase):
    def test_the_chosen_profile_is_exactly_what_is_sent(self):
        s = self.spawner(config=z2jh_config())
        s.user_options = {"profile": "gpu", "image": "pytorch"}
        url = self.start(s, dict(RUNNING_RESULT, namespace="jhub"))
        self.assertEqual(url, "http://jupyter-alice.jhub.svc.cluster.local:8888", "services_enabled: through the Service")
        body = self.sent()

        # The environment: the hub's own (get_env: token, prefix, OAuth,
        # resources), then the configured one, expanded, in an order that
        # resolves $(VAR) references.
        env = {**Spawner.get_env(s)}
        env.update(
            GREETING="hello alice", HOME="/home/jovyan", A_TOOLS="$(HOME)/tools",
            JUPYTER_IMAGE="example.org/pytorch:2", JUPYTER_IMAGE_SPEC="example.org/pytorch:2",
        )
        secret = {"secretKeyRef": {"name": "site", "key": "token"}}
        env["TOKEN_FROM_SECRET"] = secret

        def entry(k):
            return {"name": k, "valueFrom": secret} if k == "TOKEN_FROM_SECRET" else {"name": k, "value": env[k]}

        # Sorted by name, except that A_TOOLS comes after HOME, which it uses.
        want_env = [entry(k) for k in sorted(env) if k != "A_TOOLS"] + [entry("A_TOOLS")]
        got_env = body["pod"]["spec"]["containers"][0]["env"]
        self.assertEqual(got_env, want_env)
        by_name = {e["name"]: e.get("value") for e in got_env}
        for k, v in {
            "JUPYTERHUB_API_TOKEN": "token-abc",
            "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
            "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback",
            "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
            "JUPYTERHUB_USER": "alice",
            "CPU_LIMIT": "4.0",
            "MEM_LIMIT": "17179869184",
        }.items():
            self.assertEqual(by_name[k], v, k)

        common = {"app.kubernetes.io/name": "jupyterhub", "app": "jupyterhub", "heritage": "jupyterhub"}
        self.assertEqual(
            body,
            {
                "pod": {
                    "metadata": {
                        "labels": {
                            "hub.jupyter.org/username": "alice",
                            "hub.jupyter.org/servername": "",
                            "hub.jupyter.org/network-access-hub": "true",
                            "release": "jhub",
                            **common,
                            "app.kubernetes.io/component": "singleuser-server",
                            "component": "singleuser-server",
                        },
                        "annotations": {
                            "hub.jupyter.org/username": "alice",
                            "hub.jupyter.org/jupyterhub-version": jupyterhub.__version__,
                            "example.org/owner": "alice",
                        },
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "notebook",
                                "image": "example.org/pytorch:2",
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["jupyterhub-singleuser", "--debug"],
                                "workingDir": "/home/jovyan",
                                "ports": [{"name": "notebook-port", "containerPort": 8888}],
                                "env": want_env,
                                "envFrom": [{"configMapRef": {"name": "site"}}],
                                "resources": {
                                    "requests": {"cpu": "0.5", "memory": "1073741824"},
                                    "limits": {"cpu": "4", "memory": "17179869184", "nvidia.com/gpu": "1"},
                                },
                                "volumeMounts": [{"name": "volume-alice", "mountPath": "/home/jovyan"}],
                                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo ready"]}}},
                                "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": False},
                            }
                        ],
                        "initContainers": [{"name": "block-metadata", "image": "busybox:1", "command": ["true"]}],
                        "volumes": [{"name": "volume-alice", "persistentVolumeClaim": {"claimName": "claim-alice"}}],
                        "nodeSelector": {"hub.jupyter.org/node-purpose": "user", "cloud.example.org/gpu-node": "true"},
                        "tolerations": [TOLERATE_GPU],
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [GPU_NODES]}
                            }
                        },
                        "imagePullSecrets": [{"name": "regcred"}],
                        "securityContext": {"fsGroup": 100},
                        "automountServiceAccountToken": False,
                        "restartPolicy": "OnFailure",
                        "dnsPolicy": "ClusterFirst",
                        "terminationGracePeriodSeconds": 30,
                    },
                },
                "claims": [
                    {
                        "metadata": {
                            "name": "claim-alice",
                            "labels": {
                                "hub.jupyter.org/username": "alice",
                                "hub.jupyter.org/storage-kind": "user",
                                **common,
                                "app.kubernetes.io/component": "singleuser-server",
                                "component": "singleuser-storage",
                            },
                        },
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                            "storageClassName": "standard",
                        },
                    }
                ],
                "services": [
                    {"metadata": {"name": "jupyter-alice"}, "spec": {"ports": [{"name": "http", "port": 8888, "targetPort": 8888}]}}
                ],
            },
        )

    def test_the_default_profile_and_choice_apply_without_user_options(self):
        s = self.spawner(config=z2jh_config())
        self.start(s)
        c = self.sent()["pod"]["spec"]["containers"][0]
        self.assertEqual(c["image"], "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0", "the default profile, Small")
        self.assertEqual(c["resources"]["limits"], {"cpu": "1", "memory": "2147483648"})

    def test_config_under_kubespawnspawner_wins_over_kubespawner(self):
        c = z2jh_config()
        c.KubespawnSpawner.image = "example.org/mine:1"
        c.KubespawnSpawner.profile_list = []
        s = self.spawner(config=c)
        self.assertEqual(s.image, "example.org/mine:1")
        self.assertEqual(s.storage_capacity, "10Gi", "the rest still from c.KubeSpawner")

    def test_named_server_names(self):
        # A user name that is no valid object name and a named server:
        # KubeSpawner 7's "safe" names (the same values), claim per server.
        c = z2jh_config()
        c.KubeSpawner.pvc_name_template = "claim-{user_server}"
        c.KubeSpawner.profile_list = []
        s = self.spawner(user="Alice.Smith", name="My Server", config=c)
        self.assertEqual(s.key, "Alice.Smith/My Server")
        self.start(s, dict(RUNNING_RESULT, namespace="jhub"))
        self.assertEqual(self.service.requests[0], ("POST", "/users/Alice.Smith%2FMy%20Server/server?progress=sse&cancelOnDisconnect=true"))
        body = self.sent()
        meta = body["pod"]["metadata"]
        self.assertEqual(meta["labels"]["hub.jupyter.org/username"], "Alice.Smith")
        self.assertEqual(meta["labels"]["hub.jupyter.org/servername"], "my-server---c2d9a82f")
        self.assertEqual(meta["annotations"]["hub.jupyter.org/username"], "Alice.Smith")
        self.assertEqual(meta["annotations"]["hub.jupyter.org/servername"], "My Server")
        # Both slugs fit in 48 characters: joined (longer ones get one hash).
        self.assertEqual(body["claims"][0]["metadata"]["name"], "claim-alice-smith---2ece8250--my-server---c2d9a82f")
        self.assertEqual(body["claims"][0]["metadata"]["labels"]["hub.jupyter.org/username"], "Alice.Smith")
        self.assertEqual(body["services"][0]["metadata"]["name"], "jupyter-alice-smith---2ece8250--my-server---c2d9a82f")
        self.assertEqual(
            body["pod"]["spec"]["volumes"][0],
            {"name": "volume-alice-smith---2ece8250my-server---c2d9a82f",
             "persistentVolumeClaim": {"claimName": "claim-alice-smith---2ece8250--my-server---c2d9a82f"}},
        )

    def test_the_escape_scheme_of_kubespawner_6(self):
        s = self.spawner(user="Alice.Smith", slug_scheme="escape", pvc_name_template="claim-{user_server}",
                         storage_pvc_ensure=True, storage_capacity="1Gi")
        self.start(s)
        self.assertEqual(self.sent()["claims"][0]["metadata"]["name"], "claim--41lice-2e-53mith")

    def test_a_named_server_sharing_the_default_servers_claim_sends_none(self):
        # pvc_name_template without the server name: the named server
        # mounts the default server's claim, which the service keeps under
        # the default server's key; it is not the named server's to ensure.
        s = self.spawner(name="gpu", storage_pvc_ensure=True, storage_capacity="1Gi", pvc_name_template="claim-{username}",
                         volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}])
        self.start(s)
        body = self.sent()
        self.assertEqual(body["claims"], [])
        self.assertEqual(body["pod"]["spec"]["volumes"], [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}])

    def test_the_remembered_claim_name_survives_a_template_change(self):
        s = self.spawner(storage_pvc_ensure=True, storage_capacity="1Gi")
        self.start(s)
        self.assertEqual(s.get_state(), {"pvc_name": "claim-alice"})
        s2 = self.spawner(storage_pvc_ensure=True, storage_capacity="1Gi", pvc_name_template="home-{username}")
        s2.load_state(s.get_state())
        s2.clear_state()  # the hub clears the state before a start: the claim name stays
        self.service.bodies.clear()
        self.start(s2)
        self.assertEqual(self.sent()["claims"][0]["metadata"]["name"], "claim-alice")

    def test_cmd_none_runs_the_images_command(self):
        s = self.spawner(cmd=None, args=["--debug"])
        with self.assertLogs(s.log, "WARNING") as logs:
            self.start(s)
        self.assertNotIn("args", self.sent()["pod"]["spec"]["containers"][0])
        self.assertIn("Ignoring arguments", logs.output[0])

    def test_defaults(self):
        s = self.spawner()
        self.start(s)
        body = self.sent()
        self.assertEqual(body["claims"], [])
        self.assertEqual(body["services"], [])
        self.assertNotIn("annotations", body, "no legacy annotations unless a user chose some")
        spec = body["pod"]["spec"]
        self.assertEqual(spec["containers"][0]["image"], "quay.io/jupyterhub/singleuser:latest")
        self.assertEqual(spec["containers"][0]["args"], ["jupyterhub-singleuser"])
        self.assertEqual(spec["containers"][0]["securityContext"], {"allowPrivilegeEscalation": False})
        self.assertEqual(spec["restartPolicy"], "OnFailure")
        self.assertEqual(spec["automountServiceAccountToken"], False)
        self.assertNotIn("resources", spec["containers"][0])

    def test_user_chosen_annotations_also_go_in_the_legacy_field(self):
        # The service of today reads only {"image", "annotations"}: the
        # tests pick pod-simulator scenarios with these.
        s = self.spawner(user_annotation_keys=["podsim.kubespawn.io/scenario"])
        s.user_options = {"annotations": {"podsim.kubespawn.io/scenario": "slow-start", "other": "x"}}
        self.start(s)
        body = self.sent()
        self.assertEqual(body["annotations"], {"podsim.kubespawn.io/scenario": "slow-start"})
        self.assertEqual(body["pod"]["metadata"]["annotations"]["podsim.kubespawn.io/scenario"], "slow-start")
        self.assertNotIn("other", body["pod"]["metadata"]["annotations"])

    def test_labels_the_service_sets_are_left_to_it(self):
        s = self.spawner(common_labels={"app.kubernetes.io/managed-by": "kubespawner", "app": "jupyterhub"},
                         extra_labels={"kubespawn.io/instance": "x"}, extra_annotations={"kubespawn.io/key": "y"})
        with self.assertLogs(s.log, "WARNING"):
            self.start(s)
        meta = self.sent()["pod"]["metadata"]
        self.assertNotIn("app.kubernetes.io/managed-by", meta["labels"])
        self.assertNotIn("kubespawn.io/instance", meta["labels"])
        self.assertNotIn("kubespawn.io/key", meta["annotations"])
        self.assertEqual(meta["labels"]["app"], "jupyterhub")

    def test_modify_pod_hook_sees_and_changes_the_pod(self):
        async def hook(spawner, pod):
            pod["spec"]["containers"][0]["env"].append({"name": "HOOKED", "value": spawner.user.name})
            pod["metadata"]["labels"]["hooked"] = "yes"
            return pod

        s = self.spawner(modify_pod_hook=hook)
        self.start(s)
        pod = self.sent()["pod"]
        self.assertIn({"name": "HOOKED", "value": "alice"}, pod["spec"]["containers"][0]["env"])
        self.assertEqual(pod["metadata"]["labels"]["hooked"], "yes")

    def test_security_contexts_resources_and_placement(self):
        s = self.spawner(
            uid=lambda sp: 1001, gid=100, supplemental_gids=[10, 20], privileged=True,
            allow_privilege_escalation=None, container_security_context={"readOnlyRootFilesystem": True},
            pod_security_context={"runAsNonRoot": True}, service_account="notebook-{username}",
            scheduler_name="user-scheduler", priority_class_name="users",
            node_affinity_preferred={"b": {"weight": 1, "preference": GPU_NODES}},
            pod_anti_affinity_required=[{"topologyKey": "kubernetes.io/hostname"}],
            extra_containers={"02-b": {"name": "b", "image": "b:1"}, "01-a": {"name": "a", "image": "a:1"}},
            extra_resource_guarantees={"nvidia.com/gpu": 1},
        )
        self.start(s)
        spec = self.sent()["pod"]["spec"]
        self.assertEqual(spec["containers"][0]["securityContext"],
                         {"runAsUser": 1001, "runAsGroup": 100, "privileged": True, "readOnlyRootFilesystem": True})
        self.assertEqual(spec["securityContext"], {"supplementalGroups": [10, 20], "runAsNonRoot": True})
        self.assertEqual(spec["serviceAccountName"], "notebook-alice")
        self.assertNotIn("automountServiceAccountToken", spec, "a service account of its own: the cluster decides")
        self.assertEqual(spec["schedulerName"], "user-scheduler")
        self.assertEqual(spec["priorityClassName"], "users")
        self.assertEqual(spec["affinity"], {
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": GPU_NODES}]},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}]},
        })
        self.assertEqual([c["name"] for c in spec["containers"]], ["notebook", "a", "b"], "dicts sorted by key")
        self.assertEqual(spec["containers"][0]["resources"], {"requests": {"nvidia.com/gpu": "1"}})


class TestBadInput(ManifestTestCase):
    """Bad input: the user sees one sentence; nothing is asked of the
    service (the class creates nothing), or the service refuses before it
    creates anything."""

    def profiled(self, **traits):
        return self.spawner(config=z2jh_config(), **traits)

    def assert_refused(self, s, sentence, *, posts=0):
        e = self.refused(s)
        self.assertIsInstance(e, web.HTTPError, "a rejection, shown to the user, not counted (6.0)")
        self.assertEqual(user_message(e), sentence)
        self.assertEqual(str(e), sentence)
        # What 3.0 to 5.x answer a REST spawn that failed at once (their
        # API's write_error formats log_message with args).
        self.assertEqual(e.log_message % e.args, sentence)
        self.assertEqual(len(self.service.posts()), posts)
        self.assertEqual([m for m in self.service.methods() if m != "POST"], [], "nothing else asked")
        return e

    def test_an_unknown_profile(self):
        s = self.profiled()
        s.user_options = {"profile": "huge"}
        self.assert_refused(s, 'Your server could not start: there is no profile "huge" (choose one of: small, gpu).')

    def test_a_choice_outside_the_profiles_choices(self):
        s = self.profiled()
        s.user_options = {"profile": "gpu", "image": "jax"}
        self.assert_refused(
            s, 'Your server could not start: the profile "GPU" has no choice "jax" for Image'
            " (choose one of: pytorch, tensorflow)."
        )

    def test_an_unlisted_choice_where_none_is_allowed(self):
        s = self.profiled()
        s.user_options = {"profile": "gpu", "image--unlisted-choice": "evil/image:1"}
        self.assert_refused(s, 'Your server could not start: the profile "GPU" accepts no value of your own for Image.')

    def test_an_unlisted_choice_that_does_not_match(self):
        c = z2jh_config()
        c.KubeSpawner.profile_list[1]["profile_options"]["image"]["unlisted_choice"] = {
            "enabled": True, "display_name": "Other image", "validation_regex": "^example\\.org/.+:.+$",
            "validation_message": "Must be an image of example.org", "kubespawner_override": {"image": "{value}"},
        }
        s = self.spawner(config=c)
        s.user_options = {"profile": "gpu", "image--unlisted-choice": "evil/image:1"}
        self.assert_refused(s, 'Your server could not start: "evil/image:1" is not valid for Image: Must be an image of example.org.')
        # A value that matches is used.
        s = self.spawner(config=c)
        s.user_options = {"profile": "gpu", "image--unlisted-choice": "example.org/mine:3"}
        self.start(s)
        self.assertEqual(self.service.posts()[-1]["pod"]["spec"]["containers"][0]["image"], "example.org/mine:3")

    def test_a_value_with_a_percent_sign(self):
        s = self.profiled()
        s.user_options = {"profile": "gpu", "image": "100%"}
        self.assert_refused(
            s, 'Your server could not start: the profile "GPU" has no choice "100%" for Image'
            " (choose one of: pytorch, tensorflow)."
        )

    def test_user_options_of_the_wrong_type(self):
        s = self.profiled()
        s.user_options = {"profile": ["gpu"]}
        self.assert_refused(s, "Your server could not start: the profile must be given as a name.")

    def test_an_override_the_policy_forbids(self):
        c = z2jh_config()
        c.KubeSpawner.profile_list[1]["kubespawner_override"]["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
        s = self.spawner(config=c)
        s.user_options = {"profile": "gpu"}
        self.service.answer("POST", (403, {"error": "hostPath volumes are not allowed", "field": "spec.volumes[0].hostPath"}))
        self.assert_refused(
            s, 'Your server could not start: the profile "GPU" asks for what this hub does not allow:'
            " hostPath volumes are not allowed (spec.volumes[0].hostPath).", posts=1,
        )

    def test_a_pod_the_api_server_rejects(self):
        s = self.spawner()
        self.service.answer("POST", (200, result_stream(
            state="failed", reason="rejected", status=422,
            error='pods "kubespawn-x" is forbidden: violates PodSecurity "baseline:latest": privileged (container "notebook")',
        )))
        e = self.assert_refused(
            s, 'Your server could not start: the cluster refused its pod (pods "kubespawn-x" is forbidden:'
            ' violates PodSecurity "baseline:latest": privileged (container "notebook")).', posts=1,
        )
        self.assertEqual(e.reason, "rejected")

    def test_claim_failures(self):
        for reason, sentence in {
            "claim_conflict": "Your server could not start: its storage volume belongs to something else.",
            "claim_incompatible": "Your server could not start: its storage volume does not match this configuration"
            " (size, storage class or access modes).",
            "claim_terminating": "Your server could not start: its storage volume is being deleted; try again in a minute.",
        }.items():
            with self.subTest(reason=reason):
                self.service.bodies.clear()
                self.service.requests.clear()
                s = self.spawner(storage_pvc_ensure=True, storage_capacity="1Gi")
                self.service.answer("POST", (200, result_stream(state="failed", reason=reason, status=409, error="detail")))
                self.assert_refused(s, sentence, posts=1)

    def test_a_misconfigured_profile_is_the_hubs_error(self):
        c = z2jh_config()
        c.KubeSpawner.profile_list[1]["kubespawner_override"]["no_such_setting"] = 1
        s = self.spawner(config=c)
        s.user_options = {"profile": "gpu"}
        e = self.refused(s)
        self.assertIsInstance(e, web.HTTPError)
        self.assertGreaterEqual(e.status_code, 500, "the hub's error: counted (6.0)")
        self.assertEqual(user_message(e), 'Your server could not start: this hub\'s profile "GPU" is misconfigured; tell its administrators.')
        self.assertIn("no_such_setting", e.log_message)
        self.assertEqual(self.service.posts(), [])

    def test_storage_without_a_capacity(self):
        s = self.spawner(storage_pvc_ensure=True)
        e = self.refused(s)
        self.assertIn("storage_capacity", e.log_message)
        self.assertEqual(self.service.posts(), [])

    def test_internal_ssl_is_refused(self):
        s = self.spawner()
        s.internal_ssl = True
        e = self.refused(s)
        self.assertIn("internal_ssl", e.log_message)
        self.assertEqual(self.service.posts(), [])


class TestForm(ManifestTestCase):
    def form(self, s):
        form = s.options_form
        self.assertTrue(callable(form))
        return asyncio.run(s.get_options_form())

    def test_no_profiles_no_form(self):
        self.assertEqual(asyncio.run(self.spawner().get_options_form()), "")

    def test_the_form_offers_the_profiles_and_their_choices(self):
        s = self.spawner(config=z2jh_config())
        html = self.form(s)
        self.assertIn('name="profile"', html)
        self.assertIn('id="profile-item-small" value="small" checked', html)
        self.assertIn('name="profile-option-gpu--image"', html)
        self.assertIn('<option value="tensorflow" selected>TensorFlow</option>', html)
        self.assertIn('<option value="pytorch">PyTorch</option>', html)

    def test_the_last_choice_is_preselected(self):
        s = self.spawner(config=z2jh_config())
        s.user_options = {"profile": "gpu", "image": "pytorch"}
        html = self.form(s)
        self.assertIn('id="profile-item-gpu" value="gpu" checked', html)
        self.assertIn('<option value="pytorch" selected>PyTorch</option>', html)

    def test_options_from_form(self):
        s = self.spawner(config=z2jh_config())
        opts = asyncio.run(s.run_options_from_form({
            "profile": ["gpu"], "profile-option-gpu--image": ["pytorch"], "profile-option-small--x": ["y"],
        }))
        self.assertEqual(opts, {"profile": "gpu", "image": "pytorch"})

    def test_options_from_form_refuses_a_choice_outside(self):
        s = self.spawner(config=z2jh_config())
        with self.assertRaises(web.HTTPError) as cm:
            asyncio.run(s.run_options_from_form({"profile": ["gpu"], "profile-option-gpu--image": ["jax"]}))
        self.assertEqual(
            str(cm.exception), 'Your server could not start: the profile "GPU" has no choice "jax" for Image'
            " (choose one of: pytorch, tensorflow)."
        )

    def test_a_custom_form_template(self):
        s = self.spawner(config=z2jh_config(), profile_form_template="{% for p in profile_list %}[{{ p.slug }}]{% endfor %}")
        self.assertEqual(self.form(s), "[small][gpu]")


class TestDeleteForever(ManifestTestCase):
    """delete_forever: the hub calls it (no arguments) on a stopped spawner
    when the user is deleted (every server) or a named server removed, and
    then forgets it whatever happens: it must not return before the claims
    are gone, and says what is left if it gives up."""

    def test_deletes_the_claims_of_the_key(self):
        s = self.spawner(name="gpu")
        self.service.answer("DELETE", (200, {"state": "deleted", "claims": [{"kind": "PersistentVolumeClaim", "name": "claim-alice--gpu", "uid": "u-9"}]}))
        with self.assertLogs(s.log, "INFO") as logs:
            asyncio.run(s.delete_forever())
        self.assertEqual(self.service.requests, [("DELETE", "/users/alice%2Fgpu/claims")])
        self.assertTrue(any("claim-alice--gpu" in line for line in logs.output))

    def test_waits_while_the_pod_still_exists(self):
        # The hub forgot a stop the service still owns (stop() raised):
        # 409 until the pod is gone.
        s = self.spawner()
        self.service.answer("DELETE", (409, {"error": "the pod exists; stop it first"}), (200, {"state": "deleted", "claims": []}))
        asyncio.run(s.delete_forever())
        self.assertEqual(self.service.methods(), ["DELETE", "DELETE"])

    def test_gives_up_saying_what_is_left(self):
        s = self.spawner(stop_confirm_timeout=0.2)
        self.service.answer("DELETE", (503, {"error": "rebuilding"}))
        with self.assertRaises(Exception) as cm:
            asyncio.run(s.delete_forever())
        self.assertIn("claims of alice were not deleted", str(cm.exception))

    def test_refused_at_once(self):
        s = self.spawner()
        self.service.answer("DELETE", (403, {"error": "not this instance's"}))
        with self.assertRaises(Exception):
            asyncio.run(s.delete_forever())
        self.assertEqual(self.service.methods(), ["DELETE"])

    def test_delete_pvc_false_keeps_them(self):
        s = self.spawner(delete_pvc=False)
        asyncio.run(s.delete_forever())
        self.assertEqual(self.service.requests, [])

    def test_forgets_the_remembered_claim(self):
        s = self.spawner()
        s.load_state({"pvc_name": "claim-alice"})
        self.service.answer("DELETE", (200, {"deleted": [{"name": "claim-alice", "uid": "u"}]}))
        asyncio.run(s.delete_forever())
        self.assertEqual(s.get_state(), {})


if __name__ == "__main__":
    unittest.main()
