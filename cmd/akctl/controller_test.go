package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/ctltest"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// storeEpoch is the store's clock in tests, and akctl's clock is five
// minutes later, so that every AGE in a golden reads 5m and every
// timestamp is this one. It lies in the future: the reconciler measures
// TTLs from it with the real clock, and must not find them expired.
var (
	storeEpoch = time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC)
	akctlNow   = storeEpoch.Add(5 * time.Minute)
)

// ctlOptions shape the controller a case runs against.
type ctlOptions struct {
	// token protects the API.
	token string
	// allowRawExec lets the policy accept raw_exec sandboxes.
	allowRawExec bool
	// unix serves the API on a unix socket: $ADDR is unix:///path.
	unix bool
	// drivers overrides the drivers the Nomad node has (default docker,
	// exec and raw_exec); a sandbox needing another one stays Pending.
	drivers []string
	// foreignJob is the ID of a job registered in Nomad beforehand without
	// the controller's ownership: the sandbox it belongs to is a Conflict.
	foreignJob string
	// noWatch makes GET /v1/watch fail, as behind a proxy that does not
	// stream.
	noWatch bool
	// canned, when set, replaces the controller with a server that
	// answers every request with this status and body.
	canned *cannedAnswer
	// follower makes $ADDR instance "b", a follower of leader "a", whose
	// address is $LEADER. The leader is a second API server over the same
	// store, as replication would make it: answers differ only in who
	// gives them. The follower last synced three seconds before akctl's
	// clock, at index 42.
	follower bool
	// inside limits exec, files and logs (the defaults when zero).
	inside sandboxio.Options
}

// testCluster is what the election tells an instance.
type testCluster struct {
	self   string
	mu     sync.Mutex
	leader api.Leader
	fresh  api.Freshness
}

func (c *testCluster) Self() string { return c.self }

func (c *testCluster) Leader() api.Leader {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *testCluster) Freshness() api.Freshness { return c.fresh }

type cannedAnswer struct {
	status int
	body   string
	// hang answers nothing until the client gives up.
	hang bool
}

// testController is a whole controller in-process: store, Nomad test
// server, reconciler loop and API.
type testController struct {
	addr  string
	store *store.Store
	// leaderAddr is the leader's address when the controller is a follower.
	leaderAddr string
	// nomad is a client of the controller's Nomad test server.
	nomad *nomad.Client
}

func startController(t *testing.T, o ctlOptions) *testController {
	t.Helper()
	if o.canned != nil {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if o.canned.hang {
				<-r.Context().Done()
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(o.canned.status)
			_, _ = w.Write([]byte(o.canned.body))
		}))
		t.Cleanup(hs.Close)
		return &testController{addr: hs.URL}
	}

	st, err := store.Open(t.TempDir(), store.Options{NoSync: true, Now: func() time.Time { return storeEpoch }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// The loop's Nomad test server runs in instant mode: the golden
	// outputs hold the store's revision, which counts the controller's
	// status writes; with a real agent's timing their number depends on
	// where each reconcile falls between the allocation's reports, on a
	// real clock. The CLI's output is what is tested here, not the
	// controller against placement timing.
	loop := ctltest.Start(t, st, ctltest.Options{AllowRawExec: o.allowRawExec, Drivers: o.drivers})
	nc, rcfg, ctrl := loop.Nomad, loop.Policy, loop.Controller
	if o.foreignJob != "" {
		job := nomadapi.NewServiceJob(o.foreignJob, o.foreignJob, "global", 50)
		job.AddTaskGroup(nomadapi.NewTaskGroup("main", 1).AddTask(nomadapi.NewTask("main", "exec").
			SetConfig("command", "/bin/sleep").SetConfig("args", []string{"infinity"})))
		if _, _, err := nc.API().Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
	}
	apiOpts := api.Options{
		Store:      st,
		Policy:     rcfg,
		Planner:    nomad.Planner{Client: nc, Render: rcfg.Render},
		Token:      o.token,
		Version:    "test",
		Controller: loopAPI{ctrl},
		Inside:     newInside(nc, o.inside),
	}
	leaderAddr := ""
	if o.follower {
		lc := &testCluster{self: "a"}
		lo := apiOpts
		lo.Cluster = lc
		leader := api.NewServer(lo)
		ls := httptest.NewServer(leader)
		leaderAddr = ls.URL
		lc.mu.Lock()
		lc.leader = api.Leader{ID: "a", Address: ls.URL, Self: true}
		lc.mu.Unlock()
		t.Cleanup(func() {
			leader.Close()
			ls.Close()
		})
		apiOpts.Cluster = &testCluster{self: "b", leader: api.Leader{ID: "a", Address: ls.URL},
			fresh: api.Freshness{SyncedAt: akctlNow.Add(-3 * time.Second), Index: 42}}
	}
	h := api.NewServer(apiOpts)
	var handler http.Handler = h
	if o.noWatch {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/watch" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadGateway)
				_, _ = w.Write([]byte(`{"error":{"code":"internal","message":"Streaming is not supported here."}}`))
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	hs := httptest.NewUnstartedServer(handler)
	addr := ""
	if o.unix {
		// Socket paths are short-lived and must stay under ~100 bytes.
		dir, err := os.MkdirTemp("", "akctl")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		sock := filepath.Join(dir, "c.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		hs.Listener.Close()
		hs.Listener = ln
		addr = "unix://" + sock
	}
	hs.Start()
	if addr == "" {
		addr = hs.URL
	}
	t.Cleanup(func() {
		h.Close() // ends watch streams, which hs.Close would wait for
		hs.Close()
	})
	return &testController{addr: addr, store: st, leaderAddr: leaderAddr, nomad: nc}
}

func newInside(nc *nomad.Client, o sandboxio.Options) *sandboxio.Service {
	o.Nomad = nc
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return sandboxio.New(o)
}

// loopAPI gives the API the reconcile loop, as cmd/controller does.
type loopAPI struct{ c *reconcile.Controller }

func (l loopAPI) GC() api.GCStatus {
	st := l.c.GCState()
	return api.GCStatus{Enabled: st.Enabled, Reason: st.Reason, Hold: st.Hold}
}

func (l loopAPI) ConfirmGC(ctx context.Context) (api.GCStatus, error) {
	if _, err := l.c.ConfirmGC(ctx); err != nil {
		return l.GC(), err
	}
	return l.GC(), nil
}

func (l loopAPI) Requeue(key string) { l.c.Requeue(key) }

var (
	// JSON keeps its validity: the placeholder is a string.
	jsonModifyIndexRE = regexp.MustCompile(`("jobModifyIndex": ?)[0-9]+`)
	yamlModifyIndexRE = regexp.MustCompile(`(?m)^(\s*jobModifyIndex: )[0-9]+$`)
	modifyIndexRE     = regexp.MustCompile(`(modify index )[0-9]+`)
	// The store revision a conflict reports moves with the reconciler's
	// status writes, which race with the test's own steps.
	foundRevisionRE = regexp.MustCompile(`(expected store revision [0-9]+, found )[0-9]+`)
)

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// normalize makes a run's output stable: the controller's address becomes
// $ADDR, its leader's $LEADER, a dead address $DEAD, the store ID <store-id>, allocation IDs
// (whole or cut to 8) <alloc>, allocated host ports <port>, and any
// other UUID <uuid>, and Nomad's job modify indexes <index> ("<index>"
// in JSON; they depend
// on the order in which the workers reconcile). Ages and times need no
// help: the clocks are fixed.
func (tc *testController) normalize(t *testing.T, s string, dead string) string {
	t.Helper()
	if dead != "" {
		s = strings.ReplaceAll(s, dead, "$DEAD")
	}
	if tc == nil {
		return s
	}
	addrs := []string{tc.addr, "$ADDR"}
	if tc.leaderAddr != "" {
		// The longer first: one address may start with the other.
		if len(tc.leaderAddr) > len(tc.addr) {
			addrs = []string{tc.leaderAddr, "$LEADER", tc.addr, "$ADDR"}
		} else {
			addrs = append(addrs, tc.leaderAddr, "$LEADER")
		}
	}
	s = strings.NewReplacer(addrs...).Replace(s)
	if tc.store == nil {
		return s
	}
	s = strings.ReplaceAll(s, tc.store.StoreID(), "<store-id>")
	recs, _, err := tc.store.List(context.Background(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if id := r.Status.AllocID; id != "" {
			s = strings.ReplaceAll(s, id, "<alloc>")
			s = strings.ReplaceAll(s, shortID(id), "<alloc>")
		}
		for _, p := range r.Status.Ports {
			s = strings.ReplaceAll(s, ":"+strconv.Itoa(p.Value), ":<port>")
		}
	}
	s = jsonModifyIndexRE.ReplaceAllString(s, `${1}"<index>"`)
	s = yamlModifyIndexRE.ReplaceAllString(s, "${1}<index>")
	s = modifyIndexRE.ReplaceAllString(s, "${1}<index>")
	s = foundRevisionRE.ReplaceAllString(s, "${1}<revision>")
	return uuidRE.ReplaceAllString(s, "<uuid>")
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	return addr
}
