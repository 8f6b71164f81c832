package main

import (
	"encoding/xml"
	"fmt"
	"math"
	"strings"
)

// Chart colours.
const (
	colorBaseline  = "#d62728"
	colorKubespawn = "#1f77b4"
)

// renderSVG draws pods on the API server over time for both runs, with the
// stall marked: a hand-written SVG, no dependency.
func renderSVG(rep *Report) string {
	const (
		width, height            = 960, 580
		left, right, top, bottom = 80, 40, 140, 70
		plotW, plotH             = width - left - right, height - top - bottom
	)
	maxT, maxPods := 0.0, 0
	for _, r := range []RunResult{rep.Baseline, rep.Kubespawn} {
		for _, s := range r.Series {
			maxT = math.Max(maxT, s.T)
			maxPods = max(maxPods, s.Pods)
		}
	}
	maxT = math.Max(maxT, rep.Config.StallAt.Seconds()+1)
	xStep := niceStep(maxT, 10)
	xMax := math.Ceil(maxT/xStep) * xStep
	yStep := niceStep(float64(max(maxPods, 1)), 8)
	yMax := math.Max(yStep, math.Ceil(float64(maxPods)/yStep)*yStep)
	x := func(t float64) float64 { return left + t/xMax*plotW }
	y := func(v float64) float64 { return top + plotH - v/yMax*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc("Incident replay: pods on the API server, baseline vs kubespawn"))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="18" font-weight="bold">%s</text>`+"\n", left, esc("Pods on the API server during the 2018 incident replay"))
	c := rep.Config
	fmt.Fprintf(&b, `<text x="%d" y="50" fill="#555555">%s</text>`+"\n", left,
		esc(fmt.Sprintf("baseline: KubeSpawner 2018 replica; kubespawn: spawner + self-healing reflector. Same schedule, seed %d:", c.Seed)))
	fmt.Fprintf(&b, `<text x="%d" y="68" fill="#555555">%s</text>`+"\n", left,
		esc(fmt.Sprintf("%d users over %s, the pod watch silently stalled from t=%s to the end, start timeout %s.",
			c.Users, c.Duration, c.StallAt, c.StartTimeout)))

	// Grid, ticks and axes.
	b.WriteString(`<g id="axes" stroke="#000000" stroke-width="1">` + "\n")
	for v := 0.0; v <= yMax+1e-9; v += yStep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", x(0), y(v), x(xMax), y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" stroke="none">%s</text>`+"\n", x(0)-8, y(v)+4, esc(fmt.Sprintf("%g", v)))
	}
	for t := 0.0; t <= xMax+1e-9; t += xStep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x(t), y(0), x(t), y(0)+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" stroke="none">%s</text>`+"\n", x(t), y(0)+20, esc(fmt.Sprintf("%g", t)))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x(0), y(0), x(xMax), y(0))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x(0), y(0), x(0), y(yMax))
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(xMax/2), height-30, esc("time since the run started (s)"))
	fmt.Fprintf(&b, `<text x="20" y="%.1f" text-anchor="middle" transform="rotate(-90 20 %.1f)">%s</text>`+"\n", y(yMax/2), y(yMax/2), esc("pods on the API server"))

	// The stall.
	sx := x(c.StallAt.Seconds())
	fmt.Fprintf(&b, `<line id="stall-marker" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444444" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n", sx, y(0), sx, y(yMax))
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#444444">%s</text>`+"\n", sx+6, y(yMax)+14, esc(fmt.Sprintf("pod watch stalls (t=%gs)", c.StallAt.Seconds())))
	if d := rep.Kubespawn.StallDetectedAfter; d != nil {
		dx := x(c.StallAt.Seconds() + d.Seconds())
		fmt.Fprintf(&b, `<line id="stall-detected" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="2 3"/>`+"\n", dx, y(0), dx, y(yMax), colorKubespawn)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", dx+6, y(yMax)+30, colorKubespawn, esc(fmt.Sprintf("kubespawn detects it (+%.1fs)", d.Seconds())))
	}

	// The series: pods on the server (solid) and servers the hub believes
	// running (dashed); the gap between them is what leaked.
	runs := []struct {
		run   RunResult
		color string
	}{{rep.Baseline, colorBaseline}, {rep.Kubespawn, colorKubespawn}}
	for _, r := range runs {
		pods := make([]string, 0, len(r.run.Series))
		running := make([]string, 0, len(r.run.Series))
		for _, s := range r.run.Series {
			pods = append(pods, fmt.Sprintf("%.1f,%.1f", x(s.T), y(float64(s.Pods))))
			running = append(running, fmt.Sprintf("%.1f,%.1f", x(s.T), y(float64(s.Running))))
		}
		fmt.Fprintf(&b, `<polyline id="running-%s" class="running" fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="5 4" stroke-opacity="0.8" points="%s"><title>%s</title></polyline>`+"\n",
			r.run.Name, r.color, strings.Join(running, " "), esc(r.run.Label+": servers the hub believes running"))
		fmt.Fprintf(&b, `<polyline id="series-%s" class="series" fill="none" stroke="%s" stroke-width="2.5" stroke-linejoin="round" points="%s"><title>%s</title></polyline>`+"\n",
			r.run.Name, r.color, strings.Join(pods, " "), esc(fmt.Sprintf("%s: pods on the API server (%d leaked)", r.run.Label, r.run.Leaked)))
	}

	// Legend, above the plot: one column per run.
	b.WriteString(`<g id="legend">` + "\n")
	for i, r := range runs {
		lx := float64(left) + float64(i)*430
		for j, item := range []struct{ dash, text string }{
			{"", fmt.Sprintf("%s: pods on the server (%d leaked)", r.run.Name, r.run.Leaked)},
			{` stroke-dasharray="5 4"`, r.run.Name + ": servers the hub believes running"},
		} {
			yy := 96 + float64(j)*20
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%s"%s/>`+"\n", lx, yy, lx+28, yy, r.color, map[bool]string{true: "3", false: "1.5"}[j == 0], item.dash)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+36, yy+4, esc(item.text))
		}
	}
	b.WriteString("</g>\n</svg>\n")
	return b.String()
}

// niceStep returns a 1, 2 or 5 x 10^k step giving at most about n ticks.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return math.Max(1, m*p)
		}
	}
	return math.Max(1, 10*p)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
