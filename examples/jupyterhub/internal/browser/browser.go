package browser

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// Path is Debian's chromium.
const Path = "/usr/bin/chromium"

// ErrNoChromium: chromium is not installed.
var ErrNoChromium = errors.New("browser: chromium is not installed at " + Path + ": run 'make chromium' (apt-get install chromium, as root)")

// Check fails with ErrNoChromium when chromium is missing.
func Check() error {
	if _, err := os.Stat(Path); err != nil {
		return ErrNoChromium
	}
	return nil
}

// Browser is one headless chromium and its tab.
type Browser struct {
	tab         context.Context
	cancelTab   context.CancelFunc
	cancelAlloc context.CancelFunc
}

// Start runs chromium; ctx bounds the browser's whole life.
func Start(ctx context.Context) (*Browser, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Path),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(actx)
	// The first action starts the browser: fail here, not in a test step.
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		cancelTab()
		cancelAlloc()
		return nil, fmt.Errorf("browser: starting chromium: %w", err)
	}
	return &Browser{tab: tab, cancelTab: cancelTab, cancelAlloc: cancelAlloc}, nil
}

// Tab is the context every chromedp action of the tab runs on.
func (b *Browser) Tab() context.Context { return b.tab }

// Screenshot writes the tab's visible page to out/<name>.png at the root
// of the repository and returns the path.
func (b *Browser) Screenshot(name string) (string, error) {
	ctx, cancel := context.WithTimeout(b.tab, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", err
	}
	dir, err := outDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".png")
	return path, os.WriteFile(path, png, 0o644)
}

// LogIn logs user in on the hub's login page (hubURL/hub/login; the
// rig's dummy authenticator takes any password) and waits, at most
// timeout, until the hub answered the form, so the session cookie is set.
func (b *Browser) LogIn(hubURL, user string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(b.tab, timeout)
	defer cancel()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(hubURL+"/hub/login"),
		chromedp.WaitVisible(chromedp.ID("username_input")),
		chromedp.SendKeys(chromedp.ID("username_input"), user),
		chromedp.SendKeys(chromedp.ID("password_input"), "any"),
		chromedp.Click(chromedp.ID("login_submit")),
	); err != nil {
		return fmt.Errorf("browser: log in as %s: %w", user, err)
	}
	return b.waitLocation(ctx, func(loc string) bool { return !strings.Contains(loc, "/hub/login") }, "leave the login page")
}

// OpenTree opens user's notebook tree page through the hub (its proxy,
// then the single-user server's OAuth with the hub) and waits, at most
// timeout, until the page shows its file list. The user must be logged
// in (LogIn) and the server running.
func (b *Browser) OpenTree(hubURL, user string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(b.tab, timeout)
	defer cancel()
	path := "/user/" + url.PathEscape(user) + "/tree"
	if err := chromedp.Do(ctx, chromedp.Navigate(hubURL+path)); err != nil {
		return fmt.Errorf("browser: open %s: %w", path, err)
	}
	if err := b.waitLocation(ctx, func(loc string) bool { return strings.Contains(loc, path) }, "reach "+path); err != nil {
		return err
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("notebook_list"))); err != nil {
		return fmt.Errorf("browser: the tree page of %s shows no file list: %w", user, err)
	}
	return nil
}

// waitLocation polls the tab's location (a redirect chain is under way)
// until ok holds or ctx ends.
func (b *Browser) waitLocation(ctx context.Context, ok func(string) bool, what string) error {
	for {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err == nil && ok(loc) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("browser: %s: still at %s (%v): %w", what, loc, err, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close closes the browser and waits for its process to exit (the
// allocator removes its temporary profile).
func (b *Browser) Close() {
	_ = chromedp.Cancel(b.tab)
	b.cancelTab()
	b.cancelAlloc()
}

// outDir is the repository's out/ (created), found from this file.
func outDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("browser: cannot locate the repository")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "out")
	return dir, os.MkdirAll(dir, 0o755)
}
