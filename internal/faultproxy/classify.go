package faultproxy

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Verb is the Kubernetes API verb of a request, as the kube-apiserver's
// request-info resolver names it: "get", "list", "watch", "create",
// "update", "patch", "delete", "deletecollection" for resource requests
// (and "proxy" for the legacy /proxy/ prefix), and the lower-cased HTTP
// method ("get", "post", ...) for non-resource requests such as /version or
// /healthz. The empty Verb in a Match matches every verb.
type Verb string

// The verbs of resource requests.
const (
	VerbGet              Verb = "get"
	VerbList             Verb = "list"
	VerbWatch            Verb = "watch"
	VerbCreate           Verb = "create"
	VerbUpdate           Verb = "update"
	VerbPatch            Verb = "patch"
	VerbDelete           Verb = "delete"
	VerbDeleteCollection Verb = "deletecollection"
	VerbProxy            Verb = "proxy"
)

// RequestInfo is what Classify learns about a request from its method, path
// and query. It mirrors the kube-apiserver's RequestInfo closely enough to
// select requests for faults and accounting; it is not an authorization
// decision.
type RequestInfo struct {
	// IsResourceRequest is true for /api/{version}/... and
	// /apis/{group}/{version}/... paths that name a resource; false for
	// discovery (/api, /apis/{group}/{version}) and non-resource paths.
	IsResourceRequest bool
	Verb              Verb
	// Group is "" for the core group (/api/v1).
	Group   string
	Version string
	// Resource is the plural resource name ("pods"); Subresource is set for
	// paths like pods/{name}/status or pods/{name}/log.
	Resource    string
	Subresource string
	// Namespace is "" for cluster-scoped requests and for requests across
	// all namespaces. As in the apiserver, a request on a namespace object
	// itself (/api/v1/namespaces/{name}) has Namespace == Name.
	Namespace string
	// Name is the object name from the path or, for list and watch, from a
	// fieldSelector of the form metadata.name=NAME.
	Name string
	// Path is the URL path of the request.
	Path string
	// TimeoutSeconds is a list or watch's timeoutSeconds parameter (0 when
	// absent): a reflector's main watch asks for minutes, a probe for
	// seconds.
	TimeoutSeconds int
}

// Key returns the accounting key of the request: its verb and its resource,
// written "resource/subresource" when a subresource is addressed. Non-resource
// requests have an empty Resource.
func (ri RequestInfo) Key() Key {
	r := ri.Resource
	if ri.Subresource != "" {
		r += "/" + ri.Subresource
	}
	return Key{Verb: ri.Verb, Resource: r}
}

// namespaceSubresources are the path segments after /namespaces/{name} that
// are subresources of the namespace rather than namespaced resources.
var namespaceSubresources = map[string]bool{"status": true, "finalize": true}

// Classify derives the RequestInfo of a request with the given HTTP method
// and URL, following the rules of the kube-apiserver's RequestInfoFactory:
//
//   - /api/{version}/... is the core group, /apis/{group}/{version}/... any
//     other group; shorter paths and every other path are non-resource
//     requests whose verb is the lower-cased method.
//   - /namespaces/{ns}/{resource}[/{name}[/{subresource}]] is namespaced,
//     {resource}[/{name}[/{subresource}]] cluster-scoped or across all
//     namespaces; /namespaces/{name}[/status|/finalize] addresses the
//     namespace itself.
//   - GET and HEAD are "get" with a name, "list" without one, and "watch"
//     without one when the watch query parameter is present and not "false"
//     or "0" (so ?watch=true and ?watch=1). The legacy /watch/ prefix
//     (/api/v1/watch/namespaces/ns/pods) is "watch" too.
//   - POST is "create", PUT "update", PATCH "patch", DELETE "delete", or
//     "deletecollection" without a name.
//
// Classify never fails: anything it does not recognise is a non-resource
// request.
func Classify(method string, u *url.URL) RequestInfo {
	ri := RequestInfo{Path: u.Path, Verb: Verb(strings.ToLower(method))}
	parts := splitPath(u.Path)
	if len(parts) < 3 || (parts[0] != "api" && parts[0] != "apis") {
		return ri
	}
	prefix := parts[0]
	parts = parts[1:]
	var group string
	if prefix == "apis" {
		if len(parts) < 3 {
			return ri // /apis/{group}/{version}: discovery
		}
		group = parts[0]
		parts = parts[1:]
	}
	version := parts[0]
	parts = parts[1:]

	if parts[0] == "watch" || parts[0] == "proxy" {
		if len(parts) < 2 {
			return ri // the apiserver rejects this; not a resource request
		}
		ri.Verb = Verb(parts[0])
		parts = parts[1:]
	} else {
		switch method {
		case http.MethodPost:
			ri.Verb = VerbCreate
		case http.MethodGet, http.MethodHead:
			ri.Verb = VerbGet
		case http.MethodPut:
			ri.Verb = VerbUpdate
		case http.MethodPatch:
			ri.Verb = VerbPatch
		case http.MethodDelete:
			ri.Verb = VerbDelete
		default:
			ri.Verb = ""
		}
	}
	ri.IsResourceRequest = true
	ri.Group, ri.Version = group, version

	if parts[0] == "namespaces" && len(parts) > 1 {
		ri.Namespace = parts[1]
		if len(parts) > 2 && !namespaceSubresources[parts[2]] {
			parts = parts[2:]
		}
	}
	switch {
	case len(parts) >= 3 && ri.Verb != VerbProxy:
		ri.Subresource = parts[2]
		fallthrough
	case len(parts) >= 2:
		ri.Name = parts[1]
		fallthrough
	default:
		ri.Resource = parts[0]
	}

	if ri.Name == "" && ri.Verb == VerbGet {
		q := u.Query()
		ri.Verb = VerbList
		if vs, ok := q["watch"]; ok && len(vs) > 0 {
			switch strings.ToLower(vs[0]) {
			case "false", "0":
			default:
				ri.Verb = VerbWatch
			}
		}
		if name, ok := exactNameSelector(q.Get("fieldSelector")); ok {
			ri.Name = name
		}
		ri.TimeoutSeconds, _ = strconv.Atoi(q.Get("timeoutSeconds"))
	}
	if ri.Name == "" && ri.Verb == VerbDelete {
		ri.Verb = VerbDeleteCollection
	}
	return ri
}

// exactNameSelector reports the NAME of a field selector that consists of the
// single requirement metadata.name=NAME (or ==).
func exactNameSelector(sel string) (string, bool) {
	if sel == "" || strings.Contains(sel, ",") {
		return "", false
	}
	var k, v string
	var ok bool
	if k, v, ok = strings.Cut(sel, "=="); !ok {
		if strings.Contains(sel, "!=") {
			return "", false
		}
		if k, v, ok = strings.Cut(sel, "="); !ok {
			return "", false
		}
	}
	if strings.TrimSpace(k) != "metadata.name" {
		return "", false
	}
	v = strings.TrimSpace(v)
	if v == "" || strings.ContainsAny(v, "/%") || v == "." || v == ".." {
		return "", false
	}
	return v, true
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// Match selects the requests a fault applies to. Every non-empty field must
// equal the request's; the zero Match matches every request.
type Match struct {
	// Verb is the API verb (see Verb); "" matches any.
	Verb Verb
	// Resource is the plural resource name: "pods" matches requests on pods
	// and on every pod subresource; "pods/status" matches only that
	// subresource; "leases.coordination.k8s.io" also requires the API group
	// ("pods." names the core group). "" matches any request, including
	// non-resource ones.
	Resource string
	// Namespace is the request's namespace; "" matches any, including
	// cluster-scoped and all-namespaces requests.
	Namespace string
	// MinTimeout, when set, matches only lists and watches whose
	// timeoutSeconds is at least that long: the reflectors' long main
	// watches, not their short probes.
	MinTimeout time.Duration
	// MaxTimeout, when set, matches only lists and watches that carry a
	// timeoutSeconds of at most that long: the reflectors' short probes
	// (timeoutSeconds=1), not their main watches (minutes), nor requests
	// without one.
	MaxTimeout time.Duration
}

// Matches reports whether a request with the given info is selected by m.
func (m Match) Matches(ri RequestInfo) bool {
	if m.Verb != "" && m.Verb != ri.Verb {
		return false
	}
	if m.Namespace != "" && m.Namespace != ri.Namespace {
		return false
	}
	if m.MinTimeout > 0 && time.Duration(ri.TimeoutSeconds)*time.Second < m.MinTimeout {
		return false
	}
	if m.MaxTimeout > 0 && (ri.TimeoutSeconds <= 0 || time.Duration(ri.TimeoutSeconds)*time.Second > m.MaxTimeout) {
		return false
	}
	if m.Resource == "" {
		return true
	}
	res, sub, hasSub := strings.Cut(m.Resource, "/")
	res, group, hasGroup := strings.Cut(res, ".")
	if res != ri.Resource || (hasGroup && group != ri.Group) {
		return false
	}
	return !hasSub || sub == ri.Subresource
}
