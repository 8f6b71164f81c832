package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// meter counts, on the client side of one client (below client-go, above
// net/http's transparent gzip), the response bytes as decoded
// (uncompressed) and the pods serialised: the items of pod lists (full or
// metadata-only), single pods, and the pod events of watches (bookmarks and
// errors excluded). The proxy counts the same responses' bytes on the wire.
type meter struct {
	bytes atomic.Int64
	pods  atomic.Int64
}

func (m *meter) reset() { m.bytes.Store(0); m.pods.Store(0) }

// wrap returns a copy of cfg whose requests m counts.
func (m *meter) wrap(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &meterRT{rt: rt, m: m} })
	return c
}

type meterRT struct {
	rt http.RoundTripper
	m  *meter
}

func (t *meterRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet {
		return resp, err
	}
	q := req.URL.Query()
	// .../pods (a list or watch) or .../pods/NAME (a get); not a
	// subresource (.../pods/NAME/status) nor another resource.
	path := req.URL.Path
	isPods := false
	if i := strings.LastIndex(path, "/pods"); i >= 0 {
		rest := path[i+len("/pods"):]
		isPods = rest == "" || rest[0] == '/' && !strings.Contains(rest[1:], "/")
	}
	b := &meterBody{rc: resp.Body, m: t.m, proto: strings.Contains(resp.Header.Get("Content-Type"), "protobuf")}
	switch {
	case !isPods || resp.StatusCode != http.StatusOK:
	case q.Get("watch") == "true" || q.Get("watch") == "1":
		b.watch = true
		if !b.proto {
			pr, pw := io.Pipe()
			b.pw = pw
			b.done = make(chan struct{})
			go func() { defer close(b.done); countJSONEvents(pr, t.m) }()
		}
	default:
		b.list = true
	}
	resp.Body = b
	return resp, nil
}

type meterBody struct {
	rc    io.ReadCloser
	m     *meter
	proto bool
	watch bool
	list  bool
	buf   bytes.Buffer
	pw    *io.PipeWriter
	done  chan struct{}
	once  sync.Once
}

func (b *meterBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.m.bytes.Add(int64(n))
		switch {
		case b.watch && b.proto:
			b.buf.Write(p[:n])
			b.protoFrames()
		case b.watch:
			_, _ = b.pw.Write(p[:n])
		case b.list:
			b.buf.Write(p[:n])
		}
	}
	if err == io.EOF {
		b.finish()
	}
	return n, err
}

func (b *meterBody) Close() error {
	err := b.rc.Close()
	b.finish()
	return err
}

func (b *meterBody) finish() {
	b.once.Do(func() {
		if b.pw != nil {
			_ = b.pw.Close()
			<-b.done
		}
		if b.list && b.buf.Len() > 0 {
			b.m.pods.Add(int64(countItems(b.buf.Bytes())))
			b.buf = bytes.Buffer{}
		}
	})
}

// protoFrames counts the complete length-delimited frames of a protobuf
// watch stream (each a metav1.WatchEvent).
func (b *meterBody) protoFrames() {
	for {
		data := b.buf.Bytes()
		if len(data) < 4 {
			return
		}
		n := int(binary.BigEndian.Uint32(data[:4]))
		if len(data) < 4+n {
			return
		}
		var ev metav1.WatchEvent
		if ev.Unmarshal(data[4:4+n]) == nil && isPodEvent(ev.Type) {
			b.m.pods.Add(1)
		}
		b.buf.Next(4 + n)
	}
}

func isPodEvent(t string) bool { return t == "ADDED" || t == "MODIFIED" || t == "DELETED" }

func countJSONEvents(r io.Reader, m *meter) {
	d := json.NewDecoder(r)
	for {
		var ev struct {
			Type string `json:"type"`
		}
		if err := d.Decode(&ev); err != nil {
			_, _ = io.Copy(io.Discard, r)
			return
		}
		if isPodEvent(ev.Type) {
			m.pods.Add(1)
		}
	}
}

var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = metav1.AddMetaToScheme(s)
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return serializer.NewCodecFactory(s).UniversalDeserializer()
}()

// countItems counts the pods of a decoded GET response: the items of a
// list, or one for a single pod.
func countItems(body []byte) int {
	obj, _, err := decoder.Decode(body, nil, nil)
	if err != nil {
		return 0
	}
	if meta.IsListType(obj) {
		return meta.LenList(obj)
	}
	if _, ok := obj.(*corev1.Pod); ok {
		return 1
	}
	return 0
}
