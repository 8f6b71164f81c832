// Command localcluster starts kubespawn's local control plane (etcd and
// kube-apiserver from bin/, see `make tools`) with the pod simulator,
// writes a kubeconfig, and runs until interrupted. It is for people trying
// kubespawn by hand, e.g. with the sidecar:
//
//	go run ./internal/cmd/localcluster -kubeconfig /tmp/kubespawn.kubeconfig
//	go run ./examples/sidecar --kubeconfig /tmp/kubespawn.kubeconfig
package main
