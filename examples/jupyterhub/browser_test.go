//go:build integration

package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/browser"
)

// recordProgress keeps every message of the spawn-pending page's event
// stream in localStorage, which survives the page's reload into the
// user's server: installed before any page script runs.
const recordProgress = `(() => {
  const Orig = window.EventSource;
  if (!Orig || Orig.__kubespawn) return;
  window.EventSource = function (url, opts) {
    const es = new Orig(url, opts);
    es.addEventListener("message", (e) => {
      const log = JSON.parse(localStorage.getItem("kubespawn-progress") || "[]");
      log.push(e.data);
      localStorage.setItem("kubespawn-progress", JSON.stringify(log));
    });
    return es;
  };
  window.EventSource.__kubespawn = true;
})();`

// TestBrowserLogInStartAndReachTheServer: a user logs in on the hub's
// page, the hub starts the server, the spawn-pending page shows
// kubespawn's progress (its event stream), and the browser lands on the
// user's server.
func TestBrowserLogInStartAndReachTheServer(t *testing.T) {
	require.NoError(t, browser.Check())
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute})
	b, err := browser.Start(context.Background()) // not t.Context(): it ends before the cleanups, which screenshot a failure
	require.NoError(t, err)
	t.Cleanup(b.Close)
	tab := b.Tab()
	shot := func(name string) {
		path, err := b.Screenshot(name)
		if err != nil {
			t.Logf("screenshot %s: %v", name, err)
			return
		}
		t.Logf("screenshot: %s", path)
	}
	t.Cleanup(func() {
		if t.Failed() {
			shot("browser-failure")
			ctx, cancel := context.WithTimeout(tab, 5*time.Second)
			defer cancel()
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			t.Logf("the page at %s says:\n%s", loc, body)
		}
	})
	_, err = chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recordProgress})
	require.NoError(t, err)

	// Every step has a deadline: a page that never shows what is waited
	// for fails the test (with a screenshot) instead of hanging it.
	step := func(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
		ctx, cancel := context.WithTimeout(tab, d)
		defer cancel()
		return chromedp.Do(ctx, actions...)
	}
	require.NoError(t, step(30*time.Second,
		chromedp.Navigate(e.Hub.URL+"/hub/login"),
		chromedp.WaitVisible(chromedp.ID("username_input")),
		chromedp.SendKeys(chromedp.ID("username_input"), "ada"),
		chromedp.SendKeys(chromedp.ID("password_input"), "any"),
		chromedp.Click(chromedp.ID("login_submit")),
	))
	// The hub sends a user who logs in without a server to /hub/spawn,
	// which starts it (no form here) and shows the spawn-pending page.

	// The spawn-pending page reloads into the server once it is ready.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		defer cancel()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.Contains(loc, "/user/ada/")
	}, 2*time.Minute, 200*time.Millisecond, "the browser reaches the user's server")
	body, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("body")))
	require.NoError(t, err)
	assert.Contains(t, body, "notebook server of ada")
	shot("browser-server")

	raw, err := chromedp.Run(tab, chromedp.Evaluate[string](`localStorage.getItem("kubespawn-progress") || "[]"`))
	require.NoError(t, err)
	var datas []string
	require.NoError(t, json.Unmarshal([]byte(raw), &datas))
	var messages []string
	for _, d := range datas {
		var ev struct {
			Message string `json:"message"`
			Ready   bool   `json:"ready"`
		}
		if json.Unmarshal([]byte(d), &ev) == nil && ev.Message != "" {
			messages = append(messages, ev.Message)
		}
	}
	t.Logf("progress shown: %q", messages)
	joined := strings.Join(messages, "\n")
	assert.Contains(t, joined, "Successfully assigned", "kubespawn's progress (the pod's Scheduled event) reached the page")
	assert.Contains(t, joined, "Started container notebook")
	assert.Contains(t, joined, "Server ready at /user/ada/")
	require.NoError(t, e.StopAll(t.Context(), []string{"ada"}))
}
