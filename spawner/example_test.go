package spawner_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// A spawner service in a page: one shared pod cache for the namespace, a
// Spawner on top, a sweeper under leader election, and start/stop/poll per
// user. (It needs a cluster, so it is compiled but not run.)
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := clientcmd.BuildConfigFromFlags("", clientcmd.RecommendedHomeFile)
	if err != nil {
		log.Fatal(err)
	}
	const ns = "users"

	// One factory per process: one watch per scope, shared by every
	// spawner; its lifetime is ctx.
	f, err := reflector.NewFactory(cfg, reflector.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer f.Shutdown()
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{ns}, LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	if err != nil {
		log.Fatal(err)
	}
	progress, err := events.IndexFor(f, reflector.Scope{Namespaces: []string{ns}}, events.Options{})
	if err != nil {
		log.Fatal(err)
	}
	f.Start(ctx)
	if err := f.WaitForCacheSync(ctx); err != nil {
		log.Fatal(err)
	}

	sp, err := spawner.New(spawner.Options{
		Client:       f.Client(),
		Pods:         pods,
		Events:       progress,
		Instance:     "hub-1",
		NamePrefix:   "jupyter",
		StartTimeout: 5 * time.Minute,
		StopTimeout:  time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}

	// Cull what a crash may have left: pods older than a day, or unknown to
	// the service. Only the leader among the replicas sweeps.
	go func() {
		_ = sp.RunSweeper(ctx, spawner.SweeperOptions{
			Interval: 10 * time.Minute,
			Policy: spawner.SweepPolicy{
				Namespace: ns, MaxAge: 24 * time.Hour, Delete: true,
				// Pods of users the service no longer has are orphans.
				Select: func(ctx context.Context, pod *corev1.Pod) (spawner.SweepReason, error) {
					if userIsActive(pod.Annotations[spawner.AnnotationKey]) {
						return "", nil
					}
					return spawner.SweepReasonOrphan, nil
				},
			},
		})
	}()

	res, err := sp.Start(ctx, spawner.Request{
		Key:       "alice@example.com",
		Namespace: ns,
		Spec: &corev1.PodSpec{Containers: []corev1.Container{{
			Name: "notebook", Image: "quay.io/jupyter/base-notebook:latest",
		}}},
		Progress: func(u events.Update) { fmt.Printf("%3d%% %s\n", u.Progress, u.Message) },
	})
	var se *spawner.StartError
	switch {
	case errors.Is(err, spawner.ErrImagePull), errors.Is(err, spawner.ErrInvalidImage):
		// Tell the user to fix the image; the pod is already deleted.
		log.Printf("bad image: %v", err)
		return
	case errors.As(err, &se):
		log.Printf("start of %s failed (%v), pod deleted: %v", se.Name, se.Reason, se.Deleted)
		return
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("running at", res.PodIP)

	st, err := sp.Poll(ctx, ns, res.Name)
	if err == nil && st.State == spawner.StateStopped {
		log.Printf("pod stopped: %s (exit code %v)", st.Reason, st.ExitCode)
	}
	if err := sp.Stop(ctx, ns, res.Name, spawner.StopOptions{UID: res.UID}); err != nil {
		log.Printf("stop: %v", err)
	}
}

func userIsActive(key string) bool { return key != "" }
