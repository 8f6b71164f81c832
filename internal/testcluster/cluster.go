package testcluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/childproc"
)

// workDirPrefix names the per-cluster directories under os.TempDir. The
// owning process ID follows it, so Start can remove directories whose owner
// died without cleaning up.
const workDirPrefix = "kubespawn-testcluster-"

// Options configures Start. The zero value is ready to use.
type Options struct {
	// BinDir holds the etcd and kube-apiserver binaries. Default: the
	// KUBESPAWN_BIN_DIR environment variable, else bin/ at the root of the
	// kubespawn repository found by walking up from the working directory.
	BinDir string
	// StartTimeout bounds how long Start waits for the apiserver's /readyz
	// and, with ControllerManager, the controller-manager's /healthz.
	// Default 90s.
	StartTimeout time.Duration
	// APIServerArgs are appended to kube-apiserver's arguments (e.g. to
	// change --watch-cache or feature gates in one test package).
	APIServerArgs []string
	// EtcdArgs are appended to etcd's arguments (e.g. a larger
	// --quota-backend-bytes for benchmarks with 100,000 pods).
	EtcdArgs []string

	// ControllerManager also starts kube-controller-manager (from BinDir)
	// running Controllers, for tests that need a real garbage collector or
	// namespace controller. Start then also waits until its /healthz lists
	// every controller. It is ignored against an existing cluster
	// (KUBESPAWN_TEST_KUBECONFIG), which runs a controller-manager of its
	// own.
	ControllerManager bool
	// Controllers are kube-controller-manager's --controllers, by canonical
	// name as its --help lists them (Start waits for a /healthz check of
	// each name, so an alias would time out). Default: DefaultControllers.
	Controllers []string
	// ControllerManagerArgs are appended to kube-controller-manager's
	// arguments.
	ControllerManagerArgs []string

	// ServiceCIDR is the apiserver's --service-cluster-ip-range, the range
	// Services' ClusterIPs come from. Default DefaultServiceCIDR, which
	// nothing on the machine routes. A range in 127.0.0.0/8 makes
	// ClusterIPs bindable on loopback without any setup (Linux routes all
	// of 127/8 to lo), for a kube-proxy stand-in such as internal/svcproxy;
	// it must then avoid the pod simulator's pod range 127.244.0.0/16 and
	// its node address 127.0.0.1. Ignored against an existing cluster.
	ServiceCIDR string
}

// DefaultServiceCIDR is Options.ServiceCIDR unless set.
const DefaultServiceCIDR = "10.96.0.0/24"

// DefaultControllers are the controllers of Options.ControllerManager
// unless Options.Controllers says otherwise: the garbage collector (owned
// objects go with their owner) and the namespace controller (a deleted
// namespace goes away with its content).
var DefaultControllers = []string{"garbage-collector-controller", "namespace-controller"}

// Cluster is a running etcd and kube-apiserver pair.
type Cluster struct {
	binDir   string
	dir      string
	token    string
	caData   []byte
	apiPort  int
	etcdURL  string
	extraAPI []string
	svcCIDR  string

	// kube-controller-manager's credential, /healthz port, controllers
	// and extra arguments; kcmPort is 0 when it does not run.
	kcmToken       string
	kcmPort        int
	kcmControllers []string
	extraKCM       []string

	simState

	// existing is the configuration of an existing cluster (Existing);
	// nil for a local control plane.
	existing *rest.Config

	mu                sync.Mutex
	etcd              *childproc.Process
	apiserver         *childproc.Process
	controllerManager *childproc.Process
	stopped           bool
}

// Start launches etcd and kube-apiserver (and kube-controller-manager if
// opts.ControllerManager) on free loopback ports and waits until they
// report ready. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	bins := []string{"etcd", "kube-apiserver"}
	if opts.ControllerManager {
		bins = append(bins, "kube-controller-manager")
	}
	for _, bin := range bins {
		if _, statErr := os.Stat(filepath.Join(binDir, bin)); statErr != nil {
			return nil, fmt.Errorf("testcluster: %s not found in %s (run `make tools` to build it): %w", bin, binDir, statErr)
		}
	}
	removeStaleWorkDirs()
	dir, err := os.MkdirTemp("", workDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	c := &Cluster{binDir: binDir, dir: dir, extraAPI: opts.APIServerArgs, svcCIDR: opts.ServiceCIDR}
	if c.svcCIDR == "" {
		c.svcCIDR = DefaultServiceCIDR
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.LogTail(40))
			c.Stop()
		}
	}()
	if err := c.writeCredentials(); err != nil {
		return nil, err
	}
	ports, err := childproc.FreePorts(4)
	if err != nil {
		return nil, err
	}
	c.apiPort = ports[2]
	if opts.ControllerManager {
		c.kcmPort = ports[3]
		c.kcmControllers = opts.Controllers
		if len(c.kcmControllers) == 0 {
			c.kcmControllers = DefaultControllers
		}
		c.extraKCM = opts.ControllerManagerArgs
	}
	c.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])

	timeout := opts.StartTimeout
	timeout = cmp.Or(timeout, 90*time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	etcdArgs := []string{
		"--name", "default",
		"--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", c.etcdURL,
		"--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default=" + peerURL,
		"--unsafe-no-fsync", // test data; durability across machine crashes is irrelevant
		"--log-level", "warn",
	}
	c.etcd, err = startProcess(filepath.Join(binDir, "etcd"), filepath.Join(dir, "etcd.log"), append(etcdArgs, opts.EtcdArgs...)...)
	if err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx); err != nil {
		return nil, err
	}
	if c.kcmPort != 0 {
		if err := c.startControllerManager(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) writeCredentials() error {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.token = hex.EncodeToString(tok)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.kcmToken = hex.EncodeToString(tok)
	// The controller-manager authenticates as the user its bootstrap RBAC
	// role is bound to, as on a kubeadm cluster; each of its controllers
	// then acts with a ServiceAccount token of its own
	// (--use-service-account-credentials), so the controllers' RBAC roles
	// are real too.
	tokens := fmt.Sprintf("%s,kubespawn-admin,kubespawn-admin,\"system:masters\"\n%s,system:kube-controller-manager,system:kube-controller-manager\n", c.token, c.kcmToken)
	if err := os.WriteFile(filepath.Join(c.dir, "tokens.csv"), []byte(tokens), 0o600); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	// One self-signed serving certificate; its PEM is also the client's CA.
	certPEM, keyPEM, err := cert.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	if err != nil {
		return fmt.Errorf("testcluster: serving certificate: %w", err)
	}
	c.caData = certPEM
	if err := os.WriteFile(filepath.Join(c.dir, "serving.crt"), certPEM, 0o600); err != nil {
		return err
	}
	if err := keyutil.WriteKey(filepath.Join(c.dir, "serving.key"), keyPEM); err != nil {
		return err
	}
	saKey, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return fmt.Errorf("testcluster: service account key: %w", err)
	}
	return keyutil.WriteKey(filepath.Join(c.dir, "sa.key"), saKey)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	args := []string{
		"--etcd-servers", c.etcdURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(c.apiPort),
		"--cert-dir", filepath.Join(c.dir, "certs"),
		"--tls-cert-file", filepath.Join(c.dir, "serving.crt"),
		"--tls-private-key-file", filepath.Join(c.dir, "serving.key"),
		"--token-auth-file", filepath.Join(c.dir, "tokens.csv"),
		"--service-account-key-file", filepath.Join(c.dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(c.dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--authorization-mode", "RBAC",
		"--service-cluster-ip-range", c.svcCIDR,
		// No controller-manager creates default ServiceAccounts; pods need none.
		"--disable-admission-plugins", "ServiceAccount",
		"--endpoint-reconciler-type", "none",
		"--profiling=false",
		"-v", "1",
	}
	args = append(args, c.extraAPI...)
	p, err := startProcess(filepath.Join(c.binDir, "kube-apiserver"), filepath.Join(c.dir, "kube-apiserver.log"), args...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.apiserver = p
	c.mu.Unlock()
	return c.waitReady(ctx, p)
}

func (c *Cluster) waitReady(ctx context.Context, p *childproc.Process) error {
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return err
	}
	var lastErr error
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if exited, why := p.Exited(); exited {
			return false, fmt.Errorf("testcluster: kube-apiserver exited during start: %v", why)
		}
		if exited, why := c.etcd.Exited(); exited {
			return false, fmt.Errorf("testcluster: etcd exited during start: %v", why)
		}
		_, lastErr = client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return lastErr == nil, nil
	})
	if err != nil {
		return fmt.Errorf("testcluster: kube-apiserver not ready (last error: %v): %w", lastErr, err)
	}
	return nil
}

// startControllerManager starts kube-controller-manager against the
// apiserver and waits until its /healthz lists every controller: they are
// built (each with its ServiceAccount credential) and their informers start
// right after. The garbage collector's own first sync of its monitors
// follows within a second or two; tests wait for its effects (Eventually),
// which a late sync only delays: objects created before it are in its first
// list.
func (c *Cluster) startControllerManager(ctx context.Context) error {
	kubeconfig := filepath.Join(c.dir, "kube-controller-manager.kubeconfig")
	cfg := &rest.Config{Host: c.URL(), BearerToken: c.kcmToken, TLSClientConfig: rest.TLSClientConfig{CAData: c.caData}}
	if err := WriteKubeConfig(kubeconfig, cfg); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	args := []string{
		"--kubeconfig", kubeconfig,
		"--controllers", strings.Join(c.kcmControllers, ","),
		"--use-service-account-credentials",
		// One instance per cluster: nothing to elect, no Lease to wait for.
		"--leader-elect=false",
		// /healthz only; the apiserver's serving pair (it is for 127.0.0.1)
		// lets waitControllerManagerReady verify the server with caData.
		// /healthz is in the default --authorization-always-allow-paths,
		// so no authentication or authorization kubeconfig is needed.
		"--bind-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(c.kcmPort),
		"--tls-cert-file", filepath.Join(c.dir, "serving.crt"),
		"--tls-private-key-file", filepath.Join(c.dir, "serving.key"),
		"--profiling=false",
		// Verbosity 0: at 1 it logs its ~200 flags, which would crowd
		// the controllers' lines out of LogTail.
	}
	// No --service-account-private-key-file: the legacy token controller,
	// which needs it, stays off; the controllers' tokens come from the
	// TokenRequest API.
	args = append(args, c.extraKCM...)
	p, err := startProcess(filepath.Join(c.binDir, "kube-controller-manager"), filepath.Join(c.dir, "kube-controller-manager.log"), args...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.controllerManager = p
	c.mu.Unlock()
	return c.waitControllerManagerReady(ctx, p)
}

func (c *Cluster) waitControllerManagerReady(ctx context.Context, p *childproc.Process) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caData)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz?verbose", c.kcmPort)
	var lastErr error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if exited, why := p.Exited(); exited {
			return false, fmt.Errorf("testcluster: kube-controller-manager exited during start: %v", why)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			return false, nil
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if err != nil {
			lastErr = err
			return false, nil
		}
		if resp.StatusCode != http.StatusOK {
			lastErr = fmt.Errorf("/healthz: %s: %s", resp.Status, body)
			return false, nil
		}
		for _, name := range c.kcmControllers {
			if !bytes.Contains(body, []byte("[+]"+name+" ok")) {
				lastErr = fmt.Errorf("/healthz does not list controller %q yet: %s", name, body)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("testcluster: kube-controller-manager not ready (last error: %v): %w", lastErr, err)
	}
	return nil
}

// Config returns a new admin configuration (group system:masters) that talks
// to the apiserver directly over TLS.
func (c *Cluster) Config() *rest.Config {
	if c.existing != nil {
		return rest.CopyConfig(c.existing)
	}
	return &rest.Config{
		Host:            c.URL(),
		BearerToken:     c.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), c.caData...)},
		QPS:             -1, // tests create hundreds of objects; client-side throttling only slows them
	}
}

// URL is the apiserver's https address.
func (c *Cluster) URL() string {
	if c.existing != nil {
		return c.existing.Host
	}
	return fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)
}

// Dir is the cluster's working directory (logs, credentials, etcd data).
func (c *Cluster) Dir() string { return c.dir }

// ServiceAccountConfig creates namespace and ServiceAccount name (if
// missing) and returns a configuration that authenticates as that
// ServiceAccount with a one-hour token from the TokenRequest API. It has no
// permissions until a test binds a Role to
// system:serviceaccount:<namespace>:<name>.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return nil, err
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	_, err = client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	tr, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("testcluster: token for %s/%s: %w", namespace, name, err)
	}
	cfg := c.Config()
	// Only the token: an existing cluster's kubeconfig may carry a client
	// certificate or an exec plugin, which would authenticate first.
	cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData = nil, nil
	cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile = "", ""
	cfg.Username, cfg.Password, cfg.BearerTokenFile = "", "", ""
	cfg.AuthProvider, cfg.ExecProvider = nil, nil
	cfg.BearerToken = tr.Status.Token
	return cfg, nil
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port
// against the same etcd, returning once it is ready. Clients see their
// connections break and watches end, as in a rolling apiserver upgrade.
// kube-controller-manager, if it runs, keeps running and reconnects, as
// clients do.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	if c.existing != nil {
		return ErrExistingCluster
	}
	c.mu.Lock()
	old := c.apiserver
	c.mu.Unlock()
	if old != nil {
		old.Stop(2 * time.Second)
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	return c.startAPIServer(ctx)
}

// Stop stops the pod simulator (PodSim) and the processes, and removes the
// working directory. The controller-manager goes first, then the
// apiserver: each would wait a long time for the one after it.
func (c *Cluster) Stop() {
	c.stopSim()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	if c.existing != nil {
		return
	}
	if c.controllerManager != nil {
		c.controllerManager.Stop(2 * time.Second)
	}
	if c.apiserver != nil {
		c.apiserver.Stop(2 * time.Second)
	}
	if c.etcd != nil {
		c.etcd.Stop(2 * time.Second)
	}
	_ = os.RemoveAll(c.dir)
}

// LogTail returns the last n lines of each process's log, for failure
// reports.
func (c *Cluster) LogTail(n int) string {
	var b strings.Builder
	if c.existing != nil {
		return "" // not our processes
	}
	for _, name := range []string{"etcd.log", "kube-apiserver.log", "kube-controller-manager.log"} {
		data, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			continue
		}
		lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- last %d lines of %s ---\n%s\n", len(lines), name, bytes.Join(lines, []byte("\n")))
	}
	return b.String()
}

// findBinDir resolves Options.BinDir.
func findBinDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if env := os.Getenv("KUBESPAWN_BIN_DIR"); env != "" {
		return env, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/kubespawn/kubespawn\n")) {
			return filepath.Join(d, "bin"), nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("testcluster: cannot find the kubespawn repository root (no go.mod of module github.com/kubespawn/kubespawn above the working directory); set KUBESPAWN_BIN_DIR")
		}
	}
}

// removeStaleWorkDirs deletes working directories of test processes that
// died without calling Stop (their children died with them).
func removeStaleWorkDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), workDirPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // owner alive
		}
		_ = os.RemoveAll(m)
	}
}

// startProcess runs one of the control plane's binaries, logging to logPath.
func startProcess(path, logPath string, args ...string) (*childproc.Process, error) {
	p, err := childproc.Start(filepath.Base(path), logPath, childproc.Options{}, path, args...)
	if err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	return p, nil
}
