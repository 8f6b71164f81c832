package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kubespawn/kubespawn/internal/podsim"
)

// userPlan is what one simulated user does. Both runs replay exactly the
// same plans.
type userPlan struct {
	Index int
	// User is the user name, e.g. "user-007".
	User string
	// LaunchAt is when the user clicks "launch", from the start of the run.
	LaunchAt time.Duration
	// StartDelay is how long the simulated kubelet takes to make the pod
	// ready (podsim.AnnotationStartDelay).
	StartDelay time.Duration
	// Slow marks pods that race the start timeout.
	Slow bool
	// Scenario is the podsim scenario ("" for a normal pod).
	Scenario string
	// StopAfter, if positive, is how long after a successful start the user
	// stops their server; zero means they keep it to the end of the run.
	StopAfter time.Duration
}

// annotations are the podsim annotations of the user's pod.
func (u userPlan) annotations() map[string]string {
	a := map[string]string{podsim.AnnotationStartDelay: u.StartDelay.String()}
	if u.Scenario != "" {
		a[podsim.AnnotationScenario] = u.Scenario
	}
	return a
}

// makeSchedule returns the seeded plan of every user: a steady stream of
// launches over the window (evenly spaced with jitter), mostly quick pods,
// some slow ones whose start delay is around the start timeout, a few
// image pull failures, and some users who stop their server after a while.
func makeSchedule(c Config) []userPlan {
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x2018_07_07))
	step := c.Duration / time.Duration(c.Users)
	plans := make([]userPlan, c.Users)
	for i := range plans {
		u := userPlan{Index: i, User: fmt.Sprintf("user-%03d", i+1)}
		u.LaunchAt = time.Duration(i)*step + time.Duration(rng.Float64()*float64(step))
		r := rng.Float64()
		switch {
		case r < c.SlowFraction:
			// Around the start timeout: some make it, some do not.
			u.Slow = true
			u.StartDelay = scale(c.StartTimeout, 0.6+0.8*rng.Float64())
		case r < c.SlowFraction+c.ImagePullFailureFraction:
			u.Scenario = podsim.ScenarioImagePullFailure
			u.StartDelay = scale(c.StartTimeout, 0.05)
		default:
			u.StartDelay = scale(c.StartTimeout, 0.03+0.12*rng.Float64())
		}
		if rng.Float64() < c.StopFraction {
			session := scale(c.Duration, 0.1+0.25*rng.Float64())
			// Only sessions that end within the launch window: the others
			// keep their server until the end of the run.
			if u.LaunchAt+u.StartDelay+session <= c.Duration {
				u.StopAfter = session
			}
		}
		plans[i] = u
	}
	return plans
}

func scale(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * f).Round(time.Millisecond)
}
