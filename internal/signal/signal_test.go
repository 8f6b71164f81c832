package signal_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/signal"
)

func pending(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestFlagCoalesces(t *testing.T) {
	f := signal.NewFlag()
	assert.False(t, pending(f.C()))
	for range 100 {
		f.Raise() // never blocks
	}
	assert.True(t, pending(f.C()), "one signal pending")
	assert.False(t, pending(f.C()), "and only one")
}

func TestMuxByKeyAndAll(t *testing.T) {
	var m signal.Mux[string]
	a, cancelA := m.Subscribe("a")
	a2, cancelA2 := m.Subscribe("a")
	b, cancelB := m.Subscribe("b")
	require.Equal(t, 3, m.Len())

	m.Notify("a")
	m.Notify("a")
	assert.True(t, pending(a))
	assert.False(t, pending(a), "coalesced")
	assert.True(t, pending(a2))
	assert.False(t, pending(b), "other keys are not signalled")
	m.Notify("nobody") // no subscriber: nothing happens

	m.NotifyAll()
	assert.True(t, pending(a))
	assert.True(t, pending(a2))
	assert.True(t, pending(b))

	cancelA()
	cancelA() // idempotent
	m.Notify("a")
	assert.False(t, pending(a), "cancelled")
	assert.True(t, pending(a2))
	assert.True(t, m.Subscribed("a"))
	cancelA2()
	assert.False(t, m.Subscribed("a"))
	cancelB()
	assert.Zero(t, m.Len())
}

func TestMuxConcurrentUse(t *testing.T) {
	var m signal.Mux[int]
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c, cancel := m.Subscribe(i % 2)
			defer cancel()
			for range 1000 {
				m.Notify(i % 2)
				m.NotifyAll()
				pending(c)
			}
		})
	}
	wg.Wait()
	assert.Zero(t, m.Len())
}
