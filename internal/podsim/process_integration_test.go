//go:build integration

package podsim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/childproc"
	"github.com/kubespawn/kubespawn/internal/podproc"
	"github.com/kubespawn/kubespawn/internal/podsim"
)

const processNode = "podsim-process-node"

// procEnv is one process-pod test: its namespace and client (testEnv), the
// process simulator and the helper binary.
type procEnv struct {
	*testEnv
	sim    *podsim.Simulator
	helper string
}

// startProcessSim starts a simulator of its own that runs the pods of
// RuntimeClass podsim.DefaultProcessRuntimeClass. Its pods are created bound
// to its node, so the package's shared simulator leaves them alone; the
// caller is not parallel, so this one competes with the shared one for no
// unbound pod (see TestPodIPOption).
func startProcessSim(t *testing.T, e *testEnv) *podsim.Simulator {
	t.Helper()
	verifyNoProcessLeft(t)
	return startSim(t, e, processOptions(t, processNode))
}

// startSim starts a simulator of its own with opts (msgAndArgs say what a
// failed start means) and, when the test ends, stops it and deletes its
// Node: no test's extra simulator outlives it or leaves its Node to the
// next.
func startSim(t *testing.T, e *testEnv, opts podsim.Options, msgAndArgs ...any) *podsim.Simulator {
	t.Helper()
	s, err := podsim.Start(context.Background(), e.client, opts)
	require.NoError(t, err, msgAndArgs...)
	t.Cleanup(func() {
		s.Stop()
		_ = e.client.CoreV1().Nodes().Delete(context.Background(), s.NodeName(), metav1.DeleteOptions{})
	})
	return s
}

// processOptions are the options of a simulator on node that runs the pods
// of RuntimeClass podsim.DefaultProcessRuntimeClass as processes, in a
// directory of the test's.
func processOptions(t *testing.T, node string) podsim.Options {
	return podsim.Options{NodeName: node, ProcessRuntimeClass: podsim.DefaultProcessRuntimeClass, ProcessDir: t.TempDir()}
}

// verifyNoProcessLeft checks, when the test ends, that no process a
// simulator started outlives it. Called before the test starts its
// simulators, it runs after their Stops (cleanups run last first), so it
// sees the processes of all of them.
func verifyNoProcessLeft(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { podproc.VerifyNone(t) })
}

// processPod is a pod of the process runtime, bound to the process node,
// that runs the helper with args.
func (pe *procEnv) processPod(name string, args ...string) *v1.Pod {
	p := newPod(name)
	p.Spec.NodeName = processNode
	p.Spec.RuntimeClassName = ptr.To(podsim.DefaultProcessRuntimeClass)
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	p.Spec.Containers[0].Command = []string{pe.helper}
	p.Spec.Containers[0].Args = args
	return p
}

// create creates the pod and, if the test fails, prints its process's log.
func (pe *procEnv) create(p *v1.Pod) *v1.Pod {
	pe.t.Helper()
	created := pe.testEnv.create(p)
	pe.t.Cleanup(func() {
		if pe.t.Failed() {
			pe.t.Logf("process log of pod %s/%s:\n%s", pe.ns, p.Name, pe.sim.ProcessLogTail(pe.ns, p.Name, 40))
		}
	})
	return created
}

// serverPod is a process pod whose helper serves HTTP on port at the
// pod's IP (the --ip=0.0.0.0 it is given is rewritten to that IP), with
// extra arguments after.
func (pe *procEnv) serverPod(name string, port int, extra ...string) *v1.Pod {
	return pe.processPod(name, append([]string{"--ip=0.0.0.0", "--port=" + strconv.Itoa(port)}, extra...)...)
}

// inTempDir gives the pod a fresh working directory and returns it: the
// helper writes its start record and the signals it gets there, for the
// test to read.
func inTempDir(t *testing.T, p *v1.Pod) string {
	t.Helper()
	dir := t.TempDir()
	p.Spec.Containers[0].WorkingDir = dir
	return dir
}

// exposeHealthz declares port on the pod's container and gives it a
// readiness probe of the helper's /healthz there, run every second.
func exposeHealthz(p *v1.Pod, port int) {
	exposePort(p, port)
	p.Spec.Containers[0].ReadinessProbe = &v1.Probe{
		ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(int32(port))}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
}

// exposePort declares port on the pod's container.
func exposePort(p *v1.Pod, port int) {
	p.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: int32(port)}}
}

// waitProbe503 waits for the Warning event of a readiness probe that got
// the helper's 503 from /healthz.
func (pe *procEnv) waitProbe503(uid types.UID) {
	pe.t.Helper()
	pe.waitEventsFunc(uid, "Unhealthy", func(evs []v1.Event) bool {
		return slices.ContainsFunc(evs, func(ev v1.Event) bool {
			return ev.Reason == "Unhealthy" && ev.Type == v1.EventTypeWarning &&
				ev.Message == "Readiness probe failed: HTTP probe failed with statuscode: 503"
		})
	})
}

// waitInfo waits until the helper answers /info at hostPort and returns
// its start record.
func waitInfo(t *testing.T, hostPort string, msgAndArgs ...any) startRecord {
	t.Helper()
	var info startRecord
	require.Eventually(t, func() bool {
		code, body, err := get("http://" + hostPort + "/info")
		return err == nil && code == http.StatusOK && json.Unmarshal([]byte(body), &info) == nil
	}, time.Minute, 20*time.Millisecond, msgAndArgs...)
	return info
}

// createSecret creates the Secret name, with data, in the test's namespace.
func (pe *procEnv) createSecret(name string, data map[string][]byte) {
	pe.t.Helper()
	_, err := pe.client.CoreV1().Secrets(pe.ns).Create(pe.ctx, &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data,
	}, metav1.CreateOptions{})
	require.NoError(pe.t, err)
}

// secretKeyEnv is the environment variable name set from key of Secret
// secret.
func secretKeyEnv(name, secret, key string) v1.EnvVar {
	return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{
		LocalObjectReference: v1.LocalObjectReference{Name: secret}, Key: key}}}
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := childproc.FreePort()
	require.NoError(t, err)
	return port
}

func running(p *v1.Pod) bool {
	return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil
}

// get fetches url with a short timeout; it never goes through a proxy.
func get(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// startRecord is what the helper writes to start.json (and serves in /info).
type startRecord struct {
	Args []string          `json:"args"`
	Env  map[string]string `json:"env"`
	Cwd  string            `json:"cwd"`
	Addr string            `json:"addr"`
}

func readStart(t *testing.T, path string) startRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var r startRecord
	require.NoError(t, json.Unmarshal(b, &r))
	return r
}

// TestProcessPods runs real processes as pods. Not parallel (it runs a
// simulator of its own, see startProcessSim); its subtests are.
func TestProcessPods(t *testing.T) {
	e := setup(t)
	helper := buildHelper(t)
	s := startProcessSim(t, e)
	env := func(t *testing.T) *procEnv { return &procEnv{testEnv: setup(t), sim: s, helper: helper} }

	t.Run("RuntimeClassAdmissionNeedsTheObject", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		p := pe.processPod("no-class")
		p.Spec.RuntimeClassName = ptr.To("podsim-no-such-class")
		_, err := pe.client.CoreV1().Pods(pe.ns).Create(pe.ctx, p, metav1.CreateOptions{})
		require.Error(t, err, "a pod naming a missing RuntimeClass was admitted")
		assert.True(t, apierrors.IsForbidden(err), "%v", err)
		require.NoError(t, podsim.EnsureRuntimeClass(pe.ctx, pe.client, podsim.DefaultProcessRuntimeClass), "EnsureRuntimeClass is idempotent")
	})

	t.Run("ReadyThroughHTTPGetAtItsOwnIP", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		port := freePort(t)
		p := pe.serverPod("http", port, "--ready-file=ready")
		dir := inTempDir(t, p)
		exposeHealthz(p, port)
		pod := pe.create(p)

		got := pe.waitPod(pod.Name, time.Minute, "running", running)
		assert.Equal(t, v1.PodRunning, got.Status.Phase)
		cs := got.Status.ContainerStatuses[0]
		assert.False(t, cs.State.Running.StartedAt.IsZero(), "startedAt")
		assert.False(t, cs.Ready, "Ready before its readiness probe passed")
		assert.False(t, conditionTrue(got, v1.PodReady))
		ip := got.Status.PodIP
		addr, err := netip.ParseAddr(ip)
		require.NoError(t, err)
		assert.True(t, netip.MustParsePrefix("127.244.0.0/16").Contains(addr), ip)

		// It listens at the pod's IP, and only there: --ip=0.0.0.0 was
		// rewritten.
		hostPort := net.JoinHostPort(ip, strconv.Itoa(port))
		info := waitInfo(t, hostPort)
		assert.Equal(t, hostPort, info.Addr)
		assert.Contains(t, info.Args, "--ip="+ip)
		assert.Equal(t, dir, info.Cwd, "workingDir")
		code, _, err := get("http://" + hostPort + "/healthz")
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, code)
		pe.waitProbe503(pod.UID)
		assert.False(t, conditionTrue(pe.waitPod(pod.Name, time.Minute, "running", running), v1.PodReady), "Ready while the probe fails")

		require.NoError(t, os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644))
		got = pe.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
		assert.True(t, got.Status.ContainerStatuses[0].Ready)
		evs := pe.waitEvents(pod.UID, "Pulled", "Created", "Started")
		assert.Equal(t, -1, firstIndex(evs, "Scheduled"), "a pod created bound was scheduled")
		assert.Equal(t, processNode, findEvent(t, evs, "Started").Source.Host)
		info2, ok := pe.sim.ProcessPod(pe.ns, pod.Name)
		require.True(t, ok)
		assert.Positive(t, info2.Pid)
		assert.Contains(t, pe.sim.ProcessLogTail(pe.ns, pod.Name, 20), "helper: listening on "+info.Addr)
	})

	t.Run("TwoPodsOnOnePortDoNotCollide", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		port := freePort(t)
		var pods []*v1.Pod
		for _, name := range []string{"web-a", "web-b"} {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "whoami.txt"), []byte(name), 0o644))
			p := pe.processPod(name)
			c := &p.Spec.Containers[0]
			c.Command = []string{"python3", "-m", "http.server", strconv.Itoa(port)}
			c.Args = []string{"--bind", "0.0.0.0"}
			c.WorkingDir = dir
			exposePort(p, port)
			pods = append(pods, pe.create(p))
		}
		ips := map[string]string{}
		for _, p := range pods {
			got := pe.waitPod(p.Name, time.Minute, "Running and Ready", runningAndReady)
			ips[p.Name] = got.Status.PodIP
		}
		assert.NotEqual(t, ips["web-a"], ips["web-b"])
		for name, ip := range ips {
			code, body, err := get("http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/whoami.txt")
			require.NoError(t, err, name)
			assert.Equal(t, http.StatusOK, code, name)
			assert.Equal(t, name, body, "the server at %s's IP", name)
		}
	})

	t.Run("EnvSecretAndDefaultsReachTheProcess", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		pe.createSecret("creds", map[string][]byte{"token": []byte("s3cr3t")})
		_, err := pe.client.CoreV1().ConfigMaps(pe.ns).Create(pe.ctx, &v1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "settings"}, Data: map[string]string{"color": "blue"},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		p := pe.processPod("env", "--ip", "0.0.0.0", "--port=8888", "--exit=0")
		p.Spec.Containers[0].Env = []v1.EnvVar{
			{Name: "GREETING", Value: "hello"},
			secretKeyEnv("TOKEN", "creds", "token"),
			{Name: "COLOR", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
				LocalObjectReference: v1.LocalObjectReference{Name: "settings"}, Key: "color"}}},
			{Name: "MY_POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "COMBINED", Value: "$(GREETING)-$(COLOR)"},
			{Name: "JUPYTERHUB_SERVICE_URL", Value: "http://0.0.0.0:8888/user/alice/"},
		}
		pod := pe.create(p)
		got := pe.waitPod(pod.Name, time.Minute, "Succeeded", inPhase(v1.PodSucceeded))
		requireTerminated(t, got, 0, "Completed")

		info, ok := pe.sim.ProcessPod(pe.ns, pod.Name)
		require.True(t, ok)
		assert.Zero(t, info.Pid, "ended")
		rec := readStart(t, filepath.Join(info.Dir, "work", "start.json"))
		ip := got.Status.PodIP
		assert.Equal(t, "hello", rec.Env["GREETING"])
		assert.Equal(t, "s3cr3t", rec.Env["TOKEN"])
		assert.Equal(t, "blue", rec.Env["COLOR"])
		assert.Equal(t, ip, rec.Env["MY_POD_IP"])
		assert.Equal(t, "hello-blue", rec.Env["COMBINED"])
		assert.Equal(t, "http://"+ip+":8888/user/alice/", rec.Env["JUPYTERHUB_SERVICE_URL"])
		assert.Equal(t, pod.Name, rec.Env["HOSTNAME"])
		assert.Equal(t, filepath.Join(info.Dir, "home"), rec.Env["HOME"], "HOME is the pod's own")
		assert.Equal(t, filepath.Join(info.Dir, "work"), rec.Cwd, "default working directory")
		assert.Equal(t, []string{"--ip", ip, "--port=8888", "--exit=0"}, rec.Args, "two-argument --ip rewritten")
		_, inherited := rec.Env["KUBESPAWN_BIN_DIR"]
		assert.False(t, inherited, "the test's environment leaked into the process")
		repo, err := os.Getwd()
		require.NoError(t, err)
		assert.False(t, strings.HasPrefix(rec.Cwd, filepath.Dir(filepath.Dir(repo))), "working directory %s inside the repository", rec.Cwd)
	})

	t.Run("ExitCode3FailsThePod", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		pod := pe.create(pe.processPod("exit3", "--exit=3"))
		got := pe.waitPod(pod.Name, time.Minute, "Failed", inPhase(v1.PodFailed))
		term := requireTerminated(t, got, 3, "Error")
		assert.False(t, term.FinishedAt.IsZero())
		assert.Equal(t, int32(0), got.Status.ContainerStatuses[0].RestartCount)
		assert.False(t, conditionTrue(got, v1.PodReady))
		assert.Contains(t, pe.sim.ProcessLogTail(pe.ns, pod.Name, 10), "helper: exiting with 3")
	})

	t.Run("RestartPolicyAlwaysCrashLoops", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		p := pe.processPod("crash", "--exit=1")
		p.Spec.RestartPolicy = v1.RestartPolicyAlways
		pod := pe.create(p)
		got := pe.waitPod(pod.Name, time.Minute, "CrashLoopBackOff after restarts", func(p *v1.Pod) bool {
			if len(p.Status.ContainerStatuses) == 0 {
				return false
			}
			cs := p.Status.ContainerStatuses[0]
			return cs.RestartCount >= 2 && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff"
		})
		cs := got.Status.ContainerStatuses[0]
		require.NotNil(t, cs.LastTerminationState.Terminated, dump(got))
		assert.Equal(t, int32(1), cs.LastTerminationState.Terminated.ExitCode)
		assert.Equal(t, v1.PodRunning, got.Status.Phase, "a restarting pod is Running")
		pe.waitEvents(pod.UID, "BackOff")
	})

	t.Run("DeletionSendsSIGTERM", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		rec := pe.recordPods()
		p := pe.serverPod("term", freePort(t))
		dir := inTempDir(t, p)
		pod := pe.create(p)
		pe.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
		pe.deleteAndWaitGone(pod.Name, metav1.DeleteOptions{})
		assertSignals(t, dir, "SIGTERM\n", "the process recorded no signal")
		last := lastBeforeDelete(t, rec, pod)
		term := terminated(last)
		require.NotNil(t, term, dump(last))
		assert.Equal(t, int32(0), term.ExitCode, "it exited on SIGTERM")
		assert.Equal(t, v1.PodSucceeded, last.Status.Phase)
		assert.Equal(t, "Stopping container notebook", findEvent(t, pe.waitEvents(pod.UID, "Killing"), "Killing").Message)
		notRunning(t, pe, pod.Name, "its process is still running")
	})

	t.Run("SIGKILLAfterTheGracePeriod", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		rec := pe.recordPods()
		p := pe.serverPod("stubborn", freePort(t), "--ignore-term")
		dir := inTempDir(t, p)
		pod := pe.create(p)
		pe.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
		pe.deleteAndWaitGone(pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)})
		assertSignals(t, dir, "SIGTERM\n")
		requireTerminated(t, lastBeforeDelete(t, rec, pod), 137, "Error") // killed by SIGKILL
	})

	t.Run("MissingSecretKeyIsCreateContainerConfigError", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		pe.createSecret("creds", map[string][]byte{"other": []byte("x")})
		p := pe.serverPod("nokey", freePort(t))
		p.Spec.Containers[0].Env = []v1.EnvVar{secretKeyEnv("TOKEN", "creds", "token")}
		pod := pe.create(p)
		want := fmt.Sprintf("couldn't find key token in Secret %s/creds", pe.ns)
		got := pe.waitWaiting(pod.Name, "CreateContainerConfigError")
		assert.Equal(t, want, pendingWaitMessage(t, got))
		pe.waitEventsFunc(pod.UID, "Failed event", func(evs []v1.Event) bool { return hasMessage(evs, "Failed", "Error: "+want) })
		_, isProc := pe.sim.ProcessPod(pe.ns, pod.Name)
		assert.True(t, isProc, "the pod is a process pod")
		notRunning(t, pe, pod.Name, "a process started without its configuration")

		// As the kubelet, the simulator retries: once the key exists, the
		// container starts.
		_, err := pe.client.CoreV1().Secrets(pe.ns).Update(pe.ctx, &v1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "creds"}, Data: map[string][]byte{"token": []byte("t")},
		}, metav1.UpdateOptions{})
		require.NoError(t, err)
		pe.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
	})

	t.Run("OnlyArgsIsCreateContainerError", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		p := pe.processPod("argsonly", pe.helper, "--exit=0")
		p.Spec.Containers[0].Command = nil
		pod := pe.create(p)
		got := pe.waitWaiting(pod.Name, "CreateContainerError")
		assert.Contains(t, pendingWaitMessage(t, got), "has no command")
	})

	// The kubelet-side scenarios that happen before or beside the process
	// (issue 22): the image pull (its failures, its length) and a
	// readiness probe that never passes.
	t.Run("ImagePullFailureStartsNoProcess", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		rec := pe.recordPods()
		pod, dir := pe.createUnstarted("badimage", podsim.ScenarioImagePullFailure)
		img := pod.Spec.Containers[0].Image
		msg := pendingWaitMessage(t, pe.waitWaiting(pod.Name, "ImagePullBackOff"))
		assert.True(t, strings.HasPrefix(msg, `Back-off pulling image "`+img+`": ErrImagePull: `), msg)
		_, versions := rec.history(pod.UID)
		assert.True(t, slices.ContainsFunc(versions, waitingFor("ErrImagePull")), "ErrImagePull before ImagePullBackOff")
		evs := pe.waitEventsFunc(pod.UID, "the failed pull's events", func(evs []v1.Event) bool {
			return firstIndex(evs, "Pulling") >= 0 && firstIndex(evs, "BackOff") >= 0 &&
				hasMessage(evs, "Failed", "Error: ErrImagePull") && hasMessage(evs, "Failed", "Error: ImagePullBackOff")
		})
		assert.Equal(t, `Pulling image "`+img+`"`, findEvent(t, evs, "Pulling").Message)
		assert.Greater(t, firstIndex(evs, "Failed"), firstIndex(evs, "Pulling"))
		assert.True(t, strings.HasPrefix(findEvent(t, evs, "Failed").Message, `Failed to pull image "`+img+`": `), eventSummary(evs))
		assert.Equal(t, `Back-off pulling image "`+img+`"`, findEvent(t, evs, "BackOff").Message)
		assertNoEvent(t, evs, []string{"Pulled", "Created", "Started"}, "for an image that was never pulled")
		noProcess(t, pe, pod.Name, dir)
		pe.deleteStartsNoProcess(pod.Name, dir)
	})

	t.Run("InvalidImageNameStartsNoProcess", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		pod, dir := pe.createUnstarted("badname", podsim.ScenarioInvalidImageName)
		assert.Contains(t, pendingWaitMessage(t, pe.waitWaiting(pod.Name, "InvalidImageName")), "invalid reference format")
		evs := pe.waitEventsFunc(pod.UID, "InspectFailed and Failed", func(evs []v1.Event) bool {
			return firstIndex(evs, "InspectFailed") >= 0 && hasMessage(evs, "Failed", "Error: InvalidImageName")
		})
		assert.Equal(t, v1.EventTypeWarning, findEvent(t, evs, "InspectFailed").Type)
		assertNoEvent(t, evs, []string{"Pulling", "Pulled", "Started"}, "for an invalid image name")
		noProcess(t, pe, pod.Name, dir)
		pe.deleteStartsNoProcess(pod.Name, dir)
	})

	t.Run("StartDelayIsTheImagePull", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name        string
			annotations map[string]string
			delay       time.Duration
		}{
			{"start-delay", map[string]string{podsim.AnnotationStartDelay: "1500ms"}, 1500 * time.Millisecond},
			{"slow-start", map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart}, podsim.DefaultSlowStartDelay},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				pe := env(t)
				rec := pe.recordPods()
				port := freePort(t)
				p := pe.serverPod("slow", port)
				maps.Copy(p.Annotations, tc.annotations)
				dir := inTempDir(t, p)
				exposePort(p, port)
				img := p.Spec.Containers[0].Image
				begin := time.Now()
				pod := pe.create(p)
				pe.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)

				// The process started once the pull was over, no sooner:
				// its start record is at least the delay younger than the
				// pod (file times lag the clock by up to a kernel tick).
				fi, err := os.Stat(filepath.Join(dir, "start.json"))
				require.NoError(t, err, "the process wrote no start record")
				assert.GreaterOrEqual(t, fi.ModTime().Sub(begin), tc.delay-10*time.Millisecond, "the process started before its image was pulled")
				// Meanwhile the container waited in ContainerCreating.
				_, versions := rec.history(pod.UID)
				first := slices.IndexFunc(versions, func(p *v1.Pod) bool { return p.Status.PodIP != "" })
				require.GreaterOrEqual(t, first, 0)
				assert.True(t, waitingReason(versions[first], "ContainerCreating"), dump(versions[first]))

				evs := pe.waitEvents(pod.UID, "Pulling", "Pulled", "Created", "Started")
				assert.Equal(t, `Pulling image "`+img+`"`, findEvent(t, evs, "Pulling").Message)
				pulled := findEvent(t, evs, "Pulled").Message
				took, ok := strings.CutPrefix(pulled, `Successfully pulled image "`+img+`" in `)
				require.True(t, ok, pulled)
				took, _, _ = strings.Cut(took, " ")
				d, err := time.ParseDuration(took)
				require.NoError(t, err, pulled)
				assert.GreaterOrEqual(t, d, tc.delay, "the pull took the start delay: %s", pulled)
				assert.Less(t, firstIndex(evs, "Pulling"), firstIndex(evs, "Pulled"))
				assert.Less(t, firstIndex(evs, "Pulled"), firstIndex(evs, "Started"))
			})
		}
	})

	t.Run("DeletedDuringTheImagePullStartsNoProcess", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		p := pe.serverPod("pulling", freePort(t))
		p.Annotations[podsim.AnnotationStartDelay] = "1h"
		dir := inTempDir(t, p)
		pod := pe.create(p)
		pe.waitEvents(pod.UID, "Pulling")
		assert.Equal(t, v1.PodPending, pe.waitWaiting(pod.Name, "ContainerCreating").Status.Phase)
		pe.deleteStartsNoProcess(pod.Name, dir)
	})

	t.Run("NeverReadyRunsTheProcessNeverReady", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		port := freePort(t)
		p := pe.serverPod("neverready", port)
		p.Annotations[podsim.AnnotationScenario] = podsim.ScenarioNeverReady
		dir := inTempDir(t, p)
		// Its own probe would pass (no --ready-file): the scenario's never does.
		exposeHealthz(p, port)
		pod := pe.create(p)
		got := pe.waitPod(pod.Name, time.Minute, "running", running)
		assert.Equal(t, v1.PodRunning, got.Status.Phase)
		base := "http://" + net.JoinHostPort(got.Status.PodIP, strconv.Itoa(port))
		require.Eventually(t, func() bool {
			code, _, err := get(base + "/healthz")
			return err == nil && code == http.StatusOK
		}, time.Minute, 20*time.Millisecond, "the process serves, its own probe would pass")
		pe.waitProbe503(pod.UID)
		// Many probe periods (capped at 250 ms) pass: never Ready.
		assert.Never(t, func() bool {
			p, err := pe.client.CoreV1().Pods(pe.ns).Get(pe.ctx, pod.Name, metav1.GetOptions{})
			return err == nil && (conditionTrue(p, v1.PodReady) || p.Status.ContainerStatuses[0].Ready)
		}, 2*time.Second, 50*time.Millisecond, "a never-ready pod became Ready")
		info, ok := pe.sim.ProcessPod(pe.ns, pod.Name)
		require.True(t, ok)
		assert.Positive(t, info.Pid, "its process runs")

		pe.deleteAndWaitGone(pod.Name, metav1.DeleteOptions{})
		assertSignals(t, dir, "SIGTERM\n", "the process recorded no signal")
		notRunning(t, pe, pod.Name, "its process is still running")
	})

	t.Run("PodWithoutRuntimeClassIsSimulated", func(t *testing.T) {
		t.Parallel()
		pe := env(t)
		p := pe.processPod("plain", "--exit=7")
		p.Spec.RuntimeClassName = nil
		pod := pe.create(p)
		pe.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
		_, ok := pe.sim.ProcessPod(pe.ns, pod.Name)
		assert.False(t, ok, "a pod without the runtime class was run as a process")
	})
}

// noProcess asserts that the pod's process was never started: it is not
// running and the helper wrote no start record in its working dir.
func noProcess(t *testing.T, pe *procEnv, name, dir string) {
	t.Helper()
	notRunning(t, pe, name, "its process is running")
	_, err := os.Stat(filepath.Join(dir, "start.json"))
	assert.True(t, os.IsNotExist(err), "its process was started (%v)", err)
}

// notRunning asserts that none of the simulator's running processes is
// the pod's; msg says what one would mean.
func notRunning(t *testing.T, pe *procEnv, name, msg string) {
	t.Helper()
	for _, pr := range pe.sim.Processes() {
		assert.NotEqual(t, name, pr.Name, msg)
	}
}

// createUnstarted creates a server pod, in a working directory of its own
// (returned), whose scenario keeps its process from ever starting.
func (pe *procEnv) createUnstarted(name, scenario string) (*v1.Pod, string) {
	pe.t.Helper()
	p := pe.serverPod(name, freePort(pe.t))
	p.Annotations[podsim.AnnotationScenario] = scenario
	dir := inTempDir(pe.t, p)
	return pe.create(p), dir
}

// deleteStartsNoProcess deletes a pod whose process never started, waits
// until it is gone and checks that the deletion did not start it either.
func (pe *procEnv) deleteStartsNoProcess(name, dir string) {
	pe.t.Helper()
	pe.deleteAndWaitGone(name, metav1.DeleteOptions{})
	noProcess(pe.t, pe, name, dir)
}

// assertSignals asserts what the helper recorded in signals.txt in its
// working directory dir: the signals it got, one a line. msgAndArgs say
// what a missing record means.
func assertSignals(t *testing.T, dir, want string, msgAndArgs ...any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "signals.txt"))
	require.NoError(t, err, msgAndArgs...)
	assert.Equal(t, want, string(b))
}

// lastBeforeDelete is the last version of the pod its watch saw before the
// DELETED event.
func lastBeforeDelete(t *testing.T, rec *podRecorder, pod *v1.Pod) *v1.Pod {
	t.Helper()
	var last *v1.Pod
	require.Eventually(t, func() bool {
		types, pods := rec.history(pod.UID)
		for i, typ := range types {
			if typ == watch.Deleted {
				last = pods[i]
				return true
			}
		}
		return false
	}, time.Minute, 20*time.Millisecond, "no DELETED event")
	return last
}

// fakeT records what VerifyNone reports.
type fakeT struct {
	mu     sync.Mutex
	errors []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

// TestLeftoverProcessCheck: the leftover-process check fails while a process
// pod's process runs, and passes once the simulator is stopped. Not
// parallel: a simulator of its own.
func TestLeftoverProcessCheck(t *testing.T) {
	e := setup(t)
	helper := buildHelper(t)
	// Its own process directory (no ProcessDir), which Stop is to remove.
	s := startSim(t, e, podsim.Options{NodeName: processNode, ProcessRuntimeClass: podsim.DefaultProcessRuntimeClass})
	pe := &procEnv{testEnv: e, sim: s, helper: helper}
	pod := pe.create(pe.serverPod("leaky", freePort(t)))
	pe.waitPod(pod.Name, time.Minute, "running", running)
	info, ok := s.ProcessPod(e.ns, pod.Name)
	require.True(t, ok)
	require.Positive(t, info.Pid)
	logPath := info.LogPath

	ft := &fakeT{}
	podproc.VerifyNone(ft)
	require.Len(t, ft.errors, 1, "a running process pod's process went unreported")
	assert.Contains(t, ft.errors[0], e.ns+"/leaky/notebook")
	assert.Contains(t, ft.errors[0], fmt.Sprintf("pid %d", info.Pid))

	s.Stop()
	podproc.VerifyNone(t)
	_, err := os.Stat(logPath)
	assert.True(t, os.IsNotExist(err), "Stop left the simulator's own process directory behind")
}
