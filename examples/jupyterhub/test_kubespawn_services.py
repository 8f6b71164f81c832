"""services_enabled: where the hub connects to the server (the Service's
DNS name from dns_name_template, or its ClusterIP with {cluster_ip}), from
what the spawner service's start and poll answers report.
"""

import asyncio
import unittest

import kubespawn_spawner as ks
from kubespawn_testlib import RUNNING_RESULT, StandInService, fake_hub, fake_user, give_server, result_stream, user_message

SERVICE = "jupyter-alice"


def running(**extra):
    """The service's start answer with the Service it created."""
    objects = [{"kind": "Service", "name": SERVICE, "uid": "s-1", "created": True,
                "clusterIP": "10.96.0.42", "dnsName": f"{SERVICE}.jhub.svc.cluster.local"}]
    return dict(RUNNING_RESULT, namespace="jhub", objects=objects, **extra)


class ServicesTestCase(unittest.TestCase):
    def setUp(self):
        self.service = StandInService()
        self.addCleanup(self.service.close)

    def spawner(self, **traits):
        traits.setdefault("stop_retry_interval", 0.01)
        traits.setdefault("services_enabled", True)
        s = ks.KubespawnSpawner(user=fake_user(), hub=fake_hub(), service_url=self.service.url, **traits)
        s.api_token = "token-abc"
        return give_server(s)

    def start(self, s, result):
        self.service.answer("POST", (200, result_stream(**result)))
        return asyncio.run(s.start())

    def test_the_dns_name_by_default(self):
        s = self.spawner()
        self.assertEqual(self.start(s, running()), "http://jupyter-alice.jhub.svc.cluster.local:8888")

    def test_cluster_ip(self):
        # No cluster DNS where the hub runs: the ClusterIP the service read
        # back from the API server.
        s = self.spawner(dns_name_template="{cluster_ip}")
        self.assertEqual(self.start(s, running()), "http://10.96.0.42:8888")

    def test_ipv6_cluster_ip_is_bracketed(self):
        s = self.spawner(dns_name_template="{cluster_ip}")
        result = running()
        result["objects"][0]["clusterIP"] = "fd00:96::2a"
        self.assertEqual(self.start(s, result), "http://[fd00:96::2a]:8888")

    def test_every_field(self):
        s = self.spawner(dns_name_template="{name}.{namespace}.via.{cluster_ip}")
        self.assertEqual(self.start(s, running()), "http://jupyter-alice.jhub.via.10.96.0.42:8888")

    def test_no_cluster_ip_fails_the_start_clearly(self):
        # The service could not read the Service back (or it is headless):
        # the start fails with a sentence, the hub then stops the server;
        # never a guess at another address.
        s = self.spawner(dns_name_template="{cluster_ip}")
        result = running()
        del result["objects"][0]["clusterIP"]
        with self.assertRaises(Exception) as cm:
            self.start(s, result)
        self.assertIn("address", user_message(cm.exception))
        self.assertIn(SERVICE, getattr(cm.exception, "log_message", ""))
        s = self.spawner(dns_name_template="{cluster_ip}")
        with self.assertRaises(Exception):
            self.start(s, dict(running(), objects=[]))

    def test_get_url_after_a_hub_restart(self):
        # The hub checks each running server's URL at start-up (get_url):
        # the poll answer names the namespace, the ClusterIP comes from the
        # state saved at the start.
        s = self.spawner(dns_name_template="{cluster_ip}")
        self.start(s, running())
        state = s.get_state()
        self.assertEqual(state.get("cluster_ip"), "10.96.0.42")

        restarted = self.spawner(dns_name_template="{cluster_ip}")
        restarted.load_state(state)
        self.service.answer("GET", (200, dict(RUNNING_RESULT, namespace="jhub", state="running", ready=True)))
        self.assertEqual(asyncio.run(restarted.get_url()), "http://10.96.0.42:8888/user/alice/")

        dns = self.spawner()
        dns.load_state(state)
        self.assertEqual(asyncio.run(dns.get_url()), "http://jupyter-alice.jhub.svc.cluster.local:8888/user/alice/")

    def test_the_cluster_ip_goes_with_the_server(self):
        s = self.spawner(dns_name_template="{cluster_ip}")
        self.start(s, running())
        s.clear_state()
        self.assertNotIn("cluster_ip", s.get_state(), "the Service goes with the pod")

    def test_without_services_the_pod_ip(self):
        s = self.spawner(services_enabled=False, dns_name_template="{cluster_ip}")
        self.assertEqual(self.start(s, running()), ("10.0.0.7", 8888))


if __name__ == "__main__":
    unittest.main()
