//go:build realnomad

package nomad

import (
	"fmt"
	"strings"
	"testing"
)

// crashFleet is small: the controller is slowed to two writes a second so
// that a SIGKILL lands while it is still registering.
const crashFleet = 8

// TestRealNomadKillMidApply SIGKILLs the controller while it registers a
// fleet, and again while it registers an update of it, restarting it on
// the same data dir each time: every sandbox ends with exactly one job at
// its declared spec, created once and changed once. A job registered just
// before the SIGKILL may be registered once more, unchanged: the killed
// controller may not have recorded that write, and a restarted one
// cannot tell it from someone else's.
func TestRealNomadKillMidApply(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	cfg := writeConfig(t, "nomad {\n  write_rate  = 2\n  write_burst = 1\n}\n")
	data, decl := t.TempDir(), t.TempDir()
	names := s.names(crashFleet)

	// Each job's modify index when the round before ended.
	prev := map[string]uint64{}
	for round, mb := range []int{32, 48} {
		s.writeFleet(decl, names, mem(mb))
		c := s.startController(data, "-config", cfg)
		c.mustAkctl("apply", "-f", decl)
		// Killed once the first of the round's registers has reached Nomad.
		written := func() map[string]bool {
			ids := map[string]bool{}
			for _, j := range s.jobs() {
				if j.JobModifyIndex != prev[j.ID] {
					ids[j.ID] = true
				}
			}
			return ids
		}
		eventually(t, converge, "a first register", func() (bool, string) {
			n := len(written())
			return n > 0, fmt.Sprintf("%d written", n)
		})
		c.kill9()
		before := written()
		t.Logf("round %d: SIGKILL after %d of %d registers", round, len(before), crashFleet)
		if len(before) == crashFleet {
			t.Fatalf("round %d: every register was done before the SIGKILL; it did not land mid-apply", round)
		}

		c = s.startController(data, "-config", cfg)
		c.mustAkctl("wait", "--for=ready", "--all", "-n", s.ns, "--timeout", converge.String())
		jobs := s.jobs()
		if len(jobs) != crashFleet {
			var ids []string
			for _, j := range jobs {
				ids = append(ids, j.ID)
			}
			t.Fatalf("round %d: Nomad holds %d jobs (%s), want one per sandbox, %d", round, len(jobs), strings.Join(ids, " "), crashFleet)
		}
		for _, name := range names {
			sb := c.sandbox(name)
			j := s.job(jobID(name))
			if j == nil {
				t.Fatalf("round %d: no job for %s", round, name)
			}
			checkRunsCurrentVersion(t, s, sb, j)
			switch {
			case j.Meta["agentkernel-spec-hash"] != strings.TrimPrefix(sb.Hash, "sha256:") && j.Meta["agentkernel-spec-hash"] != sb.Hash:
				t.Errorf("round %d: job %s has spec hash %s, the sandbox %s", round, *j.ID, j.Meta["agentkernel-spec-hash"], sb.Hash)
			case *j.TaskGroups[0].Tasks[0].Resources.MemoryMB != mb:
				t.Errorf("round %d: job %s has %d MB, want %d", round, *j.ID, *j.TaskGroups[0].Tasks[0].Resources.MemoryMB, mb)
			case *j.Version != uint64(round):
				t.Errorf("round %d: job %s is at version %d, want %d: registered with a changed spec %d times", round, *j.ID, *j.Version, round, *j.Version+1)
			}
			switch r := s.registers(*j.ID); {
			case r == round+1:
			case r == round+2 && before[*j.ID]:
				t.Logf("round %d: %s, registered before the SIGKILL, was registered again unchanged after the restart", round, *j.ID)
			default:
				t.Errorf("round %d: Nomad accepted %d registers of %s, want %d", round, r, *j.ID, round+1)
			}
		}
		c.stop()
		for _, j := range jobs {
			prev[j.ID] = j.JobModifyIndex
		}
	}

	c := s.startController(data, "-config", cfg)
	c.mustAkctl("delete", "-f", decl, "--wait")
	if jobs := s.jobs(); len(jobs) != 0 {
		t.Errorf("%d jobs left after deleting every sandbox", len(jobs))
	}
}
