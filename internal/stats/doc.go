// Package stats holds the order statistics that the benchmark programs
// report (internal/cmd/bench, examples/jupyterhub's -bench-starts), so that
// every figure in BENCHMARKS.md is computed by one definition.
package stats
