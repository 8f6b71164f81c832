package podproc_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kubespawn/kubespawn/internal/podproc"
)

const ip = "127.244.0.9"

func TestRewriteArgs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in, want []string
	}{
		// KubeSpawner's and JupyterHub's forms.
		{[]string{"--ip=0.0.0.0", "--port=8888"}, []string{"--ip=" + ip, "--port=8888"}},
		{[]string{"--ip", "0.0.0.0", "--port", "8888"}, []string{"--ip", ip, "--port", "8888"}},
		{[]string{"--ip="}, []string{"--ip=" + ip}},
		{[]string{"--ip=''"}, []string{"--ip=" + ip}},
		{[]string{`--ip="0.0.0.0"`}, []string{"--ip=" + ip}},
		{[]string{"--ip=*"}, []string{"--ip=" + ip}},
		{[]string{"--ip=::"}, []string{"--ip=" + ip}},
		{[]string{"--ServerApp.ip=0.0.0.0"}, []string{"--ServerApp.ip=" + ip}},
		{[]string{"--NotebookApp.ip", "0.0.0.0"}, []string{"--NotebookApp.ip", ip}},
		{[]string{"--SingleUserNotebookApp.ip=0.0.0.0"}, []string{"--SingleUserNotebookApp.ip=" + ip}},
		// bind and host, with or without a port.
		{[]string{"--bind", "0.0.0.0"}, []string{"--bind", ip}},
		{[]string{"--bind=0.0.0.0:8000"}, []string{"--bind=" + ip + ":8000"}},
		{[]string{"--bind", ":8000"}, []string{"--bind", ip + ":8000"}},
		{[]string{"--host=[::]:8000"}, []string{"--host=" + ip + ":8000"}},
		// Left alone.
		{[]string{"--ip=127.0.0.1"}, []string{"--ip=127.0.0.1"}},
		{[]string{"--ip=localhost"}, []string{"--ip=localhost"}},
		{[]string{"--ip", "--port=8888"}, []string{"--ip", "--port=8888"}},
		{[]string{"-ip=0.0.0.0"}, []string{"-ip=0.0.0.0"}},
		{[]string{"--ServerApp.port=0"}, []string{"--ServerApp.port=0"}},
		{[]string{"--App.ip=0.0.0.0"}, []string{"--App.ip=0.0.0.0"}},
		{[]string{"--listen=0.0.0.0"}, []string{"--listen=0.0.0.0"}},
		{[]string{"-c", "serve --ip=0.0.0.0"}, []string{"-c", "serve --ip=0.0.0.0"}},
		{[]string{"0.0.0.0"}, []string{"0.0.0.0"}},
		{[]string{"--ip"}, []string{"--ip"}},
		{nil, []string{}},
	}
	for _, c := range cases {
		got, notes := podproc.RewriteArgs(c.in, ip)
		assert.Equal(t, c.want, got, "%q", c.in)
		assert.Equal(t, !assert.ObjectsAreEqual(c.in, c.want) && c.in != nil, len(notes) > 0, "notes for %q: %q", c.in, notes)
	}
	in := []string{"--ip=0.0.0.0"}
	podproc.RewriteArgs(in, ip)
	assert.Equal(t, "--ip=0.0.0.0", in[0], "the input was modified")
}

func TestRewriteServiceURL(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"http://0.0.0.0:8888/user/alice/":   "http://" + ip + ":8888/user/alice/",
		"http://*:8888/user/alice/":         "http://" + ip + ":8888/user/alice/",
		"http://:8888/":                     "http://" + ip + ":8888/",
		"http://[::]:8888/user/a/?x=1":      "http://" + ip + ":8888/user/a/?x=1",
		"https://0.0.0.0/":                  "https://" + ip + "/",
		"http://*:8888":                     "http://" + ip + ":8888",
		"http://127.0.0.1:8888/user/alice/": "http://127.0.0.1:8888/user/alice/",
		"http://hub:8081/hub/api":           "http://hub:8081/hub/api",
		"not a url":                         "not a url",
		"":                                  "",
	}
	for in, want := range cases {
		got, changed := podproc.RewriteServiceURL(in, ip)
		assert.Equal(t, want, got, in)
		assert.Equal(t, in != want, changed, in)
	}
}
