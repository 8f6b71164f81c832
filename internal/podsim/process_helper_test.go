//go:build integration

package podsim_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// helperSource is the program the process pods of these tests run. It
// records its start (args, environment, working directory) in start.json in
// its working directory, then exits with -exit, or listens on -ip:-port and
// serves /healthz (503 until -ready-file exists in its working directory)
// and /info (its listen address and start record). A SIGTERM is appended to
// signals.txt; it exits 0 on it unless -ignore-term.
const helperSource = `package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	ip := flag.String("ip", "127.0.0.1", "")
	port := flag.Int("port", 8888, "")
	exit := flag.Int("exit", -1, "")
	ignoreTerm := flag.Bool("ignore-term", false, "")
	readyFile := flag.String("ready-file", "", "")
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fmt.Println("helper: args", os.Args[1:])
	cwd, _ := os.Getwd()
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	info := map[string]any{"args": os.Args[1:], "env": env, "cwd": cwd}
	b, _ := json.Marshal(info)
	if err := os.WriteFile("start.json", b, 0o644); err != nil {
		fmt.Println("helper:", err)
		os.Exit(2)
	}
	if *exit >= 0 {
		fmt.Println("helper: exiting with", *exit)
		os.Exit(*exit)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(*ip, strconv.Itoa(*port)))
	if err != nil {
		fmt.Println("helper:", err)
		os.Exit(2)
	}
	info["addr"] = l.Addr().String()
	fmt.Println("helper: listening on", l.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if *readyFile != "" {
			if _, err := os.Stat(*readyFile); err != nil {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(info) })
	go http.Serve(l, mux)
	for range sigs {
		f, err := os.OpenFile("signals.txt", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, "SIGTERM")
			f.Close()
		}
		fmt.Println("helper: got SIGTERM")
		if !*ignoreTerm {
			os.Exit(0)
		}
	}
}
`

// buildHelper builds helperSource into a directory of t and returns the
// binary's path.
func buildHelper(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(helperSource), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module podsimhelper\n\ngo 1.22\n"), 0o644))
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "helper")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build of the helper: %s", out)
	return bin
}
