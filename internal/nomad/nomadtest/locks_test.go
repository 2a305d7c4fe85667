package nomadtest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

// lockWrite is a setup step: one lock operation that must succeed.
func lockWrite(op, path, bodyFile string) func(t *testing.T, f *fixture) {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		body, err := os.ReadFile(filepath.Join(factsDir, "more", "bodies", bodyFile))
		if err != nil {
			t.Fatal(err)
		}
		resp, b := f.do(t, http.MethodPut, "/v1/var/"+path+"?"+op, body, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("setup %s %s: %d %s", op, path, resp.StatusCode, b)
		}
	}
}

// TestConformanceLocksReplay replays the lock sessions of more/ 200-258 on
// their recorded clock and compares every answer with the recording:
// status, headers, and the body exactly, generated IDs, indexes and times
// bound one to one.
func TestConformanceLocksReplay(t *testing.T) {
	t.Run("session", func(t *testing.T) {
		// The recording's agent had written two of the variables before:
		// locks/exp2 in a first run of 231 (its CreateTime), and
		// locks/leaser by an api LockLeaser before 241.
		replaySession(t, "2[0-4]?-*.http", Options{}, []timedStep{
			{at: mustTime(t, "2026-11-27T17:54:12.030Z"), name: "exp2 first run", do: lockWrite(opAcquire, "locks/exp2", "exp2-acquire.json")},
			{at: mustTime(t, "2026-11-27T17:56:20.303Z"), name: "leaser first run", do: lockWrite(opAcquire+"=", "locks/leaser", "lock-acquire-api-leaser-ttl10s.json")},
		}, nil)
	})
	// The race was recorded against a restarted agent (its indexes start
	// lower again).
	t.Run("race", func(t *testing.T) { replaySession(t, "25?-*.http", Options{}, nil, nil) })
}

// lockAction is one request of a lock timeline, at a time after the
// first acquire.
type lockAction struct {
	at     time.Duration
	who    string // the holder whose lock ID the request carries
	op     string // opAcquire, opRenew, opRelease, "put" (plain write with the ID) or "get"
	status int
	text   string // the body, for errors
	locked bool   // for "get": whether the variable still shows a lock
}

// TestLockTimeline drives the lock timers on a fake clock (more/ 2.3):
// when a lock that is not renewed frees up, when a renew still works, and
// the stale delay timer of 258.
func TestLockTimeline(t *testing.T) {
	cases := []struct {
		name       string
		ttl, delay string
		actions    []lockAction
	}{
		{name: "renew works until the TTL timer fires at 2xTTL", ttl: "10s", delay: "5s", actions: []lockAction{
			{at: time.Second, who: "B", op: opAcquire, status: 409},
			{at: 20*time.Second - time.Nanosecond, who: "A", op: opRenew, status: 200},
		}},
		{name: "unrenewed 10s/5s lock is held until 25s", ttl: "10s", delay: "5s", actions: []lockAction{
			{at: 20 * time.Second, op: "get", status: 200, locked: true},
			{at: 25*time.Second - time.Nanosecond, who: "B", op: opAcquire, status: 409},
			{at: 25 * time.Second, op: "get", status: 200, locked: false},
			{at: 25 * time.Second, who: "B", op: opAcquire, status: 200},
		}},
		{name: "unrenewed default 15s/15s lock frees at 45s", ttl: "15s", delay: "15s", actions: []lockAction{
			{at: 45*time.Second - time.Nanosecond, who: "B", op: opAcquire, status: 409},
			{at: 45 * time.Second, who: "B", op: opAcquire, status: 200},
		}},
		{name: "renew after TTL before 2xTTL re-arms", ttl: "10s", delay: "5s", actions: []lockAction{
			{at: 15 * time.Second, who: "A", op: opRenew, status: 200},
			{at: 34 * time.Second, who: "A", op: opRenew, status: 200},
			{at: 54 * time.Second, op: "get", status: 200, locked: true},
			{at: 59*time.Second - time.Nanosecond, who: "B", op: opAcquire, status: 409},
			{at: 59 * time.Second, who: "B", op: opAcquire, status: 200},
		}},
		{name: "renew in the delay window is refused while the lock shows", ttl: "10s", delay: "5s", actions: []lockAction{
			{at: 15 * time.Second, who: "A", op: opRenew, status: 200},
			{at: 37 * time.Second, who: "A", op: opRenew, status: 409, text: "attempting to modify locked variable"},
			{at: 37 * time.Second, op: "get", status: 200, locked: true},
			{at: 39 * time.Second, who: "B", op: opAcquire, status: 409},
			{at: 40 * time.Second, op: "get", status: 200, locked: false},
			{at: 42 * time.Second, who: "A", op: opRenew, status: 409, text: "variable doesn't hold a lock"},
		}},
		{name: "acquire again by the holder does not extend the lock", ttl: "10s", delay: "5s", actions: []lockAction{
			{at: 15 * time.Second, who: "A", op: opAcquire, status: 200},
			{at: 21 * time.Second, who: "A", op: opRenew, status: 409, text: "attempting to modify locked variable"},
			{at: 25 * time.Second, who: "B", op: opAcquire, status: 200},
		}},
		{name: "release before the TTL stops the timers", ttl: "10s", delay: "5s", actions: []lockAction{
			{at: 5 * time.Second, who: "A", op: opRelease, status: 200},
			{at: 6 * time.Second, who: "B", op: opAcquire, status: 200},
			{at: 25500 * time.Millisecond, op: "get", status: 200, locked: true},
			{at: 25500 * time.Millisecond, who: "B", op: opRenew, status: 200},
		}},
		{name: "release in the delay window leaves a stale timer that clears the next lock", ttl: "10s", delay: "10s", actions: []lockAction{
			{at: 21100 * time.Millisecond, who: "A", op: "put", status: 200},
			{at: 21200 * time.Millisecond, who: "A", op: opRelease, status: 200},
			{at: 22 * time.Second, who: "B", op: opAcquire, status: 200},
			{at: 30*time.Second - time.Nanosecond, op: "get", status: 200, locked: true},
			{at: 30 * time.Second, op: "get", status: 200, locked: false},
			{at: 31 * time.Second, who: "B", op: opRenew, status: 409, text: "variable doesn't hold a lock"},
			{at: 31 * time.Second, who: "C", op: opAcquire, status: 200},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newPipeFixture(t, Options{})
				start := time.Now()
				ids := map[string]string{}
				acquireBody := func(who string) string {
					return `{"Path":"locks/t","Lock":{"ID":"` + ids[who] + `","TTL":"` + tc.ttl + `","LockDelay":"` + tc.delay + `"}}`
				}
				resp, body := f.do(t, http.MethodPut, "/v1/var/locks/t?lock-acquire", []byte(acquireBody("A")), nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("first acquire: %d %s", resp.StatusCode, body)
				}
				ids["A"] = lockID(t, body)
				actions := slices.Clone(tc.actions)
				slices.SortStableFunc(actions, func(a, b lockAction) int { return int(a.at - b.at) })
				for _, a := range actions {
					time.Sleep(time.Until(start.Add(a.at)))
					synctest.Wait()
					var resp *http.Response
					var body []byte
					switch a.op {
					case "get":
						resp, body = f.do(t, http.MethodGet, "/v1/var/locks/t", nil, nil)
					case "put":
						resp, body = f.do(t, http.MethodPut, "/v1/var/locks/t", []byte(`{"Items":{"k":"v"},"Lock":{"ID":"`+ids[a.who]+`"}}`), nil)
					default:
						resp, body = f.do(t, http.MethodPut, "/v1/var/locks/t?"+a.op, []byte(acquireBody(a.who)), nil)
					}
					if resp.StatusCode != a.status || a.text != "" && string(body) != a.text {
						t.Fatalf("%s %s at %v: %d %s, want %d %s", a.who, a.op, a.at, resp.StatusCode, body, a.status, a.text)
					}
					if a.op == opAcquire && a.status == http.StatusOK {
						ids[a.who] = lockID(t, body)
					}
					if a.op == "get" && (lockID(t, body) != "") != a.locked {
						t.Fatalf("get at %v: %s, want locked %v", a.at, body, a.locked)
					}
				}
			})
		})
	}
}

func lockID(t *testing.T, body []byte) string {
	t.Helper()
	var v struct{ Lock *struct{ ID string } }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if v.Lock == nil {
		return ""
	}
	return v.Lock.ID
}

// TestLockExpiryIsAWrite: the removal at the end of the delay bumps
// ModifyIndex, keeps the Items, wakes a blocking read and publishes a
// Variable event (more/ 1.5, 233).
func TestLockExpiryIsAWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		resp, body := f.do(t, http.MethodPut, "/v1/var/locks/w?lock-acquire", []byte(`{"Items":{"holder":"a"},"Lock":{"TTL":"10s","LockDelay":"1s"}}`), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("acquire: %d %s", resp.StatusCode, body)
		}
		var acquired variable
		_ = json.Unmarshal(body, &acquired)
		start := time.Now()

		events := make(chan []byte, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, f.base+"/v1/event/stream?topic=Variable&index="+jsonNum(acquired.ModifyIndex+1), nil)
			resp, err := f.http.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 4096)
			var got []byte
			for !strings.Contains(string(got), `"Lock":null`) {
				n, err := resp.Body.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			events <- got
		}()

		resp, body = f.do(t, http.MethodGet, "/v1/var/locks/w?index="+jsonNum(acquired.ModifyIndex), nil, nil)
		if elapsed := time.Since(start); elapsed != 21*time.Second {
			t.Errorf("blocking read returned after %v, want 21s (2 x TTL + delay)", elapsed)
		}
		var v variable
		_ = json.Unmarshal(body, &v)
		if v.Lock != nil || v.ModifyIndex <= acquired.ModifyIndex || v.Items["holder"] != "a" || v.ModifyTime != acquired.ModifyTime {
			t.Errorf("after expiry: %s", body)
		}
		if got := <-events; !strings.Contains(string(got), `"Lock":null`) || !strings.Contains(string(got), `"Deleted":false`) {
			t.Errorf("event: %s", got)
		}
		f.srv.CutEventStreams()
	})
}

func jsonNum(n uint64) string { return string(mustJSON(n)) }

// TestLockValidation covers requests the session replay has no recording
// of (more/ 2.2, 2.4).
func TestLockValidation(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	cases := []struct {
		name, method, target, body string
		status                     int
		text                       string
	}{
		{"acquire with empty value form", http.MethodPut, "/v1/var/locks/eq?lock-acquire=", `{}`, 200, ""},
		{"release with = form", http.MethodPut, "/v1/var/locks/eq?lock-release=", `{"Lock":{"ID":"x"}}`, 409, ""},
		{"renew without lock", http.MethodPut, "/v1/var/locks/eq?lock-renew", `{}`, 400, "RPC Error:: 400,missing lock information"},
		{"acquire on an invalid path", http.MethodPut, "/v1/var/locks/a.b?lock-acquire", `{}`, 400, `RPC Error:: 400,invalid path "locks/a.b"`},
		{"renew with cas is refused before anything", http.MethodPut, "/v1/var/locks/eq?lock-renew&cas=3", `{}`, 400, "CAS can't be used with lock operations"},
		{"get ignores lock parameters", http.MethodGet, "/v1/var/locks/eq?lock-acquire", ``, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.method, tc.target, []byte(tc.body), nil)
			if resp.StatusCode != tc.status || tc.text != "" && string(body) != tc.text {
				t.Errorf("%d %.200s, want %d %s", resp.StatusCode, body, tc.status, tc.text)
			}
		})
	}
}

// TestLockAPIClient drives the locks through the real api client:
// Locks().Acquire, Renew and Release, a contender's ErrLockConflict over
// gzip (more/ 242), and two LockLeasers taking turns.
func TestLockAPIClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		v := api.Variable{Path: "locks/api", Lock: &api.VariableLock{TTL: "10s", LockDelay: "5s"}}
		holder, err := f.api.Locks(api.WriteOptions{}, v)
		if err != nil {
			t.Fatal(err)
		}
		contender, err := f.api.Locks(api.WriteOptions{}, v)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		if p, err := holder.Acquire(ctx); err != nil || p != "locks/api" {
			t.Fatalf("acquire: %q %v", p, err)
		}
		if _, err := contender.Acquire(ctx); !errors.Is(err, api.ErrLockConflict) {
			t.Fatalf("contender acquire: %v, want ErrLockConflict", err)
		}
		time.Sleep(15 * time.Second)
		if err := holder.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
		time.Sleep(15 * time.Second)
		if _, err := contender.Acquire(ctx); !errors.Is(err, api.ErrLockConflict) {
			t.Fatalf("contender acquire after the renewal: %v, want ErrLockConflict", err)
		}
		if err := holder.Release(ctx); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := contender.Acquire(ctx); err != nil {
			t.Fatalf("contender acquire after release: %v", err)
		}
		if err := contender.Release(ctx); err != nil {
			t.Fatalf("contender release: %v", err)
		}

		// Two leasers: the first runs its function while the second
		// waits, then the second gets the lock the first released.
		var mu sync.Mutex
		var order []string
		note := func(s string) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, s)
		}
		// A function whose lease is lost sees its context cancelled and
		// fails its leaser's Start.
		run := func(name string, hold time.Duration) func(context.Context) error {
			return func(ctx context.Context) error {
				note(name + " start")
				select {
				case <-time.After(hold):
				case <-ctx.Done():
					return ctx.Err()
				}
				note(name + " end")
				return nil
			}
		}
		la, _ := f.api.Locks(api.WriteOptions{}, api.Variable{Path: "locks/leaser", Lock: &api.VariableLock{TTL: "10s", LockDelay: "5s"}})
		lb, _ := f.api.Locks(api.WriteOptions{}, api.Variable{Path: "locks/leaser", Lock: &api.VariableLock{TTL: "10s", LockDelay: "5s"}})
		done := make(chan error, 2)
		go func() { done <- f.api.NewLockLeaser(la).Start(ctx, run("a", 30*time.Second)) }()
		synctest.Wait()
		time.Sleep(time.Second) // past the leaser's random delay of up to 99ms
		go func() { done <- f.api.NewLockLeaser(lb).Start(ctx, run("b", time.Second)) }()
		for range 2 {
			if err := <-done; err != nil {
				t.Fatalf("leaser: %v", err)
			}
		}
		// Held for 30s with a TTL of 10s, a's lock lived on renewals.
		if want := []string{"a start", "a end", "b start", "b end"}; !slices.Equal(order, want) {
			t.Errorf("order %q, want %q", order, want)
		}
	})
}
