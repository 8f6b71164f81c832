package reflector

import (
	"net"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/connrotation"
)

// NewForConfig is New with a client of the Reflector's own, built from cfg
// with a dedicated transport. When the Reflector restarts a stalled watch
// it closes every connection of that transport, so a TCP connection that
// went dead (HTTP/2 included, where closing one stream leaves the
// connection in the pool) is never reused. Prefer it to New in
// production.
func NewForConfig[T Object](cfg *rest.Config, kind Kind[T], opts Options) (*Reflector[T], error) {
	cfg = rest.CopyConfig(cfg)
	dialer := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	cfg.Dial = dialer.DialContext
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	r, err := New[T](client, kind, opts)
	if err != nil {
		return nil, err
	}
	r.closeConns = dialer.CloseAll
	return r, nil
}
