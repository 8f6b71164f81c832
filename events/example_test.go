package events_test

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// One factory per process: one event watch per scope, shared by every
	// spawner, for the factory's lifetime.
	f, err := reflector.NewFactory(cfg, reflector.Options{})
	if err != nil {
		panic(err)
	}
	defer f.Shutdown()
	idx, err := events.IndexFor(f, reflector.Scope{Namespaces: []string{"jupyter"}}, events.Options{})
	if err != nil {
		panic(err)
	}
	f.Start(ctx)

	// The UID comes from the created pod: events of an earlier pod with the
	// same name are never shown.
	pod := events.PodRef{Namespace: "jupyter", Name: "jupyter-alice", UID: types.UID("6b1c...")}
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	updates, err := idx.Stream(streamCtx, pod)
	if err != nil {
		panic(err)
	}
	for u := range updates { // closed once streamCtx (or the factory) ends
		if u.Degraded {
			fmt.Print("(slow) ")
		}
		fmt.Printf("%s %3d%% %s\n", u.Time.Format(time.TimeOnly), u.Progress, u.Message)
		if u.Event != nil && u.Event.Reason == "Started" {
			// From here, readiness is read from the pod. Cancelling ends
			// the stream's goroutine, which closes the channel and so
			// ends this loop: nothing is left running.
			stopStream()
		}
	}

	// Failure report: the last Warning events.
	evs := idx.Events(pod)
	for i := len(evs) - 1; i >= 0 && i >= len(evs)-3; i-- {
		if evs[i].Type == corev1.EventTypeWarning {
			fmt.Println(events.Message(evs[i]))
		}
	}
	idx.ForgetPod(pod.UID) // the pod is gone for good
}
