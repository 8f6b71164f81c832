package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "kubespawn.kubeconfig", "where to write the admin kubeconfig")
	simulate := flag.Bool("simulate-pods", true, "run the pod lifecycle simulator (scheduler and kubelet stand-in)")
	flag.Parse()
	if err := run(*kubeconfig, *simulate); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, simulate bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	c, err := testcluster.Start(ctx, testcluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	cfg := c.Config()
	if simulate {
		sim, err := podsim.Start(ctx, kubernetes.NewForConfigOrDie(cfg), podsim.Options{})
		if err != nil {
			return err
		}
		defer sim.Stop()
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubespawn"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["kubespawn"] = &clientcmdapi.Context{Cluster: "kubespawn", AuthInfo: "admin", Namespace: "default"}
	kc.CurrentContext = "kubespawn"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return err
	}
	fmt.Printf("control plane ready at %s in %s (pod simulator: %v)\nkubeconfig: %s\npress Ctrl-C to stop\n",
		cfg.Host, time.Since(start).Round(time.Millisecond), simulate, kubeconfig)
	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}
