"""JupyterHub 4, 5 and 6 paths of kubespawn_spawner.py, with fakes of what
those versions do (kubespawn_testlib: only 3.0 runs here):

- 3.0 to 5.0 time a start() out with gen.with_timeout, which leaves it
  running; 5.1+ use asyncio.wait_for, which cancels it. Either way User.stop
  follows, and nothing of the start may be left: its stream is closed, its
  progress readers end.
- 6.0 counts a failed spawn toward consecutive_failure_limit unless it is a
  SpawnException (or an HTTPError below 500): rejections (bad input, a bad
  image, the policy) must not count, errors must.
- 5.3+ call apply_user_options before start().
- 6.0 nests the REST body's user_options under "user_options".
"""

import asyncio
import unittest
from unittest import mock

import jupyterhub.spawner
from tornado import gen, web

import kubespawn_spawner as ks
from kubespawn_testlib import (
    RUNNING_RESULT,
    Hold,
    Hub53Spawner,
    SpawnException6,
    StandInService,
    fake_hub,
    fake_orm_spawner,
    fake_user,
    give_server,
    hub_spawn_5_3,
    hub_start_5_1,
    hub_start_before_5_1,
    result_stream,
    server_json_body_6_0,
    spawn_status_6_0,
    user_message,
)

PROFILES = [
    {"display_name": "Small", "slug": "small", "default": True},
    {
        "display_name": "Data science",
        "slug": "datascience",
        "kubespawner_override": {"image": "example.org/datascience:1"},
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "base": {"display_name": "Base", "kubespawner_override": {"image": "example.org/base:1"}},
                    "r": {"display_name": "R", "kubespawner_override": {"image": "example.org/r:1"}},
                },
            }
        },
    },
]


class VersionTestCase(unittest.TestCase):
    def setUp(self):
        self.service = StandInService()
        self.addCleanup(self.service.close)

    def spawner(self, cls=ks.KubespawnSpawner, user="alice", **traits):
        traits.setdefault("stop_retry_interval", 0.01)
        s = cls(user=fake_user(user), hub=fake_hub(), service_url=self.service.url, **traits)
        return give_server(s)

    async def wait_async(self, event, what):
        # A bounded wait, from the event loop, for the stand-in's side
        # (another thread): the event is set when the thing happened, the
        # timeout only fails the test.
        ok = await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)
        self.assertTrue(ok, what)


class TestTimedOutStart(VersionTestCase):
    """A start the hub times out: cancelled by 5.1+ before User.stop, left
    running by 3.0 to 5.0 (stop() cancels it). Either way it stops
    cleanly: its stream closes (the service's cancelOnDisconnect), its
    progress() readers end, the DELETE confirms the pod gone."""

    def test_5_1_cancels_the_start_which_closes_its_stream_at_once(self):
        hold = Hold({"progress": 20, "message": "Pulling image"})
        self.service.answer("POST", (200, hold))
        self.service.answer("GET", (200, {"state": "pending", "serviceState": "starting"}))
        self.service.answer("DELETE", (200, {"state": "stopped"}))
        s = self.spawner()
        seen = []

        async def spawn():
            task = asyncio.ensure_future(hub_start_5_1(s, timeout=1))
            # The hub's progress handler reads once the start is under way.
            await self.wait_async(hold.streaming, "the start is under way")

            async def read_progress():
                async for ev in s.progress():
                    seen.append(ev)

            reader = asyncio.ensure_future(read_progress())
            with self.assertRaises(asyncio.TimeoutError):
                await task
            # The cancelled start() has ended (wait_for waits for it), and
            # its progress readers with it; its stream is closed while the
            # hub runs on, not when its event loop ends.
            await asyncio.wait_for(reader, 5)
            await self.wait_async(hold.disconnected, "the cancelled start closed its stream")

        asyncio.run(spawn())
        self.assertEqual(seen, [{"progress": 20, "message": "Pulling image"}])
        self.assertIn(("DELETE", "/users/alice/server"), self.service.requests, "User.stop's stop() still ran")
        self.assertFalse(hold.release.is_set())

    def test_before_5_1_stop_cancels_the_start_after_its_delete(self):
        # 3.0 to 5.0 leave the timed-out start() running: stop() sends the
        # DELETE first (the service then cancels the start as a stop, and
        # says so), then cancels its own start(), whose stream closes.
        hold = Hold({"progress": 20, "message": "Pulling image"})
        self.service.answer("POST", (200, hold))
        self.service.answer("GET", (200, {"state": "pending", "serviceState": "starting"}))
        self.service.answer("DELETE", (200, {"state": "stopped"}))
        s = self.spawner()

        async def spawn():
            task = asyncio.ensure_future(hub_start_before_5_1(s, timeout=1))
            await self.wait_async(hold.streaming, "the start is under way")
            start = s._start_task
            with self.assertRaises(gen.TimeoutError):
                await task
            # stop() returned: the start it cancelled has ended.
            await asyncio.wait([start], timeout=5)
            self.assertTrue(start.cancelled(), "stop() cancelled the start the hub left running")
            await self.wait_async(hold.disconnected, "the cancelled start closed its stream")

        asyncio.run(spawn())
        reqs = [r for r in self.service.requests if r[0] in ("DELETE", "DISCONNECT")]
        self.assertEqual(reqs[0], ("DELETE", "/users/alice/server"), "the DELETE reached the service first")
        self.assertEqual(reqs[1][0], "DISCONNECT")

    def test_a_start_cancelled_before_its_request_sends_nothing(self):
        self.service.answer("POST", (200, result_stream(**RUNNING_RESULT)))
        s = self.spawner()

        async def cancel_at_once():
            t = asyncio.ensure_future(s.start())
            await asyncio.sleep(0)
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t

        asyncio.run(cancel_at_once())
        self.assertEqual(self.service.posts(), [])


class TestFailureCounting(VersionTestCase):
    """6.0 does not count a SpawnException (a rejection) toward
    consecutive_failure_limit; where it does not exist (3.0 to 5.x) the
    class raises an HTTPError subclass with the same interface, whose
    str() is the user's sentence."""

    def start_failing(self, s, **result):
        self.service.answer("POST", (200, result_stream(state="failed", **result)))
        with self.assertRaises(Exception) as cm:
            asyncio.run(s.start())
        return cm.exception

    def test_6_0_a_bad_image_is_a_spawn_exception_not_counted(self):
        with mock.patch.object(jupyterhub.spawner, "SpawnException", SpawnException6, create=True):
            s = self.spawner(image="example.org/no-such:image")
            with self.assertLogs(s.log, "ERROR") as logs:
                e = self.start_failing(s, reason="image_pull", error="pulling example.org/no-such:image: not found", status=422)
        self.assertIsInstance(e, SpawnException6)
        self.assertEqual(spawn_status_6_0(e), "failure", "not counted toward consecutive_failure_limit")
        self.assertEqual(e.reason, "image_pull")
        self.assertEqual(
            user_message(e), 'Your server could not start: its image "example.org/no-such:image" could not be pulled.'
        )
        # 6.0's SpawnException keeps only the message (HTTPError's init
        # overwrites its log_message): the class logs the detail itself.
        self.assertIn("start of alice failed (image_pull): pulling example.org/no-such:image: not found", logs.output[0])

    def test_6_0_a_cluster_error_is_counted(self):
        with mock.patch.object(jupyterhub.spawner, "SpawnException", SpawnException6, create=True):
            s = self.spawner()
            e = self.start_failing(s, reason="create_failed", error="etcdserver: request timed out", status=503)
        self.assertNotIsInstance(e, SpawnException6)
        self.assertEqual(spawn_status_6_0(e), "error", "an error of the system counts")
        self.assertEqual(user_message(e), "Your server could not start: the cluster could not create its pod.")

    def test_6_0_bad_input_is_a_spawn_exception(self):
        with mock.patch.object(jupyterhub.spawner, "SpawnException", SpawnException6, create=True):
            s = self.spawner(profile_list=PROFILES)
            s.user_options = {"profile": "gpu"}
            with self.assertRaises(SpawnException6) as cm:
                asyncio.run(s.start())
        self.assertEqual(spawn_status_6_0(cm.exception), "failure")
        self.assertEqual(
            user_message(cm.exception),
            'Your server could not start: there is no profile "gpu" (choose one of: small, datascience).',
        )
        self.assertEqual(self.service.posts(), [], "refused before asking the service")

    def test_before_6_0_the_same_interface_on_an_http_error(self):
        self.assertFalse(hasattr(jupyterhub.spawner, "SpawnException"), "3.0 has no SpawnException")
        s = self.spawner(image="example.org/no-such:image")
        e = self.start_failing(s, reason="image_pull", error="not found", status=422)
        self.assertIsInstance(e, web.HTTPError)
        self.assertEqual(str(e), 'Your server could not start: its image "example.org/no-such:image" could not be pulled.')
        self.assertEqual(e.jupyterhub_message, str(e))
        self.assertEqual(e.reason, "image_pull")

    def test_a_policy_refusal_names_the_field(self):
        # The service refuses before creating anything: 403 and the field.
        with mock.patch.object(jupyterhub.spawner, "SpawnException", SpawnException6, create=True):
            s = self.spawner(extra_pod_config={"hostNetwork": True})
            self.service.answer(
                "POST", (403, {"error": "hostNetwork is not allowed by this service's policy", "field": "spec.hostNetwork"})
            )
            with self.assertRaises(SpawnException6) as cm:
                asyncio.run(s.start())
        self.assertEqual(cm.exception.status_code, 403)
        self.assertEqual(spawn_status_6_0(cm.exception), "failure")
        self.assertEqual(
            user_message(cm.exception),
            "Your server could not start: hostNetwork is not allowed by this service's policy (spec.hostNetwork).",
        )
        self.assertEqual(self.service.methods(), ["POST"])


class TestApplyUserOptions(VersionTestCase):
    """5.3+ call apply_user_options (after clear_state, before
    pre_spawn_hook and start()): the class applies the profile there, so
    that bad input is refused before anything starts and the hooks see
    the profile's settings; start() does not apply it again."""

    def test_the_profile_is_applied_by_apply_user_options(self):
        calls = []

        def image(spawner):
            calls.append(1)
            return "example.org/counted:1"

        profiles = [{"display_name": "One", "slug": "one", "kubespawner_override": {"image": image}}]
        seen_by_hook = []
        s = self.spawner(
            Hub53Spawner, profile_list=profiles, pre_spawn_hook=lambda sp: seen_by_hook.append(sp.image)
        )
        self.assertIsNotNone(s.apply_user_options, "the class installs its hook where the hub has the trait")
        self.service.answer("POST", (200, result_stream(**RUNNING_RESULT)))
        self.assertEqual(asyncio.run(hub_spawn_5_3(s, {"profile": "one"})), ("10.0.0.7", 8888))
        self.assertEqual(seen_by_hook, ["example.org/counted:1"], "pre_spawn_hook saw the profile's image")
        self.assertEqual(calls, [1], "applied once")
        self.assertEqual(self.service.posts()[0]["pod"]["spec"]["containers"][0]["image"], "example.org/counted:1")

    def test_bad_input_is_refused_by_apply_user_options_with_its_sentence(self):
        s = self.spawner(Hub53Spawner, profile_list=PROFILES)
        with self.assertRaises(web.HTTPError) as cm:
            asyncio.run(hub_spawn_5_3(s, {"profile": "datascience", "image": "python"}))
        self.assertEqual(
            user_message(cm.exception),
            'Your server could not start: the profile "Data science" has no choice "python" for Image'
            " (choose one of: base, r).",
        )
        self.assertEqual(self.service.requests, [], "nothing was asked of the service")

    def test_an_operator_hook_is_kept_and_start_applies_the_profile(self):
        s = self.spawner(
            Hub53Spawner, profile_list=PROFILES, apply_user_options=lambda sp, opts: setattr(sp, "cpu_limit", 2.0)
        )
        self.service.answer("POST", (200, result_stream(**RUNNING_RESULT)))
        asyncio.run(hub_spawn_5_3(s, {"profile": "datascience", "image": "r"}))
        c = self.service.posts()[0]["pod"]["spec"]["containers"][0]
        self.assertEqual(c["image"], "example.org/r:1")
        self.assertEqual(c["resources"]["limits"]["cpu"], "2")


class TestNestedUserOptions(VersionTestCase):
    """6.0 takes a REST body's user_options from its "user_options" key (a
    body without it, and without "display_name", is the user_options as
    before). A client written for 6.0 talking to an older hub gets the
    whole body as user_options: the class takes the nested ones."""

    def started_image(self, user_options):
        s = self.spawner(profile_list=PROFILES)
        s.user_options = user_options
        self.service.answer("POST", (200, result_stream(**RUNNING_RESULT)))
        asyncio.run(s.start())
        return self.service.posts()[-1]["pod"]["spec"]["containers"][0]["image"]

    def test_a_6_0_body_on_6_0(self):
        body = {"display_name": "My server", "user_options": {"profile": "datascience", "image": "r"}}
        self.assertEqual(self.started_image(server_json_body_6_0(body)), "example.org/r:1")

    def test_a_6_0_body_on_an_older_hub(self):
        body = {"display_name": "My server", "user_options": {"profile": "datascience", "image": "r"}}
        self.assertEqual(self.started_image(body), "example.org/r:1")

    def test_a_flat_body_on_either(self):
        body = {"profile": "datascience", "image": "base"}
        self.assertEqual(self.started_image(server_json_body_6_0(dict(body))), "example.org/base:1")
        self.assertEqual(self.started_image(dict(body)), "example.org/base:1")


class TestRename(VersionTestCase):
    """6.0 renames stopped named servers (Spawner.rename may refuse). The
    service keeps a server's claims under its key (user/server): a server
    with storage cannot change its name without leaving it behind."""

    def test_a_server_with_storage_is_not_renamed(self):
        s = ks.KubespawnSpawner(
            user=fake_user(), hub=fake_hub(), orm_spawner=fake_orm_spawner("gpu"), service_url=self.service.url,
            storage_pvc_ensure=True, storage_capacity="1Gi",
        )
        with self.assertRaises(web.HTTPError) as cm:
            asyncio.run(s.rename("gpu", "big"))
        self.assertEqual(
            user_message(cm.exception),
            'The server "gpu" keeps its storage under its name: it cannot be renamed (its storage would be left behind).',
        )

    def test_a_server_without_storage_is(self):
        s = ks.KubespawnSpawner(
            user=fake_user(), hub=fake_hub(), orm_spawner=fake_orm_spawner("gpu"), service_url=self.service.url
        )
        asyncio.run(s.rename("gpu", "big"))


if __name__ == "__main__":
    unittest.main()
