package hubtest

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// standIn answers the hub's readiness checks for the single-user servers:
// nothing runs containers here, so one loopback HTTP server plays every
// user's notebook server, up while the API server has the user's pod
// Running and Ready.
type standIn struct {
	port   int
	server *http.Server
	done   chan struct{}
}

// startStandIn listens on 127.0.0.1 (the pods' simulated IP).
func startStandIn(client kubernetes.Interface, namespace string) (*standIn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &standIn{port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	s.server = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/user/")
		user, _, _ := strings.Cut(rest, "/")
		user, err := url.PathUnescape(user)
		if !ok || err != nil || user == "" {
			http.Error(w, "not a user server path", http.StatusNotFound)
			return
		}
		pod, err := userPod(r.Context(), client, namespace, user)
		if err != nil || pod == nil || !podReady(pod) {
			http.Error(w, "no running notebook server for "+user, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "stand-in notebook server of %s (pod %s)\n", user, pod.Name)
	})}
	go func() {
		defer close(s.done)
		_ = s.server.Serve(ln)
	}()
	return s, nil
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *standIn) close() {
	_ = s.server.Close()
	<-s.done
}
