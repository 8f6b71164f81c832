//go:build !race

package spawnersvc

const raceEnabled = false
