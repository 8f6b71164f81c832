package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/internal/stats"
)

// podTimes records when a plain informer first saw each pod (created)
// and first saw it Ready: the pod's own start as the API server shows it,
// whatever asked for it.
type podTimes struct {
	mu             sync.Mutex
	created, ready map[string]time.Time
}

func (p *podTimes) observe(obj any) {
	now := time.Now()
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, seen := p.created[pod.Name]; !seen {
		p.created[pod.Name] = now
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			if _, seen := p.ready[pod.Name]; !seen {
				p.ready[pod.Name] = now
			}
		}
	}
}

// runBenchStarts starts n real single-user servers through the hub's REST
// API, one after another: for each, hub POST → the server answers GET
// /user/<name>/api/status through the hub's proxy (with the user's
// token), against the pod's own start (created → Ready, as an informer
// sees it); the difference is what the hub, the class, the service and
// kubespawn add. Each server is stopped (and its pod gone) before the next.
func runBenchStarts(ctx context.Context, e *hubtest.Env, client kubernetes.Interface, namespace string, n int, out io.Writer) error {
	times := &podTimes{created: map[string]time.Time{}, ready: map[string]time.Time{}}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: times.observe, UpdateFunc: func(_, obj any) { times.observe(obj) },
	}); err != nil {
		return err
	}
	stop := make(chan struct{})
	defer close(stop)
	f.Start(stop)
	f.WaitForCacheSync(stop)

	var total, podStart, overhead []time.Duration
	for i := range n {
		name := fmt.Sprintf("bench-%03d", i)
		if err := e.Hub.CreateUsers(ctx, []string{name}); err != nil {
			return err
		}
		token, err := e.Hub.Token(ctx, name)
		if err != nil {
			return err
		}
		begin := time.Now()
		if err := e.Hub.StartNamedServer(ctx, name, "", nil); err != nil {
			return err
		}
		deadline := begin.Add(2 * time.Minute)
		for {
			code, _, err := e.Hub.Get(ctx, "/user/"+name+"/api/status", token)
			if err == nil && code == 200 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s: server not reachable through the proxy within 2m (last: %d %v)", name, code, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(begin)
		pod, err := e.UserPod(ctx, name)
		if err != nil || pod == nil {
			return fmt.Errorf("%s: no pod (%v)", name, err)
		}
		times.mu.Lock()
		created, ready := times.created[pod.Name], times.ready[pod.Name]
		times.mu.Unlock()
		if created.IsZero() || ready.IsZero() {
			return fmt.Errorf("%s: the informer missed the pod's creation or readiness", name)
		}
		total = append(total, took)
		podStart = append(podStart, ready.Sub(created))
		overhead = append(overhead, took-ready.Sub(created))
		fmt.Fprintf(out, "  %s: reachable after %s; its pod created → Ready %s\n", name, ms(took), ms(ready.Sub(created)))
		if err := e.StopAll(ctx, []string{name}); err != nil {
			return err
		}
		if err := waitPodGone(ctx, client, namespace, pod.Name); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "\n%d real servers: hub POST → reachable through the proxy: median %s, p99 %s; the pod's own start (created → Ready): median %s, p99 %s; the rest (hub, class, service, kubespawn, proxy): median %s, p99 %s\n",
		n, ms(stats.Quantile(total, 0.5)), ms(stats.Quantile(total, 0.99)), ms(stats.Quantile(podStart, 0.5)), ms(stats.Quantile(podStart, 0.99)),
		ms(stats.Quantile(overhead, 0.5)), ms(stats.Quantile(overhead, 0.99)))
	return nil
}

func waitPodGone(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	for {
		_, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
