//go:build realnomad

package nomad

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// controller is one run of the controller process, on its own data dir,
// serving its API on the unix socket there.
type controller struct {
	s       *suite
	dataDir string
	sock    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	hc      *http.Client
}

// startController starts the controller on dataDir against NOMAD_ADDR and
// waits until it is ready: its initial list of Nomad jobs done.
func (s *suite) startController(dataDir string, args ...string) *controller {
	t := s.t
	t.Helper()
	c := &controller{
		s:       s,
		dataDir: dataDir,
		sock:    filepath.Join(dataDir, "controller.sock"),
		logPath: dataDir + ".log",
		exited:  make(chan struct{}),
	}
	c.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.sock)
		},
	}}
	log, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	fmt.Fprintf(log, "=== test: start at %s\n", time.Now().Format(time.RFC3339Nano))
	args = append([]string{"-data-dir", dataDir, "-allowed-drivers", s.driver, "-log-level", "info"}, args...)
	c.cmd = exec.Command(filepath.Join(binDir, "controller"), args...)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("controller log (%s), last lines:\n%s", c.logPath, tail(c.logPath, 40))
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := c.hc.Get("http://controller/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		select {
		case <-c.exited:
			t.Fatalf("the controller exited before it was ready:\n%s", tail(c.logPath, 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller was not ready within a minute (last: %v):\n%s", err, tail(c.logPath, 40))
		}
	}
}

// stop ends the controller with SIGTERM, as an operator would, and kills
// it if it has not stopped within 20 seconds.
func (c *controller) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		c.s.t.Error("the controller did not stop within 20s of SIGTERM")
	}
}

// kill9 SIGKILLs the controller and waits until it is gone.
func (c *controller) kill9() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// akctl runs akctl against the controller and returns its combined output
// and exit code.
func (c *controller) akctl(args ...string) (string, int) {
	t := c.s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "akctl"), append([]string{"--addr", "unix://" + c.sock}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("akctl %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

func (c *controller) mustAkctl(args ...string) string {
	c.s.t.Helper()
	out, code := c.akctl(args...)
	if code != 0 {
		c.s.t.Fatalf("akctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// sandbox is what `akctl get NAME -o json` shows of a sandbox.
type sandbox struct {
	Name       string
	Generation uint64
	Hash       string
	Status     struct {
		Phase              string
		ObservedGeneration uint64
		JobID              string
		JobVersion         *uint64
		AllocJobVersion    uint64
		AllocID            string
		Conditions         []struct{ Type, Status, Reason, Message string }
	}
}

func (sb *sandbox) condition(typ string) string {
	for _, c := range sb.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// ready is what `akctl wait --for=ready` waits for.
func (sb *sandbox) ready() bool {
	return sb.Status.ObservedGeneration == sb.Generation && sb.condition("Ready") == "True"
}

// sandbox reads one sandbox through akctl.
func (c *controller) sandbox(name string) *sandbox {
	c.s.t.Helper()
	out := c.mustAkctl("get", name, "-n", c.s.ns, "-o", "json")
	var sb sandbox
	if err := json.Unmarshal([]byte(out), &sb); err != nil {
		c.s.t.Fatalf("akctl get %s -o json: %v\n%s", name, err, out)
	}
	return &sb
}

// metrics reads the controller's /metrics.
func (c *controller) metrics() map[string]float64 {
	t := c.s.t
	t.Helper()
	resp, err := c.hc.Get("http://controller/metrics")
	if err != nil {
		t.Fatalf("read the controller's metrics: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the controller's metrics: %v", err)
	}
	// Each series by name and labels, for the few this suite reads.
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// sum adds up every series of a metric.
func sum(ms map[string]float64, name string) float64 {
	var n float64
	for k, v := range ms {
		if strings.HasPrefix(k, name+"{") {
			n += v
		}
	}
	return n
}

// reconciles is how many reconciles the controller has finished.
func (c *controller) reconciles() float64 {
	return sum(c.metrics(), "controller_runtime_reconcile_total")
}

// requests are the controller's own Nomad requests, from
// agentkernel_nomad_requests_total, by "METHOD endpoint code".
type requests map[string]float64

func (c *controller) requests() requests {
	c.s.t.Helper()
	out := requests{}
	for k, v := range c.metrics() {
		rest, ok := strings.CutPrefix(k, "agentkernel_nomad_requests_total{")
		if !ok {
			continue
		}
		var code, endpoint, method string
		for _, l := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
			name, value, _ := strings.Cut(l, "=")
			switch name {
			case "code":
				code = value
			case "endpoint":
				endpoint = value
			case "method":
				method = value
			}
		}
		out[method+" "+endpoint+" "+code] = v
	}
	return out
}

// since is what was requested between before and r.
func (r requests) since(before requests) requests {
	out := requests{}
	for k, v := range r {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (r requests) total() float64 {
	var n float64
	for _, v := range r {
		n += v
	}
	return n
}

// writes are the requests that change something in Nomad.
func (r requests) writes() float64 {
	var n float64
	for k, v := range r {
		if !strings.HasPrefix(k, "GET ") {
			n += v
		}
	}
	return n
}

func (r requests) String() string {
	if len(r) == 0 {
		return "none"
	}
	var b bytes.Buffer
	for i, k := range slices.Sorted(maps.Keys(r)) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %g", k, r[k])
	}
	return b.String()
}

// quiet is how long the controller's request counts must stand still to
// be read as settled.
const quiet = time.Second

// settled returns the controller's request counts once they have not
// moved for a second: what it does about a change is over.
func (c *controller) settled() requests {
	t := c.s.t
	t.Helper()
	last, since := c.requests(), time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
		now := c.requests()
		if now.since(last).total() != 0 {
			last, since = now, time.Now()
		}
		if time.Since(since) >= quiet {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller kept requesting from Nomad for 2 minutes: %v", now.since(last))
		}
	}
}

// storeID is the controller's store ID: the owner its jobs carry.
func (c *controller) storeID() string {
	t := c.s.t
	t.Helper()
	resp, err := c.hc.Get("http://controller/v1/version")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ StoreID, DefaultNamespace string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.DefaultNamespace != c.s.ns {
		t.Fatalf("the controller's default namespace is %q, the tests' client's %q: give both the same NOMAD_NAMESPACE", v.DefaultNamespace, c.s.ns)
	}
	return v.StoreID
}
