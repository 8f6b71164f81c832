package podproc

import (
	"net"
	"net/url"
	"regexp"
	"strings"
)

// ServiceURLEnv is the environment variable whose URL host is rewritten:
// JupyterHub 4+ tells the single-user server where to listen through it
// (Spawner.get_env's bind URL, "http://0.0.0.0:8888/user/name/").
const ServiceURLEnv = "JUPYTERHUB_SERVICE_URL"

// listenFlag matches the names of the flags whose wildcard value is
// rewritten: --ip, --<Name>App.ip (traitlets: ServerApp, NotebookApp,
// SingleUserNotebookApp, ...), --bind and --host.
var listenFlag = regexp.MustCompile(`^--(ip|[A-Za-z_][A-Za-z0-9_]*App\.ip|bind|host)$`)

// isWildcardHost reports whether h names every interface: "", 0.0.0.0, ::,
// [::] or * (Jupyter's and JupyterHub's spelling).
func isWildcardHost(h string) bool {
	switch h {
	case "", "0.0.0.0", "::", "[::]", "*":
		return true
	}
	return false
}

// unquote strips one pair of matching single or double quotes: traitlets
// evaluates a flag's value as a Python literal, so --ip='0.0.0.0' is the
// string 0.0.0.0 (JupyterHub's _quote_safe writes values that way).
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// rewriteValue returns the value of a listen flag with a wildcard host
// replaced by ip: a bare host ("0.0.0.0", "*", "", quoted or not) becomes
// ip, a host:port with a wildcard host ("0.0.0.0:8000", ":8000",
// "[::]:8000") becomes ip:port. Any other value is returned as it is.
func rewriteValue(v, ip string) (string, bool) {
	u := unquote(v)
	if isWildcardHost(u) {
		return ip, true
	}
	if host, port, err := net.SplitHostPort(u); err == nil && isWildcardHost(host) && port != "" {
		return net.JoinHostPort(ip, port), true
	}
	return v, false
}

// RewriteArgs returns args with every wildcard listen address replaced by
// ip, and a description of each rewrite. The forms rewritten are exactly:
//
//   - "--F=V" and "--F" "V" (two arguments), where F is ip, <Name>App.ip
//     (a traitlets class name ending in App), bind or host;
//   - and V is a wildcard host ("", "0.0.0.0", "::", "[::]", "*", each
//     also in single or double quotes) or such a host with a port
//     ("0.0.0.0:8000", ":8000", "[::]:8000"), which keeps its port.
//
// Nothing else is touched: not other flags, not a value naming a host
// ("127.0.0.1", "localhost"), not a flag given as one argument with a
// space, not the words of a shell script ("sh -c '... --ip=0.0.0.0'"), and
// not "--F" followed by another flag.
func RewriteArgs(args []string, ip string) ([]string, []string) {
	out := make([]string, len(args))
	copy(out, args)
	var notes []string
	for i := 0; i < len(out); i++ {
		a := out[i]
		if name, v, ok := strings.Cut(a, "="); ok {
			if listenFlag.MatchString(name) {
				if nv, changed := rewriteValue(v, ip); changed {
					out[i] = name + "=" + nv
					notes = append(notes, a+" -> "+out[i])
				}
			}
			continue
		}
		if listenFlag.MatchString(a) && i+1 < len(out) && !strings.HasPrefix(out[i+1], "-") {
			if nv, changed := rewriteValue(out[i+1], ip); changed {
				notes = append(notes, a+" "+out[i+1]+" -> "+a+" "+nv)
				out[i+1] = nv
			}
			i++
		}
	}
	return out, notes
}

// RewriteServiceURL returns the value of ServiceURLEnv with a wildcard host
// (0.0.0.0, ::, *, or none: "http://:8888/") replaced by ip, keeping the
// scheme, port, path and query. Any other value is returned as it is.
func RewriteServiceURL(v, ip string) (string, bool) {
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" {
		// "http://*:8888/" does not parse (a '*' host): rewrite it by hand.
		scheme, rest, ok := strings.Cut(v, "://")
		if !ok {
			return v, false
		}
		hostport, path, _ := strings.Cut(rest, "/")
		host, port, err := net.SplitHostPort(hostport)
		if err != nil || host != "*" {
			return v, false
		}
		out := scheme + "://" + net.JoinHostPort(ip, port)
		if strings.Contains(rest, "/") {
			out += "/" + path
		}
		return out, true
	}
	if !isWildcardHost(u.Hostname()) {
		return v, false
	}
	if port := u.Port(); port != "" {
		u.Host = net.JoinHostPort(ip, port)
	} else {
		u.Host = ip
	}
	return u.String(), true
}
