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

// Every spawner of a process asks the Registry for the same scope and gets
// the same Reflector: one watch, however many spawners.
func Example_sharing() {
	ctx := context.Background()
	client := fake.NewClientset() // in production: kubernetes.NewForConfig(cfg)
	reg := reflector.NewRegistry()
	opts := reflector.Options{Scope: reflector.Scope{Namespaces: []string{"users"}, LabelSelector: "component=singleuser-server"}}

	a, releaseA, _ := reflector.Acquire(ctx, reg, client, reflector.Pods, opts)
	b, releaseB, _ := reflector.Acquire(ctx, reg, client, reflector.Pods, opts)
	fmt.Println("same reflector:", a == b, "running:", reg.Len())

	releaseA()
	fmt.Println("after one release:", reg.Len())
	releaseB() // the last user: the watch stops
	fmt.Println("after both:", reg.Len(), a.Status().State)
	// Output:
	// same reflector: true running: 1
	// after one release: 1
	// after both: 0 stopped
}

// Get answers from the cache when it can, and otherwise asks the API
// server; only the API server's NotFound means "does not exist".
func ExampleReflector_Get() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "users", Name: "jupyter-alice"}})
	r, _ := reflector.New(client, reflector.Pods, reflector.Options{Scope: reflector.Scope{Namespaces: []string{"users"}}, ProbeInterval: -1})
	_ = r.Start(ctx)
	defer r.Stop()
	_ = r.WaitForSync(ctx)
	for !r.Status().Healthy() {
		time.Sleep(10 * time.Millisecond)
	}

	pod, src, _ := r.Get(ctx, "users", "jupyter-alice")
	fmt.Println(pod.Name, "from", src)

	_, src, err := r.Get(ctx, "users", "jupyter-bob")
	fmt.Println("bob exists:", !apierrors.IsNotFound(err), "- answered by", src)
	// Output:
	// jupyter-alice from cache
	// bob exists: false - answered by api
}

// Readyz and Healthz have controller-runtime's healthz.Checker signature;
// wire them to the process's probes so Kubernetes stops routing to, or
// restarts, a process whose cache cannot be trusted.
func ExampleReflector_Readyz() {
	client := fake.NewClientset()
	r, _ := reflector.New(client, reflector.Pods, reflector.Options{Scope: reflector.Scope{Namespaces: []string{"users"}}})

	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if err := r.Readyz(req); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	fmt.Println(rec.Code, "before Start:", r.Status().State)
	// Output: 503 before Start: starting
}
