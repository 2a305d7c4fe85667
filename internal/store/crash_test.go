package store_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// The crash test runs a child process (this test binary, running only
// TestCrashChild) that applies batches to a store with real fsyncs and
// acknowledges each write on stdout once it has returned. The parent kills
// it with SIGKILL at random moments, reopens the store and checks that
// everything acknowledged is there, that no batch is visible in part, and
// that revisions only go up.
//
// Batch i is crashPerBatch sandboxes labelled batch=i, applied in one
// transaction that also prunes (marks for deletion) all of batch i-2.
// After it, the child finalizes, one key per transaction, every marked
// record of batches up to i-4; so once batch i+5 exists, batch i is gone.
const (
	crashEnvDir   = "STORE_CRASH_CHILD_DIR"
	crashPerBatch = 4
	crashKills    = 40
)

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("run only as the child of TestCrashKeepsAcknowledgedBatchesWhole")
	}
	ctx := t.Context()
	s, err := store.Open(dir, store.Options{}) // real fsyncs: this is the durability test
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.List(ctx, store.ListOptions{Namespace: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	start := 0
	for _, r := range recs {
		start = max(start, batchOf(t, r)+1)
	}
	// A kill may have interrupted the finalizing after the last batch;
	// finish it before the next batch, as an uninterrupted run would.
	finalizeUpTo(t, s, start-1-4)
	for i := start; ; i++ {
		var objs []store.Object
		for j := range crashPerBatch {
			objs = append(objs, store.Object{Sandbox: sandbox("crash", fmt.Sprintf("b%d-%d", i, j), "img:1", labels("batch", strconv.Itoa(i)))})
		}
		opts := store.ApplyOptions{ApplySet: "crash"}
		if i >= 2 {
			opts.Prune = true
			opts.PruneSelector = store.MustParseSelector("batch=" + strconv.Itoa(i-2))
		}
		res, err := s.Apply(ctx, objs, opts)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("ack apply %d %d\n", i, res.Revision)
		finalizeUpTo(t, s, i-4)
	}
}

// finalizeUpTo finalizes every marked record of batches up to limit.
func finalizeUpTo(t *testing.T, s *store.Store, limit int) {
	ctx := t.Context()
	recs, _, err := s.List(ctx, store.ListOptions{Namespace: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if !r.Deleting() || batchOf(t, r) > limit {
			continue
		}
		if err := s.Finalize(ctx, r.Key(), r.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		rev, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("ack finalize %s %d\n", r.Key(), rev)
	}
}

func batchOf(t testing.TB, r store.Record) int {
	t.Helper()
	b, err := strconv.Atoi(r.Sandbox.Labels["batch"])
	if err != nil {
		t.Fatalf("%s: batch label: %v", r.Key(), err)
	}
	return b
}

// crashAcks is what the child acknowledged, over all its runs.
type crashAcks struct {
	applied   map[int]uint64 // batch -> revision
	finalized map[string]bool
	maxRev    uint64
}

func TestCrashKeepsAcknowledgedBatchesWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills child processes")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STORE_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with STORE_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	dir := t.TempDir()
	acks := crashAcks{applied: map[int]uint64{}, finalized: map[string]bool{}}
	var lastOpenRev uint64
	for kill := range crashKills {
		runAndKill(t, dir, rng, &acks)
		rev := checkCrashedStore(t, dir, &acks)
		if rev < lastOpenRev {
			t.Fatalf("kill %d (seed %d): revision went back from %d to %d", kill, seed, lastOpenRev, rev)
		}
		lastOpenRev = rev
	}
	if len(acks.applied) < crashKills {
		t.Errorf("only %d batches acknowledged over %d runs", len(acks.applied), crashKills)
	}
	t.Logf("%d kills, %d batches and %d finalizes acknowledged, final revision %d",
		crashKills, len(acks.applied), len(acks.finalized), lastOpenRev)
}

// runAndKill starts the child, lets it acknowledge a random number of
// writes, waits a random sub-millisecond-to-few-millisecond moment so the
// kill lands anywhere in a commit, and kills it with SIGKILL.
func runAndKill(t *testing.T, dir string, rng *rand.Rand, acks *crashAcks) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	wantAcks := 1 + rng.IntN(12)
	for n := 0; n < wantAcks; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before it was killed: %v", cmd.Wait())
			}
			if recordAck(t, line, acks) {
				n++
			}
		case <-time.After(time.Minute):
			t.Fatal("child acknowledged nothing for a minute")
		}
	}
	// The pause is the randomness under test: where in the child's next
	// commit the SIGKILL lands.
	time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Lines written before the kill are acknowledgements too.
	for line := range lines {
		recordAck(t, line, acks)
	}
	_ = cmd.Wait()
}

func recordAck(t *testing.T, line string, acks *crashAcks) bool {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "ack" {
		return false
	}
	rev, err := strconv.ParseUint(f[3], 10, 64)
	if err != nil {
		t.Fatalf("bad ack %q", line)
	}
	if rev < acks.maxRev {
		t.Fatalf("acknowledged revision %d after %d", rev, acks.maxRev)
	}
	acks.maxRev = rev
	switch f[1] {
	case "apply":
		b, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("bad ack %q", line)
		}
		acks.applied[b] = rev
	case "finalize":
		acks.finalized[f[2]] = true
	}
	return true
}

// checkCrashedStore reopens the store after a kill and checks it against
// what was acknowledged. It returns the store's revision.
func checkCrashedStore(t *testing.T, dir string, acks *crashAcks) uint64 {
	t.Helper()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	recs, rev, err := s.List(t.Context(), store.ListOptions{Namespace: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	if rev < acks.maxRev {
		t.Fatalf("store at revision %d, but revision %d was acknowledged", rev, acks.maxRev)
	}

	byBatch := map[int][]store.Record{}
	top := -1
	for _, r := range recs {
		b := batchOf(t, r)
		byBatch[b] = append(byBatch[b], r)
		top = max(top, b)
		if acks.finalized[r.Key()] {
			t.Errorf("%s: finalize acknowledged, record still there", r.Key())
		}
	}
	for b, n := range acks.applied {
		if b > top {
			t.Errorf("batch %d acknowledged at revision %d, the store's newest batch is %d", b, n, top)
		}
	}
	for b := max(0, top-3); b <= top; b++ {
		// Not yet up for finalizing: the whole batch must be there.
		if got := len(byBatch[b]); got != crashPerBatch {
			t.Errorf("batch %d (newest %d): %d of %d records", b, top, got, crashPerBatch)
		}
	}
	for b, rs := range byBatch {
		if b < top-4 {
			// Finalized by the child before it applied batch b+5.
			t.Errorf("batch %d still has %d records with batch %d applied", b, len(rs), top)
		}
		// One transaction wrote each batch and one marked it: its records
		// agree on resource version and deletion mark.
		for _, r := range rs[1:] {
			if r.ResourceVersion != rs[0].ResourceVersion || r.Deleting() != rs[0].Deleting() {
				t.Errorf("batch %d is torn: %s at resource version %d (deleting %t), %s at %d (deleting %t)",
					b, rs[0].Key(), rs[0].ResourceVersion, rs[0].Deleting(), r.Key(), r.ResourceVersion, r.Deleting())
			}
		}
		if wantMarked := b <= top-2; rs[0].Deleting() != wantMarked {
			t.Errorf("batch %d (newest %d): marked for deletion %t, want %t", b, top, rs[0].Deleting(), wantMarked)
		}
		if len(rs) != crashPerBatch && !rs[0].Deleting() {
			t.Errorf("batch %d has %d of %d records and is not being finalized", b, len(rs), crashPerBatch)
		}
	}
	return rev
}
