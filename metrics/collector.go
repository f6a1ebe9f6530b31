package metrics

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmd-project/kmd/domains"
)

// The gauges read from the registry at each scrape.
var (
	domainLabels = []string{labelScope, labelDomain}

	descKeyAge = prometheus.NewDesc("kmd_master_key_age_seconds",
		"Age of the domain's current master key.", domainLabels, nil)
	descKeyCreated = prometheus.NewDesc("kmd_master_key_created_timestamp_seconds",
		"When the domain's current master key was created, in seconds since the epoch (second precision).", domainLabels, nil)
	descEntries = prometheus.NewDesc("kmd_entries",
		"Entries sealed under each master key of the domain; during a rekey, under the old and the new one.",
		[]string{labelScope, labelDomain, labelKeyID}, nil)
	descState = prometheus.NewDesc("kmd_rekey_state",
		"1 for the domain's current status (ACTIVE, IN_PROGRESS, FAILED, MIGRATING), 0 for the others.",
		[]string{labelScope, labelDomain, labelState}, nil)
	descProgressDone = prometheus.NewDesc("kmd_rekey_in_progress_entries_done",
		"Entries the pending rekey has re-encrypted so far; only while one is pending and not failed.", domainLabels, nil)
	descProgressPlanned = prometheus.NewDesc("kmd_rekey_in_progress_entries_planned",
		"Entries the pending rekey re-encrypts in all (the status API's rekey total); only while one is pending and not failed.", domainLabels, nil)
	descFailures = prometheus.NewDesc("kmd_rekey_consecutive_failures",
		"Runs of the domain's pending rekey that failed in a row; 0 once it completes.", domainLabels, nil)
	descNextRetry = prometheus.NewDesc("kmd_next_retry_timestamp_seconds",
		"When the domain's failed rekey (or the loading of its master key) is retried, in seconds since the epoch; only while one waits.", domainLabels, nil)

	descRotation = prometheus.NewDesc("kmd_key_rotation_seconds",
		"The scope's key rotation: the length of its current rotation period (calendar months and years vary); 0 for Never.",
		[]string{labelScope}, nil)
	descNextRekey = prometheus.NewDesc("kmd_next_rekey_timestamp_seconds",
		"When the scope's next scheduled rekey is due, in seconds since the epoch; absent when its rotation is Never.",
		[]string{labelScope}, nil)

	// descScrapeError reports a registry read that failed; it fails the scrape.
	descScrapeError = prometheus.NewDesc("kmd_scrape_error", "A registry read of the scrape failed.", nil, nil)
)

// Collector reads the registry's status and schedules at each scrape.
type Collector struct {
	src Source
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over src.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKeyAge, descKeyCreated, descEntries, descState, descProgressDone,
		descProgressPlanned, descFailures, descNextRetry, descRotation, descNextRekey} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	now := c.src.Now()
	for _, scope := range domains.Scopes {
		rows, err := c.src.Status(ctx, scope)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descScrapeError, err)
			return
		}
		for _, st := range rows {
			c.collectDomain(ctx, ch, now, st)
		}
		sched, err := c.src.Schedule(scope)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descScrapeError, err)
			return
		}
		rotation, next := 0.0, sched.Next()
		if !next.IsZero() {
			rotation = next.Sub(sched.RekeyTime).Seconds()
			ch <- gauge(descNextRekey, unixSeconds(next), scope)
		}
		ch <- gauge(descRotation, rotation, scope)
	}
}

func (c *Collector) collectDomain(ctx context.Context, ch chan<- prometheus.Metric, now time.Time, st domains.Status) {
	scope, domain := st.Scope, st.Domain
	if st.KeyID != "" && !st.KeyCreated.IsZero() {
		ch <- gauge(descKeyCreated, unixSeconds(st.KeyCreated), scope, domain)
		ch <- gauge(descKeyAge, now.Sub(st.KeyCreated).Seconds(), scope, domain)
	}
	// A domain that could not be opened has no counts: its FAILED state
	// and the status's error say why.
	if byKey, err := c.src.KeyEntries(ctx, domain); err == nil {
		for id, n := range byKey {
			ch <- gauge(descEntries, float64(n), scope, domain, id)
		}
	}
	for _, s := range States {
		ch <- gauge(descState, boolFloat(st.Status == s), scope, domain, s)
	}
	if st.Status != "" && !slices.Contains(States, st.Status) {
		ch <- gauge(descState, 1, scope, domain, st.Status)
	}
	if st.Rekey != nil {
		ch <- gauge(descProgressDone, float64(st.Rekey.Done), scope, domain)
		ch <- gauge(descProgressPlanned, float64(st.Rekey.Total), scope, domain)
	}
	ch <- gauge(descFailures, float64(st.Failures), scope, domain)
	if st.NextRetry != nil {
		ch <- gauge(descNextRetry, unixSeconds(*st.NextRetry), scope, domain)
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
