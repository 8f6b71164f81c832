package spawner

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
)

// serverClock returns a clock that tells the API server's time: the
// injected clock shifted by the offset measured with a SelfSubjectReview,
// whose creationTimestamp the server sets to its own now (and which every
// authenticated user may create). The timestamp has second resolution and
// arrives a round trip late, so the offset is its lower bound: ages measured
// with it are never overestimated, whatever the local clock's skew. The
// request is bounded by timeout.
func (s *Spawner) serverClock(ctx context.Context, timeout time.Duration) (clock.PassiveClock, error) {
	rctx, cancel := s.withTimeout(ctx, timeout, requestDeadline("the SelfSubjectReview", timeout))
	defer cancel()
	review, err := s.opts.Client.AuthenticationV1().SelfSubjectReviews().Create(rctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	after := s.opts.Clock.Now()
	if err != nil {
		return nil, fmt.Errorf("spawner: reading the API server's clock (a SelfSubjectReview): %w", s.ctxErr(rctx, err))
	}
	serverNow := review.CreationTimestamp.Time
	if serverNow.IsZero() {
		return nil, fmt.Errorf("spawner: reading the API server's clock: the SelfSubjectReview carries no creationTimestamp")
	}
	return skewClock{clk: s.opts.Clock, offset: serverNow.Sub(after)}, nil
}

// skewClock is a clock shifted by a fixed offset.
type skewClock struct {
	clk    clock.PassiveClock
	offset time.Duration
}

func (c skewClock) Now() time.Time                  { return c.clk.Now().Add(c.offset) }
func (c skewClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
