package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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
