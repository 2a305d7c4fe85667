package reconcile

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// controllerName labels the controller-runtime metrics, whose names are
// kept so that existing dashboards and alerts apply.
const controllerName = "sandbox"

// Metrics are the controller's Prometheus metrics. A nil *Metrics records
// nothing, so tests can leave it out.
type Metrics struct {
	reconcileTotal  *prometheus.CounterVec
	reconcileErrors *prometheus.CounterVec
	reconcileTime   *prometheus.HistogramVec
	depth           *prometheus.GaugeVec
	adds            *prometheus.CounterVec
	retries         *prometheus.CounterVec
	queueDuration   *prometheus.HistogramVec
	workDuration    *prometheus.HistogramVec
	nomadRequests   *prometheus.CounterVec
	nomadDuration   *prometheus.HistogramVec
	driftRepairs    *prometheus.CounterVec
	gcRefusals      prometheus.Counter

	poolSandboxes *prometheus.GaugeVec

	mu     sync.Mutex
	phases map[string]store.Phase // sandbox key -> last phase written
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reconcileTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_runtime_reconcile_total", Help: "Reconciliations by result (success, error, requeue_after).",
		}, []string{"controller", "result"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_runtime_reconcile_errors_total", Help: "Reconciliations that returned an error.",
		}, []string{"controller"}),
		reconcileTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "controller_runtime_reconcile_time_seconds", Help: "Time per reconciliation.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"controller"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_depth", Help: "Keys ready for a worker.",
		}, []string{"name"}),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workqueue_adds_total", Help: "Keys added to the work queue.",
		}, []string{"name"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workqueue_retries_total", Help: "Keys re-added with backoff after a failure.",
		}, []string{"name"}),
		queueDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "workqueue_queue_duration_seconds", Help: "Time a key waited ready before a worker took it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"name"}),
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "workqueue_work_duration_seconds", Help: "Time a worker spent on a key.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"name"}),
		nomadRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkernel_nomad_requests_total", Help: "HTTP requests to Nomad by method, endpoint and status code (0: no response).",
		}, []string{"method", "endpoint", "code"}),
		nomadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "agentkernel_nomad_request_duration_seconds", Help: "Duration of requests to Nomad (blocking queries and the event stream included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}, []string{"method", "endpoint"}),
		driftRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkernel_drift_repairs_total", Help: "Nomad jobs written again to undo a change made outside this controller (edited, stopped, started or purged out of band), by reason. Registering a new generation of a sandbox is not counted.",
		}, []string{"reason"}),
		gcRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentkernel_gc_refused_total", Help: "Starts (with -ha, terms) at which garbage collection was held: the store declared nothing, or was behind, while Nomad ran owned jobs.",
		}),
		poolSandboxes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentkernel_pool_sandboxes", Help: "A pool's live sandboxes by state: ready (unclaimed, Ready), pending (unclaimed, on their way), claimed.",
		}, []string{"namespace", "pool", "state"}),
		phases: map[string]store.Phase{},
	}
	// Series that exist from the start read 0 rather than missing, so
	// rate() and alerts work before the first error or repair.
	for _, result := range []string{"success", "error", "requeue_after"} {
		m.reconcileTotal.WithLabelValues(controllerName, result)
	}
	m.reconcileErrors.WithLabelValues(controllerName)
	m.retries.WithLabelValues(controllerName)
	m.adds.WithLabelValues(controllerName)
	m.depth.WithLabelValues(controllerName)
	for _, r := range nomad.DriftReasons {
		m.driftRepairs.WithLabelValues(r)
	}
	reg.MustRegister(m.reconcileTotal, m.reconcileErrors, m.reconcileTime, m.depth, m.adds, m.retries,
		m.queueDuration, m.workDuration, m.nomadRequests, m.nomadDuration, m.driftRepairs, m.gcRefusals, phaseCollector{m}, m.poolSandboxes)
	return m
}

// Queue returns the work queue's measurements hook.
func (m *Metrics) Queue() QueueMetrics {
	if m == nil {
		return NopQueueMetrics{}
	}
	return queueMetrics{m}
}

type queueMetrics struct{ m *Metrics }

func (q queueMetrics) Depth(n int) { q.m.depth.WithLabelValues(controllerName).Set(float64(n)) }
func (q queueMetrics) Added()      { q.m.adds.WithLabelValues(controllerName).Inc() }
func (q queueMetrics) Retried()    { q.m.retries.WithLabelValues(controllerName).Inc() }
func (q queueMetrics) QueueLatency(d time.Duration) {
	q.m.queueDuration.WithLabelValues(controllerName).Observe(d.Seconds())
}
func (q queueMetrics) WorkDuration(d time.Duration) {
	q.m.workDuration.WithLabelValues(controllerName).Observe(d.Seconds())
}
func (m *Metrics) observeReconcile(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.reconcileTotal.WithLabelValues(controllerName, result).Inc()
	if result == "error" {
		m.reconcileErrors.WithLabelValues(controllerName).Inc()
	}
	m.reconcileTime.WithLabelValues(controllerName).Observe(d.Seconds())
}

// NomadRequest is the nomad.Config.OnRequest hook.
func (m *Metrics) NomadRequest(method, endpoint string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.nomadRequests.WithLabelValues(method, endpoint, strconv.Itoa(code)).Inc()
	m.nomadDuration.WithLabelValues(method, endpoint).Observe(d.Seconds())
}

func (m *Metrics) gcRefused() {
	if m == nil {
		return
	}
	m.gcRefusals.Inc()
}

func (m *Metrics) driftRepaired(reasons []string) {
	if m == nil {
		return
	}
	for _, r := range reasons {
		m.driftRepairs.WithLabelValues(r).Inc()
	}
}

// setPhase remembers a sandbox's phase for the sandboxes-by-phase gauge;
// an empty phase forgets the sandbox.
func (m *Metrics) setPhase(key string, p store.Phase) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == "" {
		delete(m.phases, key)
	} else {
		m.phases[key] = p
	}
}

// phaseCollector reports agentkernel_sandboxes{phase} from the phases the
// reconciler last wrote, without reading the store at scrape time.
type phaseCollector struct{ m *Metrics }

var phaseDesc = prometheus.NewDesc("agentkernel_sandboxes", "Sandboxes by the phase last written to their status.", []string{"phase"}, nil)

func (c phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- phaseDesc }

func (c phaseCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[store.Phase]int{}
	for _, p := range []store.Phase{store.PhasePending, store.PhaseRunning, store.PhaseFailed, store.PhaseStopped, store.PhaseExpired, store.PhaseConflict, store.PhaseDeleting} {
		counts[p] = 0
	}
	c.m.mu.Lock()
	for _, p := range c.m.phases {
		counts[p]++
	}
	c.m.mu.Unlock()
	for p, n := range counts {
		ch <- prometheus.MustNewConstMetric(phaseDesc, prometheus.GaugeValue, float64(n), string(p))
	}
}

// setPool sets a pool's gauges; a pool not found removes them.
func (m *Metrics) setPool(key string, ps store.PoolState) {
	if m == nil {
		return
	}
	ns, name, _ := strings.Cut(key, "/")
	if !ps.Found || ps.Finalized {
		for _, state := range []string{"ready", "pending", "claimed"} {
			m.poolSandboxes.DeleteLabelValues(ns, name, state)
		}
		return
	}
	m.poolSandboxes.WithLabelValues(ns, name, "ready").Set(float64(ps.Ready))
	m.poolSandboxes.WithLabelValues(ns, name, "pending").Set(float64(ps.Pending))
	m.poolSandboxes.WithLabelValues(ns, name, "claimed").Set(float64(ps.Claimed))
}
