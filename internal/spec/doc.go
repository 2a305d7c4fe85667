// Package spec owns the sandbox declaration language: HCL files with
// variable, locals and sandbox blocks, loaded into validated Sandbox
// values in canonical form with a stable content hash. Every problem is an
// hcl.Diagnostic with the exact source range it concerns.
//
// It is a leaf: it imports no other package of this module, so the store,
// the Nomad layer and the command-line tools can all depend on it.
package spec
