package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// The benchmarks run the production configuration (fsync on every
// commit), beside raw bbolt baselines that write the same encoded values
// with the same options, so docs/benchmarks.md can give the store's overhead as a
// ratio. Run: go test -run '^$' -bench . -benchtime 5x -count 3 ./internal/store/

func benchSandboxes(n int) []Object {
	objs := make([]Object, n)
	for i := range objs {
		objs[i] = Object{Sandbox: spec.Sandbox{
			Namespace: "bench",
			Name:      fmt.Sprintf("sandbox-%05d", i),
			Labels:    map[string]string{"app": fmt.Sprint("app-", i%10), "team": "bench"},
			Spec: spec.Spec{
				Driver: "docker", Image: "ghcr.io/example/agent:1.2.3", Command: []string{"agent", "--serve"},
				Profile: "default", VCPUs: 1, MemoryMB: 1024, Network: "bridge", State: "running",
				Env:   map[string]string{"LOG_LEVEL": "info", "MODE": "agent"},
				Ports: []spec.Port{{Label: "http", To: 8080}},
			},
			Source: spec.Source{File: "sandboxes.hcl", StartLine: i*10 + 1, StartCol: 1, EndLine: i*10 + 9, EndCol: 2},
		}}
	}
	return objs
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// encodedEntries are the values Apply would write, for the baselines.
func encodedEntries(b *testing.B, objs []Object) (keys, vals [][]byte) {
	now := time.Now().UTC()
	for _, o := range objs {
		e := sandboxEntry{Declaration: Declaration{Sandbox: o.Sandbox, Source: o.Sandbox.Source, Hash: o.Sandbox.Spec.Hash(),
			Generation: 1, CreatedAt: now, UpdatedAt: now}, ResourceVersion: 1}
		v, err := json.Marshal(&e)
		if err != nil {
			b.Fatal(err)
		}
		keys = append(keys, []byte(o.Sandbox.Key()))
		vals = append(vals, v)
	}
	return keys, vals
}

func rawBolt(b *testing.B) *bolt.DB {
	b.Helper()
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600,
		&bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bucketSandboxes)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkApply10000InOneBatch(b *testing.B) {
	objs := benchSandboxes(10_000)
	for b.Loop() {
		b.StopTimer()
		s := benchStore(b)
		b.StartTimer()
		if _, err := s.Apply(b.Context(), objs, ApplyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBaselineBoltPut10000InOneTx(b *testing.B) {
	keys, vals := encodedEntries(b, benchSandboxes(10_000))
	for b.Loop() {
		b.StopTimer()
		db := rawBolt(b)
		b.StartTimer()
		if err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketSandboxes)
			for i := range keys {
				if err := bk.Put(keys[i], vals[i]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApply1000Single(b *testing.B) {
	objs := benchSandboxes(1000)
	for b.Loop() {
		b.StopTimer()
		s := benchStore(b)
		b.StartTimer()
		for i := range objs {
			if _, err := s.Apply(b.Context(), objs[i:i+1], ApplyOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(objs)), "ns/apply")
}

func BenchmarkBaselineBolt1000SingleTx(b *testing.B) {
	keys, vals := encodedEntries(b, benchSandboxes(1000))
	for b.Loop() {
		b.StopTimer()
		db := rawBolt(b)
		b.StartTimer()
		for i := range keys {
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketSandboxes).Put(keys[i], vals[i])
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/apply")
}

func BenchmarkReapply10000Unchanged(b *testing.B) {
	objs := benchSandboxes(10_000)
	s := benchStore(b)
	res, err := s.Apply(b.Context(), objs, ApplyOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		again, err := s.Apply(b.Context(), objs, ApplyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if again.Revision != res.Revision || again.Changed() {
			b.Fatalf("unchanged re-apply moved the revision from %d to %d", res.Revision, again.Revision)
		}
	}
}

func BenchmarkList10000WithSelector(b *testing.B) {
	objs := benchSandboxes(10_000)
	s := benchStore(b)
	if _, err := s.Apply(b.Context(), objs, ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	sel := MustParseSelector("app in (app-3,app-4),team=bench")
	for b.Loop() {
		recs, _, err := s.List(b.Context(), ListOptions{Selector: sel})
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) != 2000 {
			b.Fatalf("listed %d, want 2000", len(recs))
		}
	}
}

func BenchmarkBaselineBoltScan10000(b *testing.B) {
	keys, vals := encodedEntries(b, benchSandboxes(10_000))
	db := rawBolt(b)
	if err := db.Update(func(tx *bolt.Tx) error {
		for i := range keys {
			if err := tx.Bucket(bucketSandboxes).Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		n := 0
		_ = db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketSandboxes).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
			return nil
		})
		if n != 10_000 {
			b.Fatalf("scanned %d", n)
		}
	}
}

func BenchmarkBaselineBoltScanDecode10000(b *testing.B) {
	keys, vals := encodedEntries(b, benchSandboxes(10_000))
	db := rawBolt(b)
	if err := db.Update(func(tx *bolt.Tx) error {
		for i := range keys {
			if err := tx.Bucket(bucketSandboxes).Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		n := 0
		err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketSandboxes).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var e sandboxEntry
				if err := json.Unmarshal(v, &e); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil || n != 10_000 {
			b.Fatalf("scanned %d: %v", n, err)
		}
	}
}

// BenchmarkClaim is one claim from a pool of 50 Ready sandboxes beside
// 150 claimed ones (the claim scans the pool's key range), against the
// smallest durable write of a record: one bbolt Put in one fsynced
// transaction.
func BenchmarkClaim(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	tmpl := benchSandboxes(1)[0]
	tmpl.Sandbox.Name = "py"
	tmpl.Pool = &spec.PoolSettings{Size: 50}
	if _, err := s.Apply(ctx, []Object{tmpl}, ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	refill := func() {
		ps, err := s.SyncPool(ctx, "bench/py")
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range ps.Created {
			rec, _ := s.Get(ctx, k)
			st := Status{Phase: PhaseRunning, ObservedGeneration: rec.Generation, Conditions: []Condition{{Type: "Ready", Status: ConditionTrue}}}
			if err := s.UpdateStatus(ctx, k, st); err != nil {
				b.Fatal(err)
			}
		}
	}
	for range 3 {
		refill()
		for range 50 {
			if _, err := s.Claim(ctx, "bench/py", ClaimOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	refill()
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%50 == 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		if _, err := s.Claim(ctx, "bench/py", ClaimOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBaselineBoltPutOneFsynced(b *testing.B) {
	db := rawBolt(b)
	keys, vals := encodedEntries(b, benchSandboxes(1))
	b.ResetTimer()
	for range b.N {
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSandboxes).Put(keys[0], vals[0]) }); err != nil {
			b.Fatal(err)
		}
	}
}
