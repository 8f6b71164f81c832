package soak

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is what a soak found.
type Report struct {
	Seed   uint64
	Cycles int
	Users  int
	Faults map[FaultKind]int
	// FailureTimeout is the services' caches'.
	FailureTimeout time.Duration
	Duration       time.Duration
	LogDir         string
	// Kubespawn and Legacy are the two runs of the same schedule.
	Kubespawn, Legacy RunReport
}

// RunReport is one run's outcome.
type RunReport struct {
	Name   string
	Cycles int
	// Starts counts starts by outcome (running, or the failure reason).
	Starts map[string]int
	// Leaks are the service's pods left on the API server that belong to
	// no user believed running, once faults are off and everything settled.
	Leaks []string
	// WrongDeletions are pods of users believed running that were deleted
	// while their user did not stop them.
	WrongDeletions []string
	// ObjectLeaks are the Services and Secrets (one of each per pod) left
	// on the API server, once everything settled, that belong to no pod
	// believed running: their pod is gone (the control plane runs no
	// garbage collector), leaked, or none.
	ObjectLeaks []ObjectLeak
	// Claims is how many users have a claim (one per user, kept across
	// its pods) at the end. ClaimsLost are claims deleted, or gone, over
	// the run (the soak never deletes one: a Terminating claim counts);
	// ClaimsDuplicated, second claims of a user.
	Claims                       int
	ClaimsLost, ClaimsDuplicated []string
	// SweptObjects counts the owned objects the sweepers deleted because
	// their pod was gone; ReportedClaims is the most claims one sweep
	// reported as of users its table did not have (kept: no MaxClaimAge).
	// kubespawn only.
	SweptObjects, ReportedClaims int
	// AbsenceFromAPI and AbsenceWithoutAPI count the service's decisions
	// that a pod did not exist, by the source they rested on (counted by
	// the library itself; kubespawn only).
	AbsenceFromAPI, AbsenceWithoutAPI int
	// Stalls are the silent stalls injected and when each was noticed.
	Stalls []StallTiming
	// ProbeThrottles are how long each probes-throttled fault lasted
	// (cut short if the workload ended first).
	ProbeThrottles []time.Duration
	// CacheFailures are the caches' entries into failed (kubespawn
	// only), and their problems.
	CacheFailures []CacheFailure
	// APIErrorAnswers counts the requests of the service that the proxy
	// answered with an error (429, 5xx, injected): each was retried or
	// recovered from.
	APIErrorAnswers int
	// Workload is how long the cycles took; Settle how long the end
	// checks waited for stops and sweepers; Duration the whole run.
	Workload, Settle, Duration time.Duration
}

// StallTiming is one silent stall and how long it went unnoticed.
type StallTiming struct {
	At       time.Time
	Detected bool
	After    time.Duration
}

// Print writes the report as a table, kubespawn beside the 2018 replica.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nsoak: seed %d (SOAK_SEED=%d replays it), %d cycles per run, %d users, %s in all\n", r.Seed, r.Seed, r.Cycles, r.Users, r.Duration.Round(time.Second))
	kinds := slices.Sorted(maps.Keys(r.Faults))
	var fs []string
	for _, k := range kinds {
		fs = append(fs, fmt.Sprintf("%s %d", k, r.Faults[k]))
	}
	fmt.Fprintf(w, "faults per run: %s\n", strings.Join(fs, ", "))
	fmt.Fprintf(w, "probes throttled (FailureTimeout %s): %s\n\n", r.FailureTimeout, durations(r.Kubespawn.ProbeThrottles))
	row := func(name string, a, b any) { fmt.Fprintf(w, "%36s  %22v  %22v\n", name, a, b) }
	row("", "kubespawn", "2018 replica")
	row("cycles", r.Kubespawn.Cycles, r.Legacy.Cycles)
	row("starts running", r.Kubespawn.Starts["running"], r.Legacy.Starts["running"])
	row("starts failed", failed(r.Kubespawn.Starts), failed(r.Legacy.Starts))
	row("PODS LEAKED", len(r.Kubespawn.Leaks), len(r.Legacy.Leaks))
	row("WRONG DELETIONS", len(r.Kubespawn.WrongDeletions), len(r.Legacy.WrongDeletions))
	row("SERVICES/SECRETS LEAKED", objectSummary(r.Kubespawn.ObjectLeaks), objectSummary(r.Legacy.ObjectLeaks))
	row("users with a claim", r.Kubespawn.Claims, r.Legacy.Claims)
	row("CLAIMS LOST", len(r.Kubespawn.ClaimsLost), len(r.Legacy.ClaimsLost))
	row("CLAIMS DUPLICATED", len(r.Kubespawn.ClaimsDuplicated), len(r.Legacy.ClaimsDuplicated))
	row("owned objects swept", r.Kubespawn.SweptObjects, "(no sweeper)")
	row("claims reported by a sweep, kept", r.Kubespawn.ReportedClaims, "(no sweeper)")
	row("absence decided without the API", r.Kubespawn.AbsenceWithoutAPI, "(not counted)")
	row("absence decided by the API", r.Kubespawn.AbsenceFromAPI, "(not counted)")
	row("silent stalls detected", stallSummary(r.Kubespawn.Stalls), "never (no detection)")
	row("caches failed", failureSummary(r.Kubespawn.CacheFailures), "(no health)")
	row("API error answers absorbed", r.Kubespawn.APIErrorAnswers, r.Legacy.APIErrorAnswers)
	row("run time", r.Kubespawn.Duration.Round(time.Second), r.Legacy.Duration.Round(time.Second))
	fmt.Fprintf(w, "\nkubespawn starts by outcome: %s\n", outcomes(r.Kubespawn.Starts))
	fmt.Fprintf(w, "2018 replica starts by outcome: %s\n", outcomes(r.Legacy.Starts))
	for _, l := range r.Kubespawn.Leaks {
		fmt.Fprintf(w, "  kubespawn leaked: %s\n", l)
	}
	for _, d := range r.Kubespawn.WrongDeletions {
		fmt.Fprintf(w, "  kubespawn wrong deletion: %s\n", d)
	}
	for _, l := range r.Kubespawn.ObjectLeaks {
		fmt.Fprintf(w, "  kubespawn leaked: %s\n", l)
	}
	for _, c := range r.Kubespawn.ClaimsLost {
		fmt.Fprintf(w, "  kubespawn claim lost: %s\n", c)
	}
	for _, c := range r.Kubespawn.ClaimsDuplicated {
		fmt.Fprintf(w, "  kubespawn claim duplicated: %s\n", c)
	}
	for _, f := range r.Kubespawn.CacheFailures {
		fmt.Fprintf(w, "  kubespawn cache failed: %s %s at %s, problems %v: %s\n", f.Instance, f.Cache, f.At.Format("15:04:05.000"), f.Problems, f.Reason)
	}
	fmt.Fprintf(w, "instance logs: %s\n", r.LogDir)
}

// objectSummary: how many, and of those how many a garbage collector
// would have deleted (their pod is gone) and how many went with a leaked
// pod.
func objectSummary(ls []ObjectLeak) string {
	if len(ls) == 0 {
		return "0"
	}
	gone, leaked := 0, 0
	for _, l := range ls {
		switch {
		case l.PodGone:
			gone++
		case l.PodUID != "":
			leaked++
		}
	}
	var parts []string
	if gone > 0 {
		parts = append(parts, fmt.Sprintf("%d for a GC", gone))
	}
	if leaked > 0 {
		parts = append(parts, fmt.Sprintf("%d of leaked pods", leaked))
	}
	if n := len(ls) - gone - leaked; n > 0 {
		parts = append(parts, fmt.Sprintf("%d of no pod", n))
	}
	return fmt.Sprintf("%d (%s)", len(ls), strings.Join(parts, ", "))
}

func failed(m map[string]int) int {
	n := 0
	for k, v := range m {
		if k != "running" {
			n += v
		}
	}
	return n
}

func outcomes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func stallSummary(st []StallTiming) string {
	var ds []time.Duration
	for _, s := range st {
		if s.Detected {
			ds = append(ds, s.After)
		}
	}
	if len(ds) == 0 {
		return fmt.Sprintf("0 of %d", len(st))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return fmt.Sprintf("%d of %d, %.1f-%.1fs (median %.1fs)", len(ds), len(st), ds[0].Seconds(), ds[len(ds)-1].Seconds(), ds[len(ds)/2].Seconds())
}

// ProbesOnlyFailures counts the cache failures that failing probes alone
// caused: there must be none.
func (r RunReport) ProbesOnlyFailures() int {
	n := 0
	for _, f := range r.CacheFailures {
		if f.ProbesOnly() {
			n++
		}
	}
	return n
}

func failureSummary(fs []CacheFailure) string {
	probes := 0
	for _, f := range fs {
		if f.ProbesOnly() {
			probes++
		}
	}
	return fmt.Sprintf("%d (%d of probes alone)", len(fs), probes)
}

func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.Round(100*time.Millisecond).String())
	}
	return strings.Join(parts, ", ")
}
