// Package reconcile owns the control loop: a work queue of sandbox keys
// fed by the store's change feed, Nomad's event stream and timers, and a
// level-triggered Reconcile(ctx, key) that makes one sandbox's Nomad job
// match its declaration and writes status back. It declares the small
// interfaces it needs of the store and of Nomad.
package reconcile
