package reflector

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/pager"
)

// auditPageSize bounds each page of the audit's list.
const auditPageSize = 500

// metadataAccept asks for object metadata only (names, UIDs,
// resourceVersions), in protobuf when the server can: a fraction of a full
// list's bytes.
const metadataAccept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1," +
	"application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"

var metaCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	if err := metav1.AddMetaToScheme(s); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(s, metav1.SchemeGroupVersion)
	return serializer.NewCodecFactory(s)
}()

// version is what the audit compares: identity and version of one object.
type version struct {
	uid types.UID
	rv  string
}

// snapshot maps namespace/name to version.
type snapshot map[string]version

type auditResult struct {
	started time.Time
	// confirmed counts objects that differed in two comparisons while the
	// server's copy stayed the same.
	confirmed int
	err       error
}

func (auditResult) isResult() {}

// runAudit compares the cache with a metadata-only list of the scope. An
// object that differs in two comparisons, a settle apart, while the
// server's copy stayed the same was missed by the watch.
func (s *shard[T]) runAudit(ctx context.Context, started time.Time) auditResult {
	r := auditResult{started: started}
	first, err := s.serverSnapshot(ctx)
	if err != nil {
		r.err = err
		return r
	}
	diffs := s.diff(first)
	if len(diffs) == 0 {
		return r
	}
	// Give in-flight events time to land, then look again.
	t := s.c.opts.Clock.NewTimer(min(2*time.Second, s.c.opts.StallTimeout/2))
	select {
	case <-ctx.Done():
		t.Stop()
		r.err = ctx.Err()
		return r
	case <-t.C():
	}
	second, err := s.serverSnapshot(ctx)
	if err != nil {
		r.err = err
		return r
	}
	for key := range s.diff(second) {
		if _, was := diffs[key]; was && first[key] == second[key] {
			r.confirmed++
		}
	}
	return r
}

// diff returns the keys whose cached version differs from snap: ghosts
// (cached, not on the server), missing (on the server, not cached) and
// stale (other UID, or an older resourceVersion in the cache).
func (s *shard[T]) diff(snap snapshot) map[string]struct{} {
	out := map[string]struct{}{}
	cached := snapshot{}
	for _, obj := range s.informer.GetStore().List() {
		m, err := meta.Accessor(obj)
		if err != nil {
			continue
		}
		key, _ := toolscache.MetaNamespaceKeyFunc(obj)
		cached[key] = version{uid: m.GetUID(), rv: m.GetResourceVersion()}
	}
	for key, c := range cached {
		sv, ok := snap[key]
		if !ok || sv.uid != c.uid || !rvAtLeast(c.rv, sv.rv) {
			out[key] = struct{}{}
		}
	}
	for key := range snap {
		if _, ok := cached[key]; !ok {
			out[key] = struct{}{}
		}
	}
	return out
}

// serverSnapshot lists the scope's metadata, page by page, each page with
// its own deadline.
func (s *shard[T]) serverSnapshot(ctx context.Context) (snapshot, error) {
	c := s.c
	rc := c.kind.restClient(c.client)
	list := func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		pctx, cancel := withDeadline(ctx, c.opts.Clock, c.opts.auditPageDeadline())
		defer cancel()
		if rc == nil || reflect.ValueOf(rc).IsNil() {
			// A fake clientset has no REST client: typed list.
			return c.kind.list(pctx, c.client, s.namespace, opts)
		}
		return metadataList(pctx, rc, c.kind.resource, s.namespace, opts)
	}
	p := pager.New(list)
	p.PageSize = auditPageSize
	snap := snapshot{}
	err := p.EachListItem(ctx, metav1.ListOptions{
		LabelSelector: c.scope.LabelSelector,
		FieldSelector: c.scope.FieldSelector,
	}, func(obj runtime.Object) error {
		m, err := meta.Accessor(obj)
		if err != nil {
			return err
		}
		snap[m.GetNamespace()+"/"+m.GetName()] = version{uid: m.GetUID(), rv: m.GetResourceVersion()}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit list: %w", err)
	}
	return snap, nil
}

func metadataList(ctx context.Context, rc rest.Interface, resource, namespace string, opts metav1.ListOptions) (runtime.Object, error) {
	raw, err := rc.Get().
		Namespace(namespace).
		Resource(resource).
		VersionedParams(&opts, scheme.ParameterCodec).
		SetHeader("Accept", metadataAccept).
		DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	obj, _, err := metaCodecs.UniversalDeserializer().Decode(raw, nil, &metav1.PartialObjectMetadataList{})
	if err != nil {
		return nil, fmt.Errorf("decode metadata list: %w", err)
	}
	return obj, nil
}
