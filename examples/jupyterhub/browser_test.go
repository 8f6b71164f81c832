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
// page, picks a profile on the spawn form and clicks Start; the
// spawn-pending page shows kubespawn's progress (its event stream), and
// the real notebook server's tree page loads in the browser, reached
// through the hub's proxy and its OAuth.
func TestBrowserLogInStartAndReachTheServer(t *testing.T) {
	parallelHub(t)
	require.NoError(t, browser.Check())
	e := newHubEnv(t, hubConfig{startTimeout: 90 * time.Second, sweep: time.Minute, realServers: true, profiles: true})
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
			logProcessPods(t, e)
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
		// With profiles, the hub shows the spawn form first.
		chromedp.WaitVisible(chromedp.ID("profile-item-large")),
	))
	shot("browser-spawn-form")
	require.NoError(t, step(30*time.Second,
		chromedp.Click(chromedp.ID("profile-item-large")),
		chromedp.Submit(chromedp.ID("spawn_form")),
	))

	// The spawn-pending page reloads into the server once it is ready;
	// the notebook's tree page says so with its file list.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		defer cancel()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.Contains(loc, "/user/ada/tree")
	}, 3*time.Minute, 250*time.Millisecond, "the browser reaches the notebook's tree page")
	require.NoError(t, step(30*time.Second, chromedp.WaitVisible(chromedp.ID("notebook_list"))))
	title, err := chromedp.Run(tab, chromedp.Title())
	require.NoError(t, err)
	assert.Contains(t, title, "Home", "the notebook's tree page")
	shot("browser-notebook")

	raw, err := chromedp.Run(tab, chromedp.Evaluate[string](`localStorage.getItem("kubespawn-progress") || "[]"`))
	require.NoError(t, err)
	var datas []string
	require.NoError(t, json.Unmarshal([]byte(raw), &datas))
	var messages []string
	for _, d := range datas {
		var ev struct {
			Message string `json:"message"`
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

	pod, err := e.UserPod(t.Context(), "ada")
	require.NoError(t, err)
	require.NotNil(t, pod)
	assert.Equal(t, map[string]string{"kubespawn.test/size": "large"}, pod.Spec.NodeSelector, "the profile picked in the form")
	require.NoError(t, e.StopAll(t.Context(), []string{"ada"}))
}
