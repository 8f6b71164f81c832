package reflector_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubespawn/kubespawn/reflector"
)

// One factory per process; every part of the program that asks for the
// same scope gets the same cache, so there is one watch per scope. The
// context given to Start is the lifetime of every cache.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// In production: reflector.NewFactory(cfg, reflector.Options{...}),
	// which gives each cache a transport whose connections it can cut.
	f, _ := reflector.NewFactoryForClient(fake.NewClientset(), reflector.Options{})
	defer f.Shutdown()
	scope := reflector.Scope{Namespaces: []string{"users"}, LabelSelector: "component=singleuser-server"}

	a, _ := f.Pods(scope)
	b, _ := f.Pods(scope) // another spawner of the same process
	f.Start(ctx)
	_ = f.WaitForCacheSync(ctx)
	fmt.Println("same cache:", a == b, "state:", a.State())

	cancel() // the end of the lifetime stops every cache
	f.Shutdown()
	fmt.Println("after shutdown:", a.State())
	// Output:
	// same cache: true state: synced
	// after shutdown: stopped
}

// Get answers from the cache when it can, and otherwise asks the API
// server; only the API server's NotFound means "does not exist". Once
// WaitForSync returns, the cache is synced and says so.
func ExamplePodCache_Get() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "users", Name: "jupyter-alice"}})
	f, _ := reflector.NewFactoryForClient(client, reflector.Options{})
	defer f.Shutdown()
	pods, _ := f.Pods(reflector.Scope{Namespaces: []string{"users"}})
	f.Start(ctx)
	_ = pods.WaitForSync(ctx)

	pod, src, _ := pods.Get(ctx, "users", "jupyter-alice")
	fmt.Println(pod.Name, "from", src)

	_, src, err := pods.Get(ctx, "users", "jupyter-bob")
	fmt.Println("bob exists:", !apierrors.IsNotFound(err), "- answered by", src)
	// Output:
	// jupyter-alice from cache
	// bob exists: false - answered by api
}

// Readyz and Healthz have controller-runtime's healthz.Checker signature;
// wire the factory's to the process's probes so that Kubernetes stops
// routing to, or restarts, a process whose caches cannot be trusted.
func ExampleFactory_Readyz() {
	f, _ := reflector.NewFactoryForClient(fake.NewClientset(), reflector.Options{})
	defer f.Shutdown()
	pods, _ := f.Pods(reflector.Scope{Namespaces: []string{"users"}})

	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if err := f.Readyz(req); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	fmt.Println(rec.Code, "before Start:", pods.State())
	// Output: 503 before Start: starting
}
