//go:build reliability

package reliability

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

const (
	haTTL   = 10 * time.Second
	haDelay = 2 * time.Second
	// haHandover bounds a failover after a SIGKILL: Nomad frees a lock
	// that is not renewed 2×TTL+delay after its last renewal, and the new
	// leader then catches up and lists its jobs.
	haHandover = 2*haTTL + haDelay + 5*time.Second
	haFleet    = 50
	haRounds   = 3
)

// probe is for /readyz and /metrics: a dead instance must not stall a poll.
var probe = &http.Client{Timeout: 2 * time.Second}

// member is one controller instance of the cluster. It keeps its ID,
// address and data dir across restarts.
type member struct {
	id, listen, url, dataDir, logPath string
	proc                              *proc
}

// proc is one run of a member's process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // cmd.Wait's result, set before done closes
}

func (m *member) start(t *testing.T, bin, nomadAddr string) {
	t.Helper()
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(log, "=== test: start %s at %s\n", m.id, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, "-ha", "-instance-id", m.id, "-advertise-addr", m.url,
		"-ha-lock-ttl", haTTL.String(), "-ha-lock-delay", haDelay.String(),
		"-data-dir", m.dataDir, "-listen", m.listen, "-nomad-addr", nomadAddr,
		"-nomad-write-rate", "0", "-workers", "8", "-log-level", "info")
	cmd.Stdout, cmd.Stderr = log, log
	err = cmd.Start()
	log.Close() // the child holds its own descriptor
	if err != nil {
		t.Fatalf("start controller %s: %v", m.id, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	m.proc = p
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for status(t, m.url+"/healthz") != http.StatusOK {
		select {
		case <-p.done:
			t.Fatalf("controller %s exited at start: %v", m.id, p.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller %s never served %s/healthz", m.id, m.url)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (m *member) kill(t *testing.T) {
	t.Helper()
	if err := m.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", m.id, err)
	}
	<-m.proc.done
}

// terminate SIGTERMs the process.
func (m *member) terminate(t *testing.T) {
	t.Helper()
	if err := m.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", m.id, err)
	}
}

// exited waits for a terminated process and fails unless it stopped cleanly.
func (m *member) exited(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-m.proc.done:
		if m.proc.err != nil {
			t.Errorf("controller %s did not stop cleanly after SIGTERM: %v", m.id, m.proc.err)
		}
	case <-time.After(within):
		t.Fatalf("controller %s still running %s after SIGTERM", m.id, within)
	}
}

// logRelevant picks the lines that explain a failover: leadership,
// replication, warnings and errors.
var logRelevant = regexp.MustCompile(`(?i)level=(warn|error)|leader|lock|leading|follow|replica|cluster|catch|panic|=== test`)

// tail is the end of the member's log: its last 20 lines, after the
// leadership, replication, warning and error lines that came before them.
func (m *member) tail() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(no log for %s: %v)", m.id, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	cut := max(0, len(lines)-20)
	var relevant []string
	for _, l := range lines[:cut] {
		if logRelevant.MatchString(l) {
			relevant = append(relevant, l)
		}
	}
	relevant = relevant[max(0, len(relevant)-40):]
	return fmt.Sprintf("--- %s: leadership, replication, warning and error lines before the last 20\n%s\n--- %s: last 20 lines\n%s",
		m.id, strings.Join(relevant, "\n"), m.id, strings.Join(lines[cut:], "\n"))
}

// readiness is the member's /readyz answer; ok is false when it did not
// answer.
func (m *member) readiness() (rd api.Readiness, ok bool) {
	resp, err := probe.Get(m.url + "/readyz")
	if err != nil {
		return rd, false
	}
	defer resp.Body.Close()
	return rd, json.NewDecoder(resp.Body).Decode(&rd) == nil
}

func describe(rd api.Readiness, ok bool) string {
	if !ok {
		return "no answer"
	}
	l := "none"
	if rd.Leader != nil && rd.Leader.ID != "" {
		l = rd.Leader.ID + " at " + rd.Leader.Address
	}
	return fmt.Sprintf("role %s, ready %t (%s), leader %s", rd.Role, rd.Ready, rd.Reason, l)
}

// forwardedApplies reads how many applies the member passed to the leader.
func (m *member) forwardedApplies(t *testing.T) float64 {
	t.Helper()
	resp, err := probe.Get(m.url + "/metrics")
	if err != nil {
		t.Fatalf("read %s's metrics: %v", m.id, err)
	}
	defer resp.Body.Close()
	var n float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "agentkernel_api_forwarded_requests_total{") ||
			!strings.Contains(l, `outcome="forwarded"`) || !strings.Contains(l, `route="POST /v1/apply"`) {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s's metric line %q: %v", m.id, l, err)
		}
		n += v
	}
	return n
}

// cluster is the test's controller instances.
type cluster []*member

func (c cluster) logs() string {
	var b strings.Builder
	for _, m := range c {
		b.WriteString(m.tail())
		b.WriteByte('\n')
	}
	return b.String()
}

func (c cluster) without(x *member) cluster {
	return slices.DeleteFunc(slices.Clone(c), func(m *member) bool { return m == x })
}

// agree waits until exactly one of ms leads and is ready, and every other
// is a ready follower naming it, and returns the leader.
func agree(t *testing.T, ms cluster, within time.Duration) *member {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var leaders []*member
		seen := map[string]string{}
		states := map[*member]api.Readiness{}
		allReady := true
		for _, m := range ms {
			rd, ok := m.readiness()
			seen[m.id] = describe(rd, ok)
			states[m] = rd
			allReady = allReady && ok && rd.Ready
			if ok && rd.Role == api.RoleLeader {
				leaders = append(leaders, m)
			}
		}
		if len(leaders) == 1 && allReady {
			l := leaders[0]
			named := true
			for _, m := range ms {
				rd := states[m]
				if m != l && (rd.Role != api.RoleFollower || rd.Leader == nil || rd.Leader.ID != l.id || rd.Leader.Address != l.url) {
					named = false
				}
			}
			if named {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreement on one leader within %s: %v", within, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// handover waits until one of ms reports itself leader and ready, and
// returns it and the time since since. Two leaders at once fail the test.
func handover(t *testing.T, ms cluster, since time.Time, within time.Duration) (*member, time.Duration) {
	t.Helper()
	deadline := since.Add(within)
	for {
		var leaders, ready []*member
		seen := map[string]string{}
		for _, m := range ms {
			rd, ok := m.readiness()
			seen[m.id] = describe(rd, ok)
			if ok && rd.Role == api.RoleLeader {
				leaders = append(leaders, m)
				if rd.Ready {
					ready = append(ready, m)
				}
			}
		}
		took := time.Since(since)
		if len(leaders) > 1 {
			t.Fatalf("two instances report themselves leader at once %s after the stop: %v", took, seen)
		}
		if len(ready) == 1 {
			return ready[0], took
		}
		if time.Now().After(deadline) {
			t.Fatalf("no instance led and was ready within %s of the stop: %v", within, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// akctlJSON runs akctl and decodes its standard output into v. Standard
// error is kept apart: it carries notes such as "served by a follower".
func akctlJSON(t *testing.T, bin string, v any, args ...string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("akctl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("akctl %s: decode %q: %v", strings.Join(args, " "), out, err)
	}
}

// decl is what the test declares for one sandbox: memory changes its
// Nomad job, the team label does not.
type decl struct {
	memory int
	team   string
}

type fleetDecls map[string]decl

func (f fleetDecls) write(t *testing.T, dir string) {
	t.Helper()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f)) {
		d := f[name]
		fmt.Fprintf(&b, "sandbox %q {\n  driver    = \"exec\"\n  command   = [\"/bin/sleep\", \"infinity\"]\n  vcpus     = 0.1\n  memory_mb = %d\n  labels    = { team = %q }\n}\n",
			name, d.memory, d.team)
	}
	if err := os.WriteFile(filepath.Join(dir, "fleet.hcl"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// change is one round's edit of the fleet and the apply actions it must
// produce.
type change struct {
	jobChanged  map[string]bool // new memory: a new job version
	labelsOnly  map[string]bool // a new label: the job stays as it is
	deleted     string
	added       string
	wantActions map[string]string // sandbox -> action; every other one "unchanged"
}

// edit changes round r's fleet: memory for 5 sandboxes, the label for 2
// others, one deleted and one added.
func edit(f fleetDecls, r int) (fleetDecls, change) {
	next := maps.Clone(f)
	names := slices.Sorted(maps.Keys(f))
	ch := change{jobChanged: map[string]bool{}, labelsOnly: map[string]bool{}, wantActions: map[string]string{}}
	for k := range 5 {
		n := names[(r*5+k)%len(names)]
		d := next[n]
		d.memory += 32
		next[n] = d
		ch.jobChanged[n] = true
		ch.wantActions[n] = "configured"
	}
	for k := range 2 {
		n := names[(r*5+20+k)%len(names)]
		d := next[n]
		d.team = fmt.Sprintf("round%d", r)
		next[n] = d
		ch.labelsOnly[n] = true
		ch.wantActions[n] = "configured"
	}
	ch.deleted = names[len(names)-1-r]
	delete(next, ch.deleted)
	ch.wantActions[ch.deleted] = "pruned"
	ch.added = fmt.Sprintf("g%03d", r)
	next[ch.added] = decl{memory: 64, team: "a"}
	ch.wantActions[ch.added] = "created"
	return next, ch
}

// applyThrough applies f through m, a follower, and checks that m forwarded it
// and that the leader did what ch says.
func applyThrough(t *testing.T, akctlBin, declDir string, m *member, f fleetDecls, ch change) {
	t.Helper()
	f.write(t, declDir)
	before := m.forwardedApplies(t)
	var resp api.ApplyResponse
	akctlJSON(t, akctlBin, &resp, "--addr", m.url, "apply", "-f", declDir, "--prune", "--apply-set", "fleet", "-o", "json")
	if after := m.forwardedApplies(t); after <= before {
		t.Fatalf("follower %s did not forward the apply to the leader: its forwarded applies went from %v to %v", m.id, before, after)
	}
	var wrong []string
	got := map[string]string{}
	for _, r := range resp.Results {
		got[r.Name] = r.Action
		want := cmp.Or(ch.wantActions[r.Name], "unchanged")
		if r.Action != want {
			wrong = append(wrong, fmt.Sprintf("%s %s, want %s", r.Name, r.Action, want))
		}
	}
	for name, want := range ch.wantActions {
		if got[name] == "" {
			wrong = append(wrong, fmt.Sprintf("%s missing, want %s", name, want))
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("apply through %s: %s", m.id, strings.Join(wrong, "; "))
	}
}

// jobIndex is what Nomad says of one sandbox's job.
type jobIndex struct{ create, modify uint64 }

// ownedJobs lists the controller's jobs in Nomad by sandbox name.
func ownedJobs(t *testing.T, nomadAddr string) map[string]jobStub {
	t.Helper()
	jobs := map[string]jobStub{}
	for _, j := range nomadJobs(t, nomadAddr) {
		if j.Meta[nomad.MetaOwner] != "" {
			jobs[strings.TrimPrefix(j.ID, spec.JobIDPrefix)] = j
		}
	}
	return jobs
}

// intact checks that every recorded job is still in Nomad, running, as it
// was: not recreated (same CreateIndex), not registered again (same
// JobModifyIndex), not stopped; and that there is no other.
func intact(t *testing.T, nomadAddr string, recorded map[string]jobIndex, when string) {
	t.Helper()
	jobs := ownedJobs(t, nomadAddr)
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(recorded)) {
		was := recorded[name]
		j, ok := jobs[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: purged", name))
		case j.Stop:
			problems = append(problems, fmt.Sprintf("%s: stopped (status %s)", name, j.Status))
		case j.CreateIndex != was.create:
			problems = append(problems, fmt.Sprintf("%s: recreated (CreateIndex %d, was %d)", name, j.CreateIndex, was.create))
		case j.JobModifyIndex != was.modify:
			problems = append(problems, fmt.Sprintf("%s: registered again (JobModifyIndex %d, was %d)", name, j.JobModifyIndex, was.modify))
		case j.Status != "running":
			problems = append(problems, fmt.Sprintf("%s: status %s", name, j.Status))
		}
	}
	for name := range jobs {
		if _, ok := recorded[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s: a job nobody declared", name))
		}
	}
	if len(problems) > 0 {
		t.Fatalf("%s, Nomad's jobs changed: %s", when, strings.Join(problems, "; "))
	}
}

// settle waits until Nomad runs exactly f's jobs, the jobs of ch.jobChanged
// registered anew, and the controller at via (not stale) shows every
// sandbox Running with f's spec. It then checks that no other job was
// recreated or registered again, and returns the jobs' indexes.
func settle(t *testing.T, akctlBin string, via *member, nomadAddr string, f fleetDecls, ch change, before map[string]jobIndex) map[string]jobIndex {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var waiting []string
		jobs := ownedJobs(t, nomadAddr)
		for _, name := range slices.Sorted(maps.Keys(f)) {
			j, ok := jobs[name]
			switch {
			case !ok:
				waiting = append(waiting, name+": no job in Nomad")
			case j.Stop || j.Status != "running":
				waiting = append(waiting, fmt.Sprintf("%s: job status %s, stop %t", name, j.Status, j.Stop))
			case ch.jobChanged[name] && j.JobModifyIndex == before[name].modify:
				waiting = append(waiting, fmt.Sprintf("%s: job not registered anew (JobModifyIndex %d)", name, j.JobModifyIndex))
			}
		}
		for name := range jobs {
			if _, ok := f[name]; !ok {
				waiting = append(waiting, name+": job of an undeclared sandbox")
			}
		}
		var list struct{ Items []api.Item }
		akctlJSON(t, akctlBin, &list, "--addr", via.url, "get", "-A", "-o", "json")
		items := map[string]api.Item{}
		for _, it := range list.Items {
			items[it.Name] = it
		}
		for _, name := range slices.Sorted(maps.Keys(f)) {
			it, ok := items[name]
			d := f[name]
			switch {
			case !ok:
				waiting = append(waiting, name+": not in the store")
			case it.Spec.MemoryMB != d.memory || it.Labels["team"] != d.team:
				waiting = append(waiting, fmt.Sprintf("%s: memory %d team %q in the store, declared %d %q", name, it.Spec.MemoryMB, it.Labels["team"], d.memory, d.team))
			case it.Status.Phase != "Running" || it.Status.ObservedGeneration != it.Generation:
				waiting = append(waiting, fmt.Sprintf("%s: phase %s, observed generation %d of %d", name, it.Status.Phase, it.Status.ObservedGeneration, it.Generation))
			}
		}
		for name := range items {
			if _, ok := f[name]; !ok {
				waiting = append(waiting, name+": in the store, not declared")
			}
		}
		if len(waiting) == 0 {
			now := map[string]jobIndex{}
			var problems []string
			for name := range f {
				j := jobs[name]
				now[name] = jobIndex{j.CreateIndex, j.JobModifyIndex}
				was, existed := before[name]
				switch {
				case !existed:
				case j.CreateIndex != was.create:
					problems = append(problems, fmt.Sprintf("%s: recreated (CreateIndex %d, was %d)", name, j.CreateIndex, was.create))
				case !ch.jobChanged[name] && j.JobModifyIndex != was.modify:
					problems = append(problems, fmt.Sprintf("%s: registered again though its job did not change (JobModifyIndex %d, was %d)", name, j.JobModifyIndex, was.modify))
				}
			}
			if len(problems) > 0 {
				t.Fatalf("after convergence: %s", strings.Join(problems, "; "))
			}
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged within 90s (read through %s): %s", via.id, strings.Join(waiting, "; "))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// staleMatches waits until m's own copy (akctl get --stale) holds exactly
// f's sandboxes with f's spec.
func staleMatches(t *testing.T, akctlBin string, m *member, f fleetDecls, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var list struct{ Items []api.Item }
		akctlJSON(t, akctlBin, &list, "--addr", m.url, "get", "-A", "-o", "json", "--stale")
		var diff []string
		items := map[string]api.Item{}
		for _, it := range list.Items {
			items[it.Name] = it
			if _, ok := f[it.Name]; !ok {
				diff = append(diff, it.Name+": in the copy, not declared")
			}
		}
		for _, name := range slices.Sorted(maps.Keys(f)) {
			it, ok := items[name]
			switch {
			case !ok:
				diff = append(diff, name+": missing from the copy")
			case it.Spec.MemoryMB != f[name].memory || it.Labels["team"] != f[name].team || it.DeletionRequestedAt != nil:
				diff = append(diff, fmt.Sprintf("%s: memory %d team %q deletion %v in the copy, declared %d %q",
					name, it.Spec.MemoryMB, it.Labels["team"], it.DeletionRequestedAt, f[name].memory, f[name].team))
			}
		}
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's stale read does not show the declared sandboxes within %s: %s", m.id, within, strings.Join(diff, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// versions checks that akctl version agrees with /readyz on every member:
// lead leads, the others follow it.
func versions(t *testing.T, akctlBin string, ms cluster, lead *member) {
	t.Helper()
	for _, m := range ms {
		var out struct{ Controller *api.VersionInfo }
		akctlJSON(t, akctlBin, &out, "--addr", m.url, "version", "-o", "json")
		vi := out.Controller
		want := api.RoleFollower
		if m == lead {
			want = api.RoleLeader
		}
		switch {
		case vi == nil:
			t.Fatalf("akctl version against %s: the controller did not answer", m.id)
		case vi.InstanceID != m.id || vi.Role != want || vi.Leader == nil || vi.Leader.ID != lead.id || vi.Leader.Address != lead.url:
			t.Fatalf("akctl version against %s: instance %q role %q leader %+v; want instance %s role %s leader %s at %s",
				m.id, vi.InstanceID, vi.Role, vi.Leader, m.id, want, lead.id, lead.url)
		}
	}
}

// TestFailover runs three controller instances with -ha and SIGKILLs the
// leader three times while 50 sandboxes run: each time another instance
// must lead within 2×TTL+delay+5s without recreating, stopping or
// re-registering any job; a change applied through a follower must then
// converge; and the killed instance, restarted, must follow with the
// current copy. A clean stop of the leader at the end must hand over at
// once.
func TestFailover(t *testing.T) {
	began := time.Now()
	bins := build(t)
	nomadAddr := startNomad(t, bins["akbench"])
	logDir, declDir := t.TempDir(), t.TempDir()
	c := cluster{}
	for i := range 3 {
		listen := freeAddr(t)
		id := fmt.Sprintf("c%d", i)
		c = append(c, &member{id: id, listen: listen, url: "http://" + listen, dataDir: t.TempDir(),
			logPath: filepath.Join(logDir, id+".log")})
	}
	// Registered before the processes' cleanups, so it runs after them
	// and shows their last words.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller logs:\n%s", c.logs())
		}
	})
	for _, m := range c {
		m.start(t, bins["controller"], nomadAddr)
	}
	lead := agree(t, c, 60*time.Second)
	versions(t, bins["akctl"], c, lead)
	t.Logf("%s leads, %v follow", lead.id, ids(c.without(lead)))

	f := fleetDecls{}
	for i := range haFleet {
		f[fmt.Sprintf("f%03d", i)] = decl{memory: 64, team: "a"}
	}
	first := change{wantActions: map[string]string{}}
	for name := range f {
		first.wantActions[name] = "created"
	}
	followers := c.without(lead)
	applyThrough(t, bins["akctl"], declDir, followers[0], f, first)
	recorded := settle(t, bins["akctl"], followers[1], nomadAddr, f, first, nil)
	t.Logf("%d sandboxes running, applied through %s", len(recorded), followers[0].id)

	for round := range haRounds {
		victim := lead
		survivors := c.without(victim)
		killedAt := time.Now()
		victim.kill(t)
		next, took := handover(t, survivors, killedAt, haHandover+15*time.Second)
		t.Logf("round %d: SIGKILLed leader %s; %s led and was ready %s later (bound %s)", round+1, victim.id, next.id, took.Round(time.Millisecond), haHandover)
		if took > haHandover {
			t.Errorf("round %d: %s took over %s after %s was SIGKILLed, more than 2×TTL+delay+5s = %s", round+1, next.id, took.Round(time.Millisecond), victim.id, haHandover)
		}
		if l := agree(t, survivors, 15*time.Second); l != next {
			t.Fatalf("round %d: %s reported itself leader, then %s led", round+1, next.id, l.id)
		}
		intact(t, nomadAddr, recorded, fmt.Sprintf("round %d, once %s took over from %s", round+1, next.id, victim.id))

		follower := survivors.without(next)[0]
		var ch change
		f, ch = edit(f, round)
		applyThrough(t, bins["akctl"], declDir, follower, f, ch)
		recorded = settle(t, bins["akctl"], follower, nomadAddr, f, ch, recorded)
		t.Logf("round %d: through %s, %d jobs changed, 2 labels changed, %s pruned, %s added: converged", round+1, follower.id, len(ch.jobChanged), ch.deleted, ch.added)

		victim.start(t, bins["controller"], nomadAddr)
		if l := agree(t, c, 60*time.Second); l != next {
			t.Fatalf("round %d: after %s restarted, %s leads instead of %s", round+1, victim.id, l.id, next.id)
		}
		versions(t, bins["akctl"], c, next)
		staleMatches(t, bins["akctl"], victim, f, 30*time.Second)
		lead = next
	}

	// A clean stop releases the lock: the next leader need not wait for
	// the TTL.
	survivors := c.without(lead)
	stoppedAt := time.Now()
	lead.terminate(t)
	next, took := handover(t, survivors, stoppedAt, haHandover)
	t.Logf("SIGTERMed leader %s; %s led and was ready %s later", lead.id, next.id, took.Round(time.Millisecond))
	if took > haTTL/2 {
		t.Errorf("%s took over %s after %s was SIGTERMed; a released lock should hand over well under 2×TTL = %s", next.id, took.Round(time.Millisecond), lead.id, 2*haTTL)
	}
	lead.exited(t, 15*time.Second)
	if l := agree(t, survivors, 15*time.Second); l != next {
		t.Fatalf("after the clean stop, %s reported itself leader, then %s led", next.id, l.id)
	}
	intact(t, nomadAddr, recorded, fmt.Sprintf("once %s took over from %s, stopped cleanly", next.id, lead.id))
	for _, m := range []*member{survivors.without(next)[0], next} {
		m.terminate(t)
		m.exited(t, 15*time.Second)
	}
	intact(t, nomadAddr, recorded, "with every controller stopped")
	t.Logf("done in %s", time.Since(began).Round(time.Second))
}

func ids(ms cluster) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.id)
	}
	return out
}
