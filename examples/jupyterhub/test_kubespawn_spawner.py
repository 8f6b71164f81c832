"""Tests of kubespawn_spawner.py without a hub: the class against a stand-in
spawner service on loopback, one event loop per test (asyncio.run).

Run with Debian's interpreter (it has jupyterhub): ``/usr/bin/python3 -m
unittest discover -p 'test_*.py' -v`` in this directory (every test_*.py:
this file, test_kubespawn_manifest.py, test_kubespawn_versions.py). The Go
test TestSpawnerModule (spawner_module_test.go) runs them as part of the
package's tests; the hub-level behaviour is tested in jupyterhub_test.go
against the real hub.
"""

import asyncio
import unittest
from unittest import mock

from tornado.simple_httpclient import SimpleAsyncHTTPClient

import kubespawn_spawner as ks
from kubespawn_testlib import StandInService, fake_hub, fake_user, give_server, result_stream


RUNNING = (200, {"state": "running", "ready": True, "podIP": "10.0.0.7", "serviceState": "running"})
NOT_FOUND = (404, {"state": "stopped", "reason": "NotFound"})


class SpawnerTestCase(unittest.TestCase):
    def setUp(self):
        self.service = StandInService()
        self.addCleanup(self.service.close)

    def spawner(self, user="alice", with_server=False, **traits):
        s = ks.KubespawnSpawner(
            user=fake_user(user), hub=fake_hub(), service_url=self.service.url, stop_retry_interval=0.01, **traits
        )
        if with_server:
            give_server(s)
        return s


class TestPollExitStatus(SpawnerTestCase):
    """poll(): None while running or unknown; when stopped, the container's
    exit status if known, 1 if the server ended in an unknown way, 0 for a
    spawner that has no server (JupyterHub's Spawner.poll contract)."""

    def poll(self, spawner):
        return asyncio.run(spawner.poll())

    def test_running_pending_and_unknown_poll_as_running(self):
        s = self.spawner(with_server=True)
        for answer in [
            RUNNING,
            (200, {"state": "pending"}),
            (200, {"state": "unknown"}),
            (404, {"state": "stopped", "reason": "NotFound", "serviceState": "starting"}),
            (404, {"state": "stopped", "reason": "NotFound", "serviceState": "stop-pending"}),
            (503, {"error": "rebuilding the user table"}),
            (401, {"error": "unauthorized"}),
        ]:
            with self.subTest(answer=answer):
                self.service.answer("GET", answer)
                self.assertIsNone(self.poll(s))

    def test_unreachable_service_polls_as_running(self):
        s = self.spawner(with_server=True)
        self.service.close()
        s.request_timeout = 2
        self.assertIsNone(self.poll(s))

    def test_terminated_pod_reports_its_exit_code_until_the_state_is_cleared(self):
        # The service deletes a pod that terminated on its own before it
        # answers "stopped": the hub's next polls (its poll callback, then
        # User.stop) find NotFound and must report the same exit status.
        s = self.spawner(with_server=True)
        self.service.answer(
            "GET", (200, {"state": "stopped", "reason": "Evicted", "exitCode": 137, "deleted": True}), NOT_FOUND
        )
        self.assertEqual(self.poll(s), 137)
        self.assertEqual(self.poll(s), 137, "the pod deleted after it terminated keeps its exit status")
        self.assertEqual(self.poll(s), 137)
        s.clear_state()
        s.server = None
        self.assertEqual(self.poll(s), 0, "cleared: a spawner without a server is not running")

    def test_clean_exit_reports_zero(self):
        s = self.spawner(with_server=True)
        self.service.answer("GET", (200, {"state": "stopped", "reason": "Completed", "exitCode": 0, "deleted": True}), NOT_FOUND)
        self.assertEqual(self.poll(s), 0)
        self.assertEqual(self.poll(s), 0)

    def test_terminated_without_exit_code_reports_one(self):
        # Failed or evicted before any container ran: it ended, not cleanly.
        s = self.spawner(with_server=True)
        self.service.answer("GET", (200, {"state": "stopped", "reason": "Evicted", "deleted": True}), NOT_FOUND)
        self.assertEqual(self.poll(s), 1)
        self.assertEqual(self.poll(s), 1)

    def test_server_whose_pod_is_gone_reports_one(self):
        # The hub has a server for it, the API server has no pod: it ended
        # without stop(), how is unknown (KubeSpawner's 1).
        s = self.spawner(with_server=True)
        self.service.answer("GET", (404, {"state": "stopped", "reason": "NotFound", "serviceState": "running"}))
        self.assertEqual(self.poll(s), 1)

    def test_spawner_without_server_reports_zero(self):
        # Never started (or stopped): "not running", exit status 0.
        s = self.spawner()
        self.service.answer("GET", NOT_FOUND)
        self.assertEqual(self.poll(s), 0)

    def test_a_new_start_forgets_the_last_exit_status(self):
        s = self.spawner(with_server=True)
        self.service.answer("GET", (200, {"state": "stopped", "exitCode": 137, "deleted": True}))
        self.assertEqual(self.poll(s), 137)
        self.service.answer("POST", (200, result_stream(state="running", pod="p", uid="u", podIP="10.0.0.7")))

        async def start_then_poll():
            await asyncio.ensure_future(s.start())  # a task of its own, as the hub's
            self.service.answer("GET", RUNNING)
            running = await s.poll()
            self.service.answer("GET", NOT_FOUND)
            return running, await s.poll()

        self.assertEqual(asyncio.run(start_then_poll()), (None, 1))

    def test_a_start_in_progress_polls_as_running(self):
        s = self.spawner(with_server=True)
        self.service.answer("GET", NOT_FOUND)

        async def poll_during_start():
            s._start_task = asyncio.ensure_future(asyncio.sleep(3600))
            try:
                return await s.poll()
            finally:
                s._start_task.cancel()

        self.assertIsNone(asyncio.run(poll_during_start()))


class RecordingClient(SimpleAsyncHTTPClient):
    """The module's HTTP client class, counting instances and closes."""

    made = []
    closed = []

    def initialize(self, **kwargs):
        super().initialize(**kwargs)
        RecordingClient.made.append(self)

    def close(self):
        RecordingClient.closed.append(self)
        super().close()


class TestOneClientPerLoop(SpawnerTestCase):
    def setUp(self):
        super().setUp()
        RecordingClient.made, RecordingClient.closed = [], []
        patcher = mock.patch.object(ks, "AsyncHTTPClient", RecordingClient)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.service.answer("GET", RUNNING)

    def test_spawners_of_one_loop_share_a_client_closed_with_the_loop(self):
        spawners = [self.spawner(user=f"u{i}", with_server=True) for i in range(3)]

        async def poll_all():
            return await asyncio.gather(*(s.poll() for s in spawners), *(s.poll() for s in spawners))

        self.assertEqual(asyncio.run(poll_all()), [None] * 6)
        self.assertEqual(len(RecordingClient.made), 1, "one client for the loop")
        self.assertEqual(RecordingClient.closed, RecordingClient.made, "closed when its loop ended")

        # The next loop has a client of its own, closed with it.
        self.assertEqual(asyncio.run(poll_all()), [None] * 6)
        self.assertEqual(len(RecordingClient.made), 2)
        self.assertIsNot(RecordingClient.made[0], RecordingClient.made[1])
        self.assertEqual(RecordingClient.closed, RecordingClient.made)

    def test_the_client_stays_open_while_its_loop_runs(self):
        s = self.spawner(with_server=True)

        async def poll_twice():
            await s.poll()
            await asyncio.sleep(0)
            await s.poll()
            return list(RecordingClient.closed)

        self.assertEqual(asyncio.run(poll_twice()), [], "not closed while the loop runs")
        self.assertEqual(len(RecordingClient.made), 1)
        self.assertEqual(RecordingClient.closed, RecordingClient.made)


class TestProgress(SpawnerTestCase):
    def test_progress_asked_before_start_runs_gets_the_starts_events(self):
        # The hub's progress handler may ask while its hooks (pre_spawn_hook,
        # apply_user_options) still run: the start has not begun yet.
        s = self.spawner(with_server=True)
        self.service.answer("POST", (200, result_stream(state="running", pod="p", uid="u", podIP="10.0.0.7")))

        async def spawn():
            s._spawn_pending = True  # what the hub sets for the whole spawn
            s.clear_state()  # User.spawn, before the hooks and start()
            seen = []

            async def read():
                async for ev in s.progress():
                    seen.append(ev)

            reader = asyncio.ensure_future(read())
            await asyncio.sleep(0)  # the reader is waiting: no start yet
            self.assertFalse(reader.done(), "progress() waits for the start to begin")
            await s.start()
            await asyncio.wait_for(reader, 5)
            return seen

        self.assertEqual(asyncio.run(spawn()), [{"progress": 50, "message": "Started"}])


class TestState(SpawnerTestCase):
    def test_state_holds_nothing_the_spawner_does_not_read(self):
        # The service finds a user's pod by the user's key: nothing of the
        # pod is kept in the hub's database.
        s = self.spawner(with_server=True)
        self.service.answer("POST", (200, result_stream(state="running", pod="kubespawn-p", uid="u-1", podIP="10.0.0.7")))
        self.assertEqual(asyncio.run(s.start()), ("10.0.0.7", 8888))
        self.assertEqual(s.get_state(), {})


if __name__ == "__main__":
    unittest.main()
