//go:build realnomad

package nomad

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

const (
	fleetSize = 10
	// resync is the controller's full resync period in these tests: short,
	// so that several pass while they watch.
	resync = 2 * time.Second
	// idleFor is how long the idle checks watch at least: more than two
	// resync periods at their longest (resync + 10 %).
	idleFor = 5 * time.Second
	// converge bounds every wait for Nomad to place and run something.
	converge = 2 * time.Minute

	// The controller's budget of Nomad requests (docs/development.md, "Testing against
	// a Nomad cluster"): per converged sandbox, all reads included; per
	// drift repair, of which one is the write.
	maxRequestsPerSandbox = 1.2
	maxRepairRequests     = 2
)

// TestRealNomadController runs one controller process through the life
// of a fleet, each step on what the one before left: converge, update,
// re-apply, resync and idle, restart, drift of every kind, a foreign job,
// delete.
func TestRealNomadController(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	data := t.TempDir()
	c := s.startController(data, "-resync", resync.String())
	owner := c.storeID()
	decl := t.TempDir()
	names := s.names(fleetSize)
	memory := map[string]int{}
	for _, n := range names {
		memory[n] = 32
	}
	s.writeFleet(decl, names, func(n string) int { return memory[n] })

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"converge", func(t *testing.T) {
			before := c.settled()
			out := c.mustAkctl("apply", "-f", decl, "--wait", "--timeout-wait", converge.String())
			if n := strings.Count(out, " created"); n != fleetSize {
				t.Fatalf("apply created %d sandboxes, want %d:\n%s", n, fleetSize, out)
			}
			d := c.settled().since(before)
			perSandbox := d.total() / fleetSize
			t.Logf("converging %d sandboxes: %g Nomad requests, %.2f per sandbox (%v)", fleetSize, d.total(), perSandbox, d)
			if d.writes() != fleetSize || d["PUT /v1/jobs 200"] != fleetSize {
				t.Errorf("%g writes (%v); want one register per sandbox, %d", d.writes(), d, fleetSize)
			}
			if perSandbox > maxRequestsPerSandbox {
				t.Errorf("%.2f Nomad requests per converged sandbox, want at most %g", perSandbox, maxRequestsPerSandbox)
			}
			jobs := s.jobs()
			if len(jobs) != fleetSize {
				t.Fatalf("Nomad holds %d jobs %s-*, want %d", len(jobs), s.jobPrefix(), fleetSize)
			}
			for _, n := range names {
				j := s.mustJob(jobID(n))
				if j.Meta["agentkernel-owner"] != owner || j.Meta["agentkernel-sandbox"] != n || j.Meta["agentkernel-managed"] != "true" {
					t.Errorf("job %s carries Meta %v; want owner %s and sandbox %s", *j.ID, j.Meta, owner, n)
				}
				if r := s.registers(*j.ID); r != 1 {
					t.Errorf("Nomad accepted %d registers of %s, want 1", r, *j.ID)
				}
			}
		}},

		{"ready after an update", func(t *testing.T) {
			name := names[0]
			for _, mb := range []int{48, 64} {
				memory[name] = mb
				s.writeFleet(decl, names, func(n string) int { return memory[n] })
				before := c.settled()
				c.mustAkctl("apply", "-f", decl, "--wait", "--timeout-wait", converge.String())
				// Read at once: what akctl saw when it returned.
				sb := c.sandbox(name)
				j := s.mustJob(jobID(name))
				checkRunsCurrentVersion(t, s, sb, j)
				if got := *j.TaskGroups[0].Tasks[0].Resources.MemoryMB; got != mb {
					t.Errorf("job memory %d MB, want %d", got, mb)
				}
				d := c.settled().since(before)
				t.Logf("update to %d MB: %g Nomad requests (%v)", mb, d.total(), d)
				if d.writes() != 1 {
					t.Errorf("%g writes for one update (%v), want 1", d.writes(), d)
				}
			}
		}},

		{"re-apply, resync and idle make no requests", func(t *testing.T) {
			before := c.settled()
			out := c.mustAkctl("apply", "-f", decl)
			if n := strings.Count(out, " unchanged"); n != fleetSize {
				t.Errorf("re-apply: %d unchanged, want %d:\n%s", n, fleetSize, out)
			}
			n, took := c.watchResyncs(t, fleetSize)
			d := c.requests().since(before)
			t.Logf("re-apply, then idle for %s (%g reconciles, by resync): %g Nomad requests (%v)", took, n, d.total(), d)
			if d.total() != 0 {
				t.Errorf("re-apply, resync and idle made %g Nomad requests (%v), want none", d.total(), d)
			}
		}},

		{"a restart lists, then makes no requests", func(t *testing.T) {
			c.stop()
			c = s.startController(data, "-resync", resync.String())
			n, took := c.watchResyncs(t, fleetSize)
			d := c.requests()
			t.Logf("restart, then %s (%g reconciles: the start's, then resyncs): %g Nomad requests (%v)", took, n, d.total(), d)
			for k := range d {
				if !strings.HasPrefix(k, "GET /v1/jobs ") && !strings.HasPrefix(k, "GET /v1/allocations ") && !strings.HasPrefix(k, "GET /v1/event/stream ") {
					t.Errorf("after a restart: %s; want only the initial list (/v1/jobs, /v1/allocations) and the event stream", k)
				}
			}
		}},

		{"drift repaired", func(t *testing.T) {
			for i, tc := range driftKinds(s) {
				name := names[1+i%(fleetSize-1)]
				t.Run(tc.name, func(t *testing.T) {
					id := jobID(name)
					hash := s.mustJob(id).Meta["agentkernel-spec-hash"]
					before := c.settled()
					repairs := c.metrics()
					tc.change(t, id)
					eventually(t, converge, "repair of "+tc.name, func() (bool, string) {
						j := s.job(id)
						if j == nil {
							return false, "no job"
						}
						if left := driftLeft(j); len(left) > 0 || j.Meta["agentkernel-spec-hash"] != hash {
							return false, fmt.Sprintf("job still has %v, spec hash %s", left, j.Meta["agentkernel-spec-hash"])
						}
						sb := c.sandbox(name)
						if !sb.ready() || sb.Status.JobVersion == nil || *sb.Status.JobVersion != *j.Version {
							return false, fmt.Sprintf("sandbox %s, Ready %s, at job version %v of %d", sb.Status.Phase, sb.condition("Ready"), sb.Status.JobVersion, *j.Version)
						}
						return true, ""
					})
					checkRunsCurrentVersion(t, s, c.sandbox(name), s.mustJob(id))
					d := c.settled().since(before)
					t.Logf("%s: %g Nomad requests (%v)", tc.name, d.total(), d)
					if d.writes() != 1 || d.total() > maxRepairRequests {
						t.Errorf("repair made %g writes and %g requests in all (%v); want 1 write, at most %d requests", d.writes(), d.total(), d, maxRepairRequests)
					}
					if n, by := repairsSince(repairs, c.metrics()); n != 1 {
						t.Errorf("%g drift repairs counted (%s), want 1", n, by)
					}
				})
			}
		}},

		{"a foreign job is left alone", func(t *testing.T) {
			name := s.prefix + "-foreign"
			id := jobID(name)
			s.registerForeign(id)
			foreign := s.mustJob(id)
			dir := t.TempDir()
			s.writeFleet(dir, []string{name}, mem(32))
			c.mustAkctl("apply", "-f", dir)
			eventually(t, converge, "Conflict", func() (bool, string) {
				sb := c.sandbox(name)
				return sb.Status.Phase == "Conflict", sb.Status.Phase
			})
			before := c.requests()
			n, took := c.watchResyncs(t, fleetSize+1)
			d := c.requests().since(before)
			t.Logf("%s with a sandbox in Conflict (%g reconciles): %g Nomad requests (%v)", took, n, d.total(), d)
			if d.writes() != 0 {
				t.Errorf("%g writes while a sandbox is in Conflict (%v), want none", d.writes(), d)
			}
			c.mustAkctl("delete", name, "-n", s.ns, "--wait")
			checkUntouched(t, foreign, s.job(id))
			if _, _, err := s.nomad.Jobs().Deregister(id, true, s.w()); err != nil {
				t.Errorf("purge the foreign job: %v", err)
			}
		}},

		{"delete purges", func(t *testing.T) {
			before := c.settled()
			c.mustAkctl("delete", "-f", decl, "--wait")
			d := c.settled().since(before)
			t.Logf("deleting %d sandboxes: %g Nomad requests (%v)", fleetSize, d.total(), d)
			if d.writes() != fleetSize {
				t.Errorf("%g writes to delete %d sandboxes (%v), want one purge each", d.writes(), fleetSize, d)
			}
			for _, n := range names {
				if j := s.job(jobID(n)); j != nil {
					t.Errorf("job %s still in Nomad (stop %v) after the delete", *j.ID, *j.Stop)
				}
			}
			if out := c.mustAkctl("get", "-n", s.ns, "-o", "json"); strings.Contains(out, s.prefix) {
				t.Errorf("sandboxes left after the delete:\n%s", out)
			}
		}},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.run) {
			return // each step starts from what the last left
		}
	}
}

// watchResyncs watches the controller for idleFor, and until it has
// reconciled keys sandboxes twice over (a resync queues each), and returns
// how many reconciles it saw and how long it watched.
func (c *controller) watchResyncs(t *testing.T, keys int) (float64, time.Duration) {
	t.Helper()
	start, r0 := time.Now(), c.reconciles()
	var n float64
	eventually(t, converge, "two resyncs", func() (bool, string) {
		n = c.reconciles() - r0
		return n >= float64(2*keys) && time.Since(start) >= idleFor, fmt.Sprintf("%g reconciles", n)
	})
	return n, time.Since(start).Round(100 * time.Millisecond)
}

// repairsSince counts the drift repairs between two readings of the
// metrics, and says which reasons they had.
func repairsSince(before, after map[string]float64) (float64, string) {
	var n float64
	var by []string
	for k, v := range after {
		if !strings.HasPrefix(k, "agentkernel_drift_repairs_total{") {
			continue
		}
		if d := v - before[k]; d != 0 {
			n += d
			by = append(by, fmt.Sprintf("%s: %g", strings.TrimPrefix(k, "agentkernel_drift_repairs_total"), d))
		}
	}
	slices.Sort(by)
	return n, strings.Join(by, ", ")
}

// checkRunsCurrentVersion: the allocation the sandbox's status names runs
// the job's current version, and the status says so.
func checkRunsCurrentVersion(t *testing.T, s *suite, sb *sandbox, j *api.Job) {
	t.Helper()
	if !sb.ready() {
		t.Fatalf("sandbox %s not ready: %+v", sb.Name, sb.Status)
	}
	a := s.alloc(sb.Status.AllocID)
	switch {
	case *a.Job.Version != *j.Version:
		t.Errorf("Ready names allocation %s of job version %d; the job is at version %d", a.ID, *a.Job.Version, *j.Version)
	case a.ClientStatus != api.AllocClientStatusRunning || a.DesiredStatus != api.AllocDesiredStatusRun:
		t.Errorf("Ready names allocation %s, which is %s (desired %s)", a.ID, a.ClientStatus, a.DesiredStatus)
	case sb.Status.JobVersion == nil || *sb.Status.JobVersion != *j.Version || sb.Status.AllocJobVersion != *j.Version:
		t.Errorf("status records job version %v and allocation version %d; Nomad's job is at %d", sb.Status.JobVersion, sb.Status.AllocJobVersion, *j.Version)
	}
}

// driftKind is a change made to a sandbox's job behind the controller's
// back, through Nomad's API.
type driftKind struct {
	name   string
	change func(t *testing.T, id string)
}

func driftKinds(s *suite) []driftKind {
	// modify registers the job changed, as `nomad job run` would: no
	// check-and-set.
	modify := func(f func(j *api.Job)) func(t *testing.T, id string) {
		return func(t *testing.T, id string) {
			j := s.mustJob(id)
			f(j)
			if _, _, err := s.nomad.Jobs().Register(j, s.w()); err != nil {
				t.Fatalf("change %s out of band: %v", id, err)
			}
		}
	}
	task := func(j *api.Job) *api.Task { return j.TaskGroups[0].Tasks[0] }
	return []driftKind{
		{"job stopped", func(t *testing.T, id string) {
			if _, _, err := s.nomad.Jobs().Deregister(id, false, s.w()); err != nil {
				t.Fatal(err)
			}
		}},
		{"job purged", func(t *testing.T, id string) {
			if _, _, err := s.nomad.Jobs().Deregister(id, true, s.w()); err != nil {
				t.Fatal(err)
			}
		}},
		{"rendered field changed", modify(func(j *api.Job) { task(j).Resources.MemoryMB = ptr(256) })},
		{"user root", modify(func(j *api.Job) { task(j).User = "root" })},
		{"host volume", modify(func(j *api.Job) {
			j.TaskGroups[0].Volumes = map[string]*api.VolumeRequest{"hostfs": {Name: "hostfs", Type: "host", Source: "hostfs"}}
			task(j).VolumeMounts = []*api.VolumeMount{{Volume: ptr("hostfs"), Destination: ptr("/host")}}
		})},
		// Loopback: the client fails to fetch it without leaving the host.
		{"artifact", modify(func(j *api.Job) {
			task(j).Artifacts = []*api.TaskArtifact{{GetterSource: ptr("http://127.0.0.1:9/payload.tgz"), RelativeDest: ptr("local/")}}
		})},
		{"reserved port 22", modify(func(j *api.Job) {
			j.TaskGroups[0].Networks[0].ReservedPorts = []api.Port{{Label: "ssh", Value: 22}}
		})},
		// A field the controller does not render: only the job's modify
		// index shows it. A real agent refuses a kill timeout longer than
		// the progress deadline (10m).
		{"unrendered field changed", modify(func(j *api.Job) { task(j).KillTimeout = ptr(2 * time.Minute) })},
	}
}

// driftLeft names what of driftKinds a job still carries.
func driftLeft(j *api.Job) []string {
	if j.Stop != nil && *j.Stop {
		return []string{"stopped"}
	}
	tg := j.TaskGroups[0]
	task := tg.Tasks[0]
	var out []string
	for _, c := range []struct {
		what string
		left bool
	}{
		{"memory", task.Resources.MemoryMB == nil || *task.Resources.MemoryMB != 32},
		{"user", task.User != ""},
		{"volumes", len(tg.Volumes) > 0 || len(task.VolumeMounts) > 0},
		{"artifacts", len(task.Artifacts) > 0},
		{"reserved ports", len(tg.Networks) > 0 && len(tg.Networks[0].ReservedPorts) > 0},
		{"kill timeout", task.KillTimeout != nil && *task.KillTimeout == 2*time.Minute},
	} {
		if c.left {
			out = append(out, c.what)
		}
	}
	return out
}

// registerForeign registers a job the controller does not own under a
// sandbox's job ID: no agentkernel Meta.
func (s *suite) registerForeign(id string) {
	s.t.Helper()
	j := api.NewServiceJob(id, id, s.region, 50)
	j.Namespace = ptr(s.ns)
	j.Datacenters = []string{"*"}
	tg := api.NewTaskGroup("main", 1)
	tg.Networks = []*api.NetworkResource{{Mode: "host"}}
	task := api.NewTask("main", s.driver).SetConfig("command", "/bin/sleep").SetConfig("args", []string{"3600"})
	task.Resources = &api.Resources{CPU: ptr(100), MemoryMB: ptr(32)}
	j.AddTaskGroup(tg.AddTask(task))
	if _, _, err := s.nomad.Jobs().EnforceRegister(j, 0, s.w()); err != nil {
		s.t.Fatalf("register the foreign job %s: %v", id, err)
	}
}

// checkUntouched: nobody wrote the job since before was read.
func checkUntouched(t *testing.T, before, now *api.Job) {
	t.Helper()
	switch {
	case now == nil:
		t.Errorf("the foreign job %s is gone", *before.ID)
	case *now.JobModifyIndex != *before.JobModifyIndex || *now.Version != *before.Version || *now.Stop:
		t.Errorf("the foreign job %s was written: modify index %d -> %d, version %d -> %d, stop %v",
			*before.ID, *before.JobModifyIndex, *now.JobModifyIndex, *before.Version, *now.Version, *now.Stop)
	case now.Meta["agentkernel-owner"] != "":
		t.Errorf("the foreign job %s was stamped with owner %s", *before.ID, now.Meta["agentkernel-owner"])
	}
}

func ptr[T any](v T) *T { return &v }

// writeConfig writes a controller configuration file and returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "controller.hcl")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
