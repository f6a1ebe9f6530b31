// Package metrics exports kmd's state in the Prometheus formats for
// GET /metrics: per domain the MK's age, the entries under each MK, the
// rekey state and progress, consecutive failures and the next retry, per
// scope the key rotation and the next scheduled rekey — all read from the
// registry at each scrape — and counters and a histogram of the rekeys that
// ended, fed by the rekey engines as they end. The Go runtime's and the
// process's standard metrics come with them.
//
// Labels carry scopes, domains, states, results and MK IDs: never key
// material, entry names or values.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/rekey"
)

// Label names.
const (
	labelScope  = "scope"
	labelDomain = "domain"
	labelKeyID  = "key_id"
	labelState  = "state"
	labelResult = "result"
)

// Results of kmd_rekeys_total.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
)

// States are the values of kmd_rekey_state's state label: exactly one is 1
// for each domain. A status not listed here is exported as 1 all the same.
var States = []string{domains.StatusActive, domains.StatusInProgress, domains.StatusFailed, domains.StatusMigrating, domains.StatusStaged}

// DurationBuckets are kmd_rekey_duration_seconds's buckets: 0.1 s to 1 h.
var DurationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// maxScrapes bounds the scrapes served at once; more are answered 503.
const maxScrapes = 4

// scrapeTimeout bounds the registry reads of one scrape.
const scrapeTimeout = 10 * time.Second

// Source is what the collector reads at each scrape; *domains.Registry
// implements it.
type Source interface {
	// Status returns every domain of scope (domains.Scopes).
	Status(ctx context.Context, scope string) ([]domains.Status, error)
	// KeyEntries returns the entries under each MK of domain; it fails
	// for a domain that could not be opened.
	KeyEntries(ctx context.Context, domain string) (map[string]int64, error)
	// Schedule returns scope's rotation schedule.
	Schedule(scope string) (rekey.ScopeSchedule, error)
	// Now is the clock that key creation dates are measured on.
	Now() time.Time
}

var _ Source = (*domains.Registry)(nil)

// Handler serves the metrics of src and rk, and the Go runtime's and the
// process's, in the Prometheus exposition formats. Errors of a scrape are
// logged to lg.
func Handler(src Source, rk *Rekeys, lg *zap.Logger) http.Handler {
	return promhttp.HandlerFor(NewRegistry(src, rk), promhttp.HandlerOpts{
		ErrorLog:            zap.NewStdLog(lg.Named("metrics")),
		MaxRequestsInFlight: maxScrapes,
	})
}

// NewRegistry returns a Prometheus registry holding src's collector, rk
// and the Go runtime's and the process's collectors.
func NewRegistry(src Source, rk *Rekeys) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		rk,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// domainScopes lists every domain with its scope.
func domainScopes() [][2]string {
	var out [][2]string
	for _, scope := range domains.Scopes {
		names, _ := domains.ScopeDomains(scope)
		for _, d := range names {
			out = append(out, [2]string{scope, d})
		}
	}
	return out
}

// Rekeys counts the rekeys that end, per domain: by result, their
// duration, and the entries they re-encrypted. Its Observe is the
// registry's OnRekeyEnd. It is a prometheus.Collector.
type Rekeys struct {
	total       *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	reencrypted *prometheus.CounterVec
}

var _ prometheus.Collector = (*Rekeys)(nil)

// NewRekeys returns counters at 0 for every domain, so that rates and
// increases hold from the first scrape on.
func NewRekeys() *Rekeys {
	r := &Rekeys{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmd_rekeys_total",
			Help: "Rekey runs (migrations included) that ended, by result: succeeded (the rekey completed) or failed (it will be retried).",
		}, []string{labelScope, labelDomain, labelResult}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmd_rekey_duration_seconds",
			Help:    "Duration of completed rekeys, from their start to their end, failed runs and their retries included.",
			Buckets: DurationBuckets,
		}, []string{labelScope, labelDomain}),
		reencrypted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmd_entries_reencrypted_total",
			Help: "Entries re-encrypted under a new master key by rekeys, counted as their runs end.",
		}, []string{labelScope, labelDomain}),
	}
	for _, sd := range domainScopes() {
		r.total.WithLabelValues(sd[0], sd[1], ResultSucceeded)
		r.total.WithLabelValues(sd[0], sd[1], ResultFailed)
		r.duration.WithLabelValues(sd[0], sd[1])
		r.reencrypted.WithLabelValues(sd[0], sd[1])
	}
	return r
}

// Observe counts a rekey run that ended.
func (r *Rekeys) Observe(e rekey.End) {
	scope := e.Scope
	if scope == "" {
		scope = logs.ScopeCluster
	}
	if e.Rewrapped > 0 {
		r.reencrypted.WithLabelValues(scope, e.Domain).Add(float64(e.Rewrapped))
	}
	if e.Err != nil {
		r.total.WithLabelValues(scope, e.Domain, ResultFailed).Inc()
		return
	}
	r.total.WithLabelValues(scope, e.Domain, ResultSucceeded).Inc()
	r.duration.WithLabelValues(scope, e.Domain).Observe(e.Elapsed.Seconds())
}

// Describe implements prometheus.Collector.
func (r *Rekeys) Describe(ch chan<- *prometheus.Desc) {
	r.total.Describe(ch)
	r.duration.Describe(ch)
	r.reencrypted.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Rekeys) Collect(ch chan<- prometheus.Metric) {
	r.total.Collect(ch)
	r.duration.Collect(ch)
	r.reencrypted.Collect(ch)
}
