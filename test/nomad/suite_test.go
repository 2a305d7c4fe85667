//go:build realnomad

// Package nomad runs the built controller and akctl against the Nomad that
// NOMAD_ADDR names (make test-nomad), as an operator would, and checks what
// the controller promises there: convergence with one write per sandbox,
// readiness after an update, every kind of drift repaired, a job it does not
// own left alone, a SIGKILL mid-apply survived with one job per sandbox,
// deletion, and what it costs Nomad (docs/development.md, "Testing against a Nomad
// cluster").
//
// Nomad is reached as the nomad CLI reaches it (NOMAD_ADDR, NOMAD_TOKEN,
// NOMAD_NAMESPACE, NOMAD_CACERT, ...), by the controller and by the tests'
// own client alike. Every run works under a random prefix: its sandboxes
// are rn-<8 hex>-*, their jobs agentkernel-rn-<8 hex>-*, and every job
// with that prefix is purged at the end, failed or not. No other job is
// written. The sandboxes run /bin/sleep with raw_exec (TEST_NOMAD_DRIVER=exec
// for exec) on the host network, with 0.1 vCPU and 32 MB.
package nomad

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// binDir holds the binaries built for this run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "realnomad-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// build compiles controller and akctl once per run.
func build(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		for _, name := range []string{"controller", "akctl"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "../../cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %w\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// suite is one test's view of the cluster: its client, its namespace and
// the prefix of everything it creates.
type suite struct {
	t      *testing.T
	nomad  *api.Client
	ns     string
	region string
	prefix string // rn-<8 hex>
	driver string
}

func newSuite(t *testing.T) *suite {
	t.Helper()
	if os.Getenv("NOMAD_ADDR") == "" {
		t.Skip("NOMAD_ADDR is not set: no Nomad to run against (make test-nomad-testserver runs this against the Nomad test server)")
	}
	driver := os.Getenv("TEST_NOMAD_DRIVER")
	switch driver {
	case "":
		driver = "raw_exec"
	case "raw_exec", "exec":
	default:
		t.Fatalf("TEST_NOMAD_DRIVER=%q: want raw_exec or exec", driver)
	}
	cfg := api.DefaultConfig()
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("nomad client: %v", err)
	}
	if _, err := c.Status().Leader(); err != nil {
		t.Fatalf("reach the Nomad at NOMAD_ADDR=%s: %v", os.Getenv("NOMAD_ADDR"), err)
	}
	ns, region := cfg.Namespace, cfg.Region
	if ns == "" {
		ns = "default"
	}
	if region == "" {
		region = "global"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	s := &suite{t: t, nomad: c, ns: ns, region: region, prefix: "rn-" + hex.EncodeToString(b[:]), driver: driver}
	t.Logf("sandboxes %s-*, jobs %s-* in namespace %s, driver %s", s.prefix, s.jobPrefix(), ns, driver)
	// Registered first, so it runs last: after every controller of the
	// test has stopped and can no longer put a job back.
	t.Cleanup(s.purgeAll)
	build(t)
	return s
}

func (s *suite) jobPrefix() string { return "agentkernel-" + s.prefix }

// names are the test's sandbox names: <prefix>-00, -01, ...
func (s *suite) names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", s.prefix, i)
	}
	return out
}

func jobID(name string) string { return "agentkernel-" + name }

// writeFleet writes one declaration file holding the named sandboxes with
// the memory memMB gives each.
func (s *suite) writeFleet(dir string, names []string, memMB func(name string) int) {
	s.t.Helper()
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, `sandbox %q {
  driver    = %q
  network   = "host"
  command   = ["/bin/sleep", "3600"]
  vcpus     = 0.1
  memory_mb = %d
}
`, n, s.driver, memMB(n))
	}
	if err := os.WriteFile(filepath.Join(dir, "fleet.hcl"), []byte(b.String()), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func mem(mb int) func(string) int { return func(string) int { return mb } }

func (s *suite) q() *api.QueryOptions {
	return (&api.QueryOptions{Namespace: s.ns}).WithContext(s.t.Context())
}

func (s *suite) w() *api.WriteOptions {
	return (&api.WriteOptions{Namespace: s.ns}).WithContext(s.t.Context())
}

// jobs lists the jobs under the test's prefix.
func (s *suite) jobs() []*api.JobListStub {
	s.t.Helper()
	q := s.q()
	q.Prefix = s.jobPrefix() + "-"
	l, _, err := s.nomad.Jobs().List(q)
	if err != nil {
		s.t.Fatalf("list jobs %s-*: %v", s.jobPrefix(), err)
	}
	return l
}

// mustJob reads a job that must exist.
func (s *suite) mustJob(id string) *api.Job {
	s.t.Helper()
	j := s.job(id)
	if j == nil {
		s.t.Fatalf("no job %s in Nomad", id)
	}
	return j
}

// job reads one job; nil when Nomad has none.
func (s *suite) job(id string) *api.Job {
	s.t.Helper()
	j, _, err := s.nomad.Jobs().Info(id, s.q())
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		s.t.Fatalf("read job %s: %v", id, err)
	}
	return j
}

func isNotFound(err error) bool {
	var ure api.UnexpectedResponseError
	return errors.As(err, &ure) && ure.StatusCode() == 404
}

// registers counts the job's job-register evaluations: one for each
// register Nomad accepted, an identical one included.
func (s *suite) registers(id string) int {
	s.t.Helper()
	evals, _, err := s.nomad.Jobs().Evaluations(id, s.q())
	if err != nil {
		s.t.Fatalf("list evaluations of %s: %v", id, err)
	}
	n := 0
	for _, e := range evals {
		if e.TriggeredBy == "job-register" {
			n++
		}
	}
	return n
}

// alloc reads one allocation.
func (s *suite) alloc(id string) *api.Allocation {
	s.t.Helper()
	a, _, err := s.nomad.Allocations().Info(id, s.q())
	if err != nil {
		s.t.Fatalf("read allocation %s: %v", id, err)
	}
	return a
}

// purgeAll purges every job under the test's prefix. It runs at cleanup,
// when the test's context has ended.
func (s *suite) purgeAll() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := (&api.QueryOptions{Namespace: s.ns, Prefix: s.jobPrefix() + "-"}).WithContext(ctx)
	jobs, _, err := s.nomad.Jobs().List(q)
	if err != nil {
		s.t.Errorf("cleanup: list jobs %s-*: %v", s.jobPrefix(), err)
		return
	}
	for _, j := range jobs {
		if _, _, err := s.nomad.Jobs().Deregister(j.ID, true, (&api.WriteOptions{Namespace: s.ns}).WithContext(ctx)); err != nil {
			s.t.Errorf("cleanup: purge %s: %v", j.ID, err)
		}
	}
	if left, _, err := s.nomad.Jobs().List(q); err == nil && len(left) > 0 {
		s.t.Errorf("cleanup: %d jobs %s-* left after purging", len(left), s.jobPrefix())
	}
}

// eventually polls cond every 100ms until it holds, and fails the test
// with cond's last word after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, detail)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		}
	}
}
