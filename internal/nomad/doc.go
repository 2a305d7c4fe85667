// Package nomad owns everything the controller says to Nomad: rendering a
// canonical sandbox as a Nomad job, with ownership in the job's Meta.
// It sits on github.com/hashicorp/nomad/api and works unchanged against a
// real cluster and against the test server in nomadtest.
package nomad
