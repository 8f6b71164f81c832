package events_test

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/reflector"
)

// A spawner shows a user the progress of their pod, and on failure the last
// Warning events. It needs a cluster, so it has no Output.
func Example() {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		panic(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// One event watch per namespace for the whole process, shared by every
	// spawner; released when this spawner is done.
	r, release, err := events.Acquire(ctx, reflector.DefaultRegistry, client, events.Options{
		Options: reflector.Options{Scope: reflector.Scope{Namespaces: []string{"jupyter"}}},
	})
	if err != nil {
		panic(err)
	}
	defer release()

	// The UID comes from the created pod: events of an earlier pod with the
	// same name are never shown.
	pod := events.PodRef{Namespace: "jupyter", Name: "jupyter-alice", UID: types.UID("6b1c...")}
	updates, err := r.Stream(ctx, pod)
	if err != nil {
		panic(err)
	}
	for u := range updates { // closed when ctx ends
		if u.Degraded {
			fmt.Print("(slow) ")
		}
		fmt.Printf("%3d%% %s\n", u.Progress, u.Message)
		if u.Event != nil && u.Event.Reason == "Started" {
			break // from here, readiness is read from the pod
		}
	}

	// Failure report: the last Warning events.
	evs := r.For(pod)
	for i := len(evs) - 1; i >= 0 && i >= len(evs)-3; i-- {
		if evs[i].Type == corev1.EventTypeWarning {
			fmt.Println(events.Message(evs[i]))
		}
	}
	r.ForgetPod(pod.UID) // the pod is gone for good
}
