//go:build race

package reconcile

// raceEnabled lets the long update loop shrink under the race detector,
// which slows it tenfold; make test runs it again at full length without.
const raceEnabled = true
