// Package cachehook is the plumbing between package reflector and the
// packages built on its caches (package events), kept out of reflector's
// exported API: what events needs of a cache and no user does.
//
// reflector registers, at init, the function that gives a cache's Hooks;
// events asks for them with [Of]. The internal rule keeps everyone else
// out.
package cachehook

import "context"

// Hooks are a cache's plumbing for the packages built on it.
type Hooks struct {
	// Companion returns the value kept with the cache under key, calling
	// create the first time, so that what is built on the cache (events:
	// its per-pod index) is shared exactly as the cache is.
	Companion func(key any, create func() (any, error)) (any, error)
	// Go runs fn in a goroutine whose ctx ends when ctx or the factory's
	// lifetime ends, and which the factory's Shutdown waits for. It
	// reports false, running nothing, once the factory is stopping.
	Go func(ctx context.Context, fn func(ctx context.Context)) bool
}

var of func(cache any) (Hooks, bool)

// Register sets the function that gives a cache's Hooks; reflector calls
// it from init.
func Register(f func(cache any) (Hooks, bool)) { of = f }

// Of returns the Hooks of cache, a *reflector.EventCache. It panics for
// anything else: a wiring bug, not bad input.
func Of(cache any) Hooks {
	if of != nil {
		if h, ok := of(cache); ok {
			return h
		}
	}
	panic("cachehook: no hooks for this cache")
}
