//go:build race

package store_test

// raceEnabled lets long single-goroutine tests shrink under the race
// detector, which slows them several times and finds nothing there.
const raceEnabled = true
