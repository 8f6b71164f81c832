// Package browser drives Debian's chromium, headless, through chromedp,
// for the JupyterHub rig's browser tests: a user's view of the hub (log
// in, pick a profile, start, watch the progress, reach the notebook).
//
// Contract:
//   - Check says whether chromium is installed at /usr/bin/chromium;
//     otherwise its error says how to install it (`make chromium`):
//     callers fail, nothing is ever skipped.
//   - Start runs one browser (its own temporary profile directory, no
//     sandbox when running as root, as Debian's chromium needs there) and
//     returns a tab; every action runs on the tab's context, bounded by
//     the caller's.
//   - LogIn and OpenTree are the steps a user takes to reach a running
//     server's notebook tree page through the hub (make demo-jupyterhub
//     screenshots it); each is bounded by its timeout and returns once the
//     page shows what the step waits for.
//   - Screenshot writes a PNG of the tab to the repository's out/
//     directory and returns its path.
//   - Close ends the browser and waits for its process to exit: no
//     chromium is left running after a test.
//
// chromedp (github.com/chromedp/chromedp) speaks the DevTools protocol
// straight to the browser: no WebDriver server to run beside it, which a
// Selenium-style driver would need.
package browser
