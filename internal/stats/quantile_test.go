package stats

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestQuantileIsTheNearestRank(t *testing.T) {
	t.Parallel()
	var hundred []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		ds   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{7}, 0.99, 7},
		{hundred, 0.5, 50 * time.Millisecond},
		{hundred, 0.99, 99 * time.Millisecond},
		{hundred, 1, 100 * time.Millisecond},
		{hundred, 0, 1 * time.Millisecond},
		{[]time.Duration{4, 1, 3, 2}, 0.5, 2},
		{[]time.Duration{4, 1, 3, 2, 5}, 0.5, 3},
		{[]time.Duration{4, 1, 3, 2, 5}, 0.99, 5},
	} {
		assert.Equal(t, c.want, Quantile(c.ds, c.q), "q=%v of %v", c.q, c.ds)
	}
	assert.Equal(t, 100*time.Millisecond, hundred[0], "the input is not sorted in place")
	assert.Equal(t, 50*time.Millisecond, Median(hundred))
}
