package soak

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
)

// cyclePlan is what one user does in one cycle.
type cyclePlan struct {
	Scenario string
	// CancelAfter > 0: the caller gives up the start that long after
	// sending it (its context ends).
	CancelAfter time.Duration
	// StopRace: a Stop is sent while the start is in flight.
	StopRace      bool
	StopRaceAfter time.Duration
	// LateStop: once the start succeeded, a Stop carrying the UID of the
	// user's previous pod is sent (a late or retried Stop).
	LateStop bool
	// Hold is how long a running server runs before its user stops it.
	Hold time.Duration
}

// fault is one fault of the schedule.
type fault struct {
	Kind FaultKind
	At   time.Duration // from the start of the run
	For  time.Duration // 0 for one-shot faults
	N    int           // injections, for counted faults
	// Hold: probes are held past their deadline rather than answered 429
	// (FaultThrottleProbes).
	Hold bool
}

// FaultKind names a kind of fault of the schedule.
type FaultKind string

const (
	FaultStallAll      FaultKind = "stall-all-watches"  // every pod watch silent, open and new
	FaultStallOpen     FaultKind = "stall-open-watches" // the pod watch streams open now die silently
	FaultReset         FaultKind = "reset-connections"
	FaultRefuse        FaultKind = "refuse-connections"
	FaultGone          FaultKind = "watch-410-gone"
	FaultWatchError    FaultKind = "watch-error-event"
	FaultHoldLists     FaultKind = "hold-list-responses" // the audit's and the relist's
	FaultWatch429      FaultKind = "new-watches-429"
	FaultWatch500      FaultKind = "new-watches-500"
	FaultLatency       FaultKind = "latency"
	FaultStallEvents   FaultKind = "stall-event-watch"
	FaultRestartServer FaultKind = "apiserver-restart"
	FaultCrash         FaultKind = "instance-crash" // the workload's, not the proxy's
	// FaultThrottleProbes: the reflectors' probe watches (timeoutSeconds
	// of a second) answered 429 with Retry-After, as API priority and
	// fairness does, or held past their deadline, for longer than the
	// services' FailureTimeout, while the main watches deliver. Failing
	// probes alone must never fail a cache (whose failure restarts a
	// service with an empty table).
	FaultThrottleProbes FaultKind = "probes-throttled"
)

// probeWatches selects the reflectors' probes: watches with a short
// timeoutSeconds (a second), not the main watches (minutes).
var probeWatches = faultproxy.Match{Verb: faultproxy.VerbWatch, MaxTimeout: 10 * time.Second}

// longStall is the long stall of every watch each run has at span/5.
const longStall = 12 * time.Second

// schedule is a whole run's plan: the users' cycles and the faults, all
// drawn from one seeded source so that a seed replays the same run.
type schedule struct {
	Seed   uint64
	Users  []string
	Cycles map[string][]cyclePlan
	Faults []fault
	// Span is how long the faults are spread over (the workload's
	// expected duration).
	Span time.Duration
}

// newSchedule draws the plan: cycles cycles over users users, faults
// spread over span, at least one of each kind, one crash of an instance
// at about half of span, and probes throttled for longer than
// failureTimeout (the services') once the long stall is over; in a long
// run, once more, held rather than refused.
func newSchedule(seed uint64, users, cycles int, span, failureTimeout time.Duration) schedule {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := schedule{Seed: seed, Cycles: map[string][]cyclePlan{}, Span: span}
	for i := range users {
		s.Users = append(s.Users, fmt.Sprintf("user-%02d", i))
	}
	scenarios := []struct {
		name   string
		weight int
	}{
		{podsim.ScenarioNormal, 62}, {podsim.ScenarioSlowStart, 8}, {podsim.ScenarioImagePullFailure, 6},
		{podsim.ScenarioCrashLoop, 6}, {podsim.ScenarioUnschedulable, 6}, {podsim.ScenarioNeverReady, 6},
		{podsim.ScenarioInvalidImageName, 3}, {podsim.ScenarioCreateContainerConfigError, 3},
	}
	total := 0
	for _, sc := range scenarios {
		total += sc.weight
	}
	for c := range cycles {
		u := s.Users[c%users]
		p := cyclePlan{Hold: time.Duration(200+rng.IntN(1800)) * time.Millisecond}
		w := rng.IntN(total)
		for _, sc := range scenarios {
			if w -= sc.weight; w < 0 {
				p.Scenario = sc.name
				break
			}
		}
		switch r := rng.IntN(100); {
		case r < 8:
			p.CancelAfter = time.Duration(50+rng.IntN(1500)) * time.Millisecond
		case r < 14:
			p.StopRace, p.StopRaceAfter = true, time.Duration(rng.IntN(1200))*time.Millisecond
		case r < 20:
			p.LateStop = true
		}
		s.Cycles[u] = append(s.Cycles[u], p)
	}

	// Faults: every kind at least once, then more at random, spread over
	// the span; one long stall of every watch, which is what gives the
	// 2018 logic its chance to leak.
	kinds := []FaultKind{FaultStallAll, FaultStallOpen, FaultReset, FaultRefuse, FaultGone, FaultWatchError,
		FaultHoldLists, FaultWatch429, FaultWatch500, FaultLatency, FaultStallEvents}
	extra := max(0, int(span/(8*time.Second))-len(kinds))
	for i := range len(kinds) + extra {
		k := kinds[i%len(kinds)]
		if i >= len(kinds) {
			k = kinds[rng.IntN(len(kinds))]
		}
		f := fault{Kind: k, At: time.Duration(rng.Int64N(int64(span * 9 / 10)))}
		switch k {
		case FaultStallAll, FaultHoldLists, FaultLatency, FaultStallEvents:
			f.For = time.Duration(2000+rng.IntN(5000)) * time.Millisecond
		case FaultRefuse:
			f.For = time.Duration(500+rng.IntN(2500)) * time.Millisecond
		case FaultGone, FaultWatchError, FaultWatch429, FaultWatch500:
			f.N = 1 + rng.IntN(20)
		}
		s.Faults = append(s.Faults, f)
	}
	s.Faults = append(s.Faults,
		fault{Kind: FaultStallAll, At: span / 5, For: longStall},
		fault{Kind: FaultRestartServer, At: time.Duration(rng.Int64N(int64(span/2))) + span/4},
		fault{Kind: FaultCrash, At: span/2 + time.Duration(rng.Int64N(int64(span/10)))},
	)
	// Drawn last, so that a seed replays the faults above as before. The
	// first starts as the long stall ends: the main watches deliver while
	// the probes fail, early enough to outlast FailureTimeout within the
	// shortest workload.
	throttle := func(at time.Duration, hold bool) fault {
		return fault{Kind: FaultThrottleProbes, At: at, For: failureTimeout + time.Duration(5000+rng.IntN(5000))*time.Millisecond, Hold: hold}
	}
	first := throttle(span/5+longStall+time.Second, false)
	s.Faults = append(s.Faults, first)
	if at := first.At + first.For + 2*failureTimeout; at+first.For < span*9/10 {
		s.Faults = append(s.Faults, throttle(at, true))
	}
	slices.SortStableFunc(s.Faults, func(a, b fault) int { return int(a.At - b.At) })
	return s
}
