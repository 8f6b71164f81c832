// Package manifest reads the examples' deploy/ YAML files and answers
// what their NetworkPolicies admit, for the tests that hold the
// manifests to what the services need.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// Read decodes every document of a YAML file into typed objects.
func Read(path string) ([]runtime.Object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var objs []runtime.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %s", path, err, doc)
		}
		objs = append(objs, obj)
	}
}

// Peer is a client pod: its labels, its namespace's labels, and whether
// it is in the policy's own namespace.
type Peer struct {
	Pod, Namespace map[string]string
	SameNamespace  bool
}

// Selects says whether sel matches set.
func Selects(sel *metav1.LabelSelector, set map[string]string) (bool, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(set)), nil
}

// Admits says whether policy admits TCP traffic to port from peer. An
// ipBlock peer is an error: it admits by address, which no test can
// judge by pod.
func Admits(policy *networkingv1.NetworkPolicy, port int, peer Peer) (bool, error) {
	for _, rule := range policy.Spec.Ingress {
		portOK := len(rule.Ports) == 0
		for _, p := range rule.Ports {
			portOK = portOK || p.Port == nil || p.Port.IntValue() == port
		}
		if !portOK {
			continue
		}
		if len(rule.From) == 0 {
			return true, nil
		}
		for _, from := range rule.From {
			if from.IPBlock != nil {
				return false, errors.New("manifest: an ipBlock peer admits by address")
			}
			nsOK := peer.SameNamespace
			if from.NamespaceSelector != nil {
				ok, err := Selects(from.NamespaceSelector, peer.Namespace)
				if err != nil {
					return false, err
				}
				nsOK = ok
			}
			podOK := true
			if from.PodSelector != nil {
				ok, err := Selects(from.PodSelector, peer.Pod)
				if err != nil {
					return false, err
				}
				podOK = ok
			}
			if nsOK && podOK {
				return true, nil
			}
		}
	}
	return false, nil
}
