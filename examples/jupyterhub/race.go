//go:build race

package main

// raceEnabled: the spawner service is built with -race too.
const raceEnabled = true
