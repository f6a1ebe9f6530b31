package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/kmd-project/kmd/api"
)

// operation is what a started run is called in what kmctl prints: a rekey,
// or a migration (a rekey whose new MK is made at the target).
type operation struct {
	verb    string // rekey, migrate: "refusing to rekey without confirmation"
	noun    string // rekey, migration: "rekey of S3 failed"
	title   string // Rekey, Migration: "Rekey started: S3"
	ongoing string // Rekeying, Migrating: the --wait progress line
	prompt  string // the confirmation question, asked without --yes
	ended   string // what --wait says at the end: completed (default), staged
}

var (
	opRekey       = operation{verb: "rekey", noun: "rekey", title: "Rekey", ongoing: "Rekeying", prompt: confirmPrompt}
	opStagedRekey = operation{verb: "rekey", noun: "rekey", title: "Rekey", ongoing: "Rekeying", prompt: confirmPrompt, ended: "staged"}
	opMigration   = operation{verb: "migrate", noun: "migration", title: "Migration", ongoing: "Migrating", prompt: migratePrompt}
	opContinue    = operation{verb: "continue", noun: "continue", title: "Continue", ongoing: "Continuing"}
	opCancel      = operation{verb: "cancel", noun: "cancel", title: "Cancel", ongoing: "Cancelling"}
)

// rekeyState is one started domain as the wait loop sees it.
type rekeyState struct {
	name        string // S3, or SED (with its node when there are several)
	status      string
	err         string
	done, total int64
}

// running reports whether the state is a rekey still going on.
func (s rekeyState) running() bool {
	return s.status == api.StatusInProgress || s.status == api.StatusMigrating
}

// progressOf gives a row's progress: its rekey's while one runs, else all
// of its entries (done) or none (a rekey not counting yet).
func progressOf(status string, entries int64, p *api.Progress) (done, total int64) {
	switch {
	case p != nil:
		return p.Done, p.Total
	case rekeyState{status: status}.running():
		return 0, entries
	}
	return entries, entries
}

// clusterStates picks the started domains out of a cluster status.
func clusterStates(st api.ClusterStatus, started []string) []rekeyState {
	var out []rekeyState
	for _, d := range st.Domains {
		if len(started) > 0 && !slices.Contains(started, d.Domain) {
			continue
		}
		done, total := progressOf(d.Status, d.Entries, d.Rekey)
		out = append(out, rekeyState{name: d.Domain, status: d.Status, err: d.Error, done: done, total: total})
	}
	return out
}

// sedStates turns a sed status into states, one per node.
func sedStates(st api.SEDStatus) []rekeyState {
	var out []rekeyState
	for _, n := range st.Nodes {
		name := "SED"
		if len(st.Nodes) > 1 {
			name = fmt.Sprintf("SED on node %d", n.Node)
		}
		done, total := progressOf(n.Status, n.Entries, n.Rekey)
		out = append(out, rekeyState{name: name, status: n.Status, err: n.Error, done: done, total: total})
	}
	return out
}

// summarize reports whether any state is still running and the summed
// progress.
func summarize(states []rekeyState) (running bool, done, total int64) {
	for _, s := range states {
		running = running || s.running()
		done += s.done
		total += s.total
	}
	return running, done, total
}

// rekeyFailures is nil, or one error line per FAILED state, the first first:
// "rekey of S3 failed: …" (or "migration of S3 failed: …").
func rekeyFailures(op operation, states []rekeyState) error {
	var errs []error
	for _, s := range states {
		if s.status != api.StatusFailed {
			continue
		}
		if s.err == "" {
			errs = append(errs, fmt.Errorf("%s of %s failed", op.noun, s.name))
		} else {
			errs = append(errs, fmt.Errorf("%s of %s failed: %s", op.noun, s.name, oneLine(s.err)))
		}
	}
	return errors.Join(errs...)
}

// rateMeter turns summed progress into entries per second since the first
// sample.
type rateMeter struct {
	start time.Time
	done0 int64
	began bool
}

// rate records a sample and returns the rate, or -1 while unknown.
func (m *rateMeter) rate(now time.Time, done int64) float64 {
	if !m.began {
		m.start, m.done0, m.began = now, done, true
		return -1
	}
	el := now.Sub(m.start).Seconds()
	if el <= 0 || done < m.done0 {
		return -1
	}
	return float64(done-m.done0) / el
}

// progressLine redraws one line in place with \r.
type progressLine struct {
	w    io.Writer
	last int // length of the line drawn last; 0: none
}

func (p *progressLine) draw(s string) {
	pad := ""
	if p.last > len(s) {
		pad = strings.Repeat(" ", p.last-len(s))
	}
	fmt.Fprintf(p.w, "\r%s%s", s, pad)
	p.last = max(len(s), 1)
}

// end finishes the drawn line, if any.
func (p *progressLine) end() {
	if p.last > 0 {
		fmt.Fprintln(p.w)
		p.last = 0
	}
}

// rekeyStates fetches the scope's status and returns the started domains'
// states.
func (a *app) rekeyStates(ctx context.Context, scope string, started []string) ([]rekeyState, error) {
	if scope == api.ScopeSED {
		st, err := a.api().SEDStatus(ctx)
		if err != nil {
			return nil, err
		}
		return sedStates(st), nil
	}
	st, err := a.api().ClusterStatus(ctx)
	if err != nil {
		return nil, err
	}
	return clusterStates(st, started), nil
}

// waitRekey polls the scope's status until none of the started domains is
// rekeying or migrating, drawing progress on a terminal. It returns the
// failures.
func (a *app) waitRekey(ctx context.Context, op operation, scope string, started []string) error {
	draw := !a.json() && a.stdoutTerminal()
	line := progressLine{w: a.stdout}
	defer line.end()
	var meter rateMeter
	for {
		states, err := a.rekeyStates(ctx, scope, started)
		if err == nil {
			running, done, total := summarize(states)
			if draw {
				line.draw(formatProgress(op.ongoing, len(states), done, total, meter.rate(a.now(), done)))
			}
			if !running {
				line.end()
				return rekeyFailures(op, states)
			}
		}
		if ctx.Err() == nil && err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			line.end()
			return &hintError{
				err:  fmt.Errorf("interrupted while waiting: %w", ctx.Err()),
				hint: "the " + op.noun + " goes on in kmd; follow it with kmctl " + scope + " status",
			}
		case <-time.After(a.pollInterval):
		}
	}
}
