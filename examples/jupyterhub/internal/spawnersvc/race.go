//go:build race

package spawnersvc

// raceEnabled: the spawner service is built with -race too.
const raceEnabled = true
