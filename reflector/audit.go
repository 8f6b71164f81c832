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
	"k8s.io/client-go/tools/cache"
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

// audit compares the cache with a metadata-only list of the scope. An
// object that differs in two comparisons while the server's copy stayed
// the same was missed by the watch: the cache is repaired by a relist.
func (s *shard[T]) audit(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	s.lastAudit = now
	s.mu.Unlock()
	first, err := s.serverSnapshot(ctx)
	if err != nil {
		s.r.logger.V(2).Info("Audit list failed", "reflector", s.r.opts.Name, "namespace", s.namespace, "err", err)
		return
	}
	diffs := s.diff(first)
	if len(diffs) == 0 {
		s.mu.Lock()
		s.lastConfirmed = s.now()
		s.mu.Unlock()
		return
	}
	// Give in-flight events time to land, then look again.
	settle := min(2*time.Second, s.r.opts.StallTimeout/2)
	select {
	case <-ctx.Done():
		return
	case <-s.r.opts.Clock.After(settle):
	}
	second, err := s.serverSnapshot(ctx)
	if err != nil {
		return
	}
	confirmed := 0
	for key := range s.diff(second) {
		if _, was := diffs[key]; was && first[key] == second[key] {
			confirmed++
		}
	}
	if confirmed == 0 {
		s.mu.Lock()
		s.lastConfirmed = s.now()
		s.mu.Unlock()
		return
	}
	s.r.stats.drift(confirmed)
	s.restart(GapDrift, RelistDrift, fmt.Sprintf("audit: %d object(s) differ from the server", confirmed))
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
		key, _ := cache.MetaNamespaceKeyFunc(obj)
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

// serverSnapshot lists the scope's metadata, page by page, with a
// consistent read.
func (s *shard[T]) serverSnapshot(ctx context.Context) (snapshot, error) {
	rc := s.r.kind.RESTClient(s.r.client)
	var list pager.ListPageFunc
	if rc == nil || reflect.ValueOf(rc).IsNil() {
		// A fake clientset has no REST client: typed list.
		list = func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return s.r.kind.List(ctx, s.r.client, s.namespace, opts)
		}
	} else {
		list = func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return metadataList(ctx, rc, s.r.kind.Resource, s.namespace, opts)
		}
	}
	p := pager.New(list)
	p.PageSize = auditPageSize
	snap := snapshot{}
	err := p.EachListItem(ctx, metav1.ListOptions{
		LabelSelector: s.r.opts.Scope.LabelSelector,
		FieldSelector: s.r.opts.Scope.FieldSelector,
	}, func(obj runtime.Object) error {
		m, err := meta.Accessor(obj)
		if err != nil {
			return err
		}
		snap[m.GetNamespace()+"/"+m.GetName()] = version{uid: m.GetUID(), rv: m.GetResourceVersion()}
		return nil
	})
	s.r.stats.audit()
	return snap, err
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
