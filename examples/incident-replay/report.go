package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// jsonRun is one run in the -json output.
type jsonRun struct {
	Launches                  int      `json:"launches"`
	Started                   int      `json:"started"`
	Failed                    int      `json:"failed"`
	Leaked                    int      `json:"leaked"`
	StallDetectedAfterSeconds *float64 `json:"stallDetectedAfterSeconds"`
	APIRequests               int64    `json:"apiRequests"`
	APIBytes                  int64    `json:"apiBytes"`
	APIRequestsBeforeStall    int64    `json:"apiRequestsBeforeStall"`
	APIBytesBeforeStall       int64    `json:"apiBytesBeforeStall"`
	StoppedByUsers            int      `json:"stoppedByUsers"`
	Running                   int      `json:"running"`
	PodsOnServer              int      `json:"podsOnServer"`
	LeakedPods                []string `json:"leakedPods"`
}

func toJSONRun(r RunResult) jsonRun {
	j := jsonRun{
		Launches: r.Launches, Started: r.Started, Failed: r.Failed, Leaked: r.Leaked,
		APIRequests: r.APIRequests, APIBytes: r.APIBytes,
		APIRequestsBeforeStall: r.APIRequestsBeforeStall, APIBytesBeforeStall: r.APIBytesBeforeStall,
		StoppedByUsers: r.StoppedByUsers, Running: r.Running, PodsOnServer: r.PodsOnServer,
		LeakedPods: r.LeakedPods,
	}
	if j.LeakedPods == nil {
		j.LeakedPods = []string{}
	}
	if r.StallDetectedAfter != nil {
		s := roundTo(r.StallDetectedAfter.Seconds(), 2)
		j.StallDetectedAfterSeconds = &s
	}
	return j
}

func roundTo(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}

// jsonReport is the single JSON object of -json.
func jsonReport(rep *Report) ([]byte, error) {
	return json.Marshal(struct {
		Baseline  jsonRun `json:"baseline"`
		Kubespawn jsonRun `json:"kubespawn"`
	}{toJSONRun(rep.Baseline), toJSONRun(rep.Kubespawn)})
}

func detected(r RunResult) string {
	if r.StallDetectedAfter == nil {
		return "never"
	}
	return fmt.Sprintf("%.1f s", r.StallDetectedAfter.Seconds())
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// printTable writes the final comparison.
func printTable(w io.Writer, rep *Report) {
	b, k := rep.Baseline, rep.Kubespawn
	c := rep.Config
	fmt.Fprintf(w, "\nIncident replay: %d users over %s, pod watch silently stalled at t=%s until the end, start timeout %s (seed %d)\n\n",
		c.Users, c.Duration, c.StallAt, c.StartTimeout, c.Seed)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tbaseline (KubeSpawner 2018)\tkubespawn\t\n")
	row := func(name string, f func(RunResult) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, f(b), f(k))
	}
	itoa := func(f func(RunResult) int) func(RunResult) string {
		return func(r RunResult) string { return fmt.Sprint(f(r)) }
	}
	row("launches", itoa(func(r RunResult) int { return r.Launches }))
	row("successful starts", itoa(func(r RunResult) int { return r.Started }))
	row("failed starts", itoa(func(r RunResult) int { return r.Failed }))
	row("servers stopped by their users", itoa(func(r RunResult) int { return r.StoppedByUsers }))
	row("servers running at the end", itoa(func(r RunResult) int { return r.Running }))
	row("pods on the API server at the end", itoa(func(r RunResult) int { return r.PodsOnServer }))
	row("PODS LEAKED on the API server", itoa(func(r RunResult) int { return r.Leaked }))
	row("time until the stall was detected", detected)
	row("API requests", func(r RunResult) string { return fmt.Sprint(r.APIRequests) })
	row("  of which before the stall", func(r RunResult) string { return fmt.Sprint(r.APIRequestsBeforeStall) })
	row("API response bytes", func(r RunResult) string { return humanBytes(r.APIBytes) })
	row("  of which before the stall", func(r RunResult) string { return humanBytes(r.APIBytesBeforeStall) })
	row("run time", func(r RunResult) string { return fmt.Sprintf("%.0f s", r.Elapsed.Seconds()) })
	tw.Flush()

	for _, r := range []RunResult{b, k} {
		if len(r.Log) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s log (first line of each kind):\n", r.Label)
		for i, l := range r.Log {
			if i == 8 {
				fmt.Fprintf(w, "  ... and %d more kinds\n", len(r.Log)-i)
				break
			}
			fmt.Fprintf(w, "  t=%5.1fs  %s  (x%d)\n", l.AtSeconds, truncate(l.Text, 160), l.Count)
		}
	}
	fmt.Fprintln(w)
	if b.Leaked > 0 {
		fmt.Fprintf(w, "Baseline: after the stall its cache never saw another pod, starts timed out, and the abort path skipped the DELETE of %d pods\n"+
			"(\"No pod X to delete. Assuming already deleted.\"): they are still on the server, as the ~1,000 pods of 2018 were.\n", b.Leaked)
	}
	fmt.Fprintln(w, "API cost: through each run's proxy. After the stall kubespawn pays for its fallback (relists, live GETs)\n"+
		"while the watch stays broken; the baseline's requests stay cheap because it no longer sees anything.")
	if k.Leaked == 0 {
		fmt.Fprintf(w, "kubespawn: detected the stall (%s), fell back to the API server, and every start either completed or had its pod deleted: nothing leaked.\n", detected(k))
	} else {
		fmt.Fprintf(w, "kubespawn LEAKED %d pods: %s\n", k.Leaked, strings.Join(k.LeakedPods, ", "))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
