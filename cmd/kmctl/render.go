package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kmd-project/kmd/api"
)

// Table layouts (SPEC: cluster status, sed status). Columns start where the
// SPEC samples start them. A value that would touch the next column (one at
// least as long as its column is wide) widens the column to the value plus
// two spaces; the last column is never padded.
var (
	clusterColumns = []column{
		{"Domain", 11}, {"Status", 13}, {"Key Creation Date", 21}, {"Error Info(if any)", 0},
	}
	sedColumns = []column{
		{"Node", 5}, {"Status", 8}, {"Location", 10}, {"Remote Key ID", 15}, {"Key Creation Date", 20}, {"Error Info(if any)", 0},
	}
	eventColumns = []column{
		{"Time", 22}, {"Event", 27}, {"Scope", 9}, {"Domain", 12}, {"Attempt", 9}, {"Message", 0},
	}
)

const (
	clusterRule = 72 // dashes under the cluster status header and above Total
	sedRule     = 77 // the same for sed status
	// secondLayout is how tables show times: UTC, second precision, no zone.
	secondLayout = "2006-01-02T15:04:05"
)

type column struct {
	title string
	width int // width in the SPEC sample, separation included
}

// table is rows of cells under columns, rendered by write.
type table struct {
	indent string
	cols   []column
	rows   [][]string
}

// widths returns each column's width: the SPEC's, unless a cell would not
// leave a space after it; then that cell's length plus two.
func (t table) widths() []int {
	ws := make([]int, len(t.cols))
	for i, c := range t.cols {
		ws[i] = c.width
	}
	for _, r := range t.rows {
		for i, cell := range r {
			if n := utf8.RuneCountInString(cell); n >= t.cols[i].width {
				ws[i] = max(ws[i], n+2)
			}
		}
	}
	return ws
}

func (t table) line(ws []int, cells []string) string {
	var b strings.Builder
	b.WriteString(t.indent)
	for i, cell := range cells {
		b.WriteString(cell)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", ws[i]-utf8.RuneCountInString(cell)))
		}
	}
	return strings.TrimRight(b.String(), " ")
}

// writeHeader writes the title line; writeRows every row.
func (t table) writeHeader(b *strings.Builder, ws []int) {
	titles := make([]string, len(t.cols))
	for i, c := range t.cols {
		titles[i] = c.title
	}
	b.WriteString(t.line(ws, titles) + "\n")
}

func (t table) writeRows(b *strings.Builder, ws []int) {
	for _, r := range t.rows {
		b.WriteString(t.line(ws, r) + "\n")
	}
}

// writeStatus renders a status table: header, rule, rows, rule, total.
func (t table) writeStatus(w io.Writer, rule, total int) error {
	ws := t.widths()
	var b strings.Builder
	dashes := strings.Repeat("-", rule) + "\n"
	t.writeHeader(&b, ws)
	b.WriteString(dashes)
	t.writeRows(&b, ws)
	b.WriteString(dashes)
	fmt.Fprintf(&b, "Total: %d\n", total)
	_, err := io.WriteString(w, b.String())
	return err
}

// cell makes a value safe for a table cell: one line, no control
// characters.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// keyDate formats a key creation time for a table; "" when unknown.
func keyDate(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(secondLayout)
}

func clusterStatusTable(st api.ClusterStatus) table {
	t := table{cols: clusterColumns}
	for _, d := range st.Domains {
		t.rows = append(t.rows, []string{cell(d.Domain), cell(d.Status), keyDate(d.KeyCreated), cell(d.Error)})
	}
	return t
}

// renderClusterStatus writes `cluster status` as a table (SPEC sample).
func renderClusterStatus(w io.Writer, st api.ClusterStatus) error {
	return clusterStatusTable(st).writeStatus(w, clusterRule, st.Total)
}

func sedStatusTable(st api.SEDStatus) table {
	t := table{indent: " ", cols: sedColumns}
	for _, n := range st.Nodes {
		t.rows = append(t.rows, []string{strconv.Itoa(n.Node), cell(n.Status), cell(n.Location), cell(n.RemoteKeyID),
			keyDate(n.KeyCreated), cell(n.Error)})
	}
	return t
}

// renderSEDStatus writes `sed status` as a table (SPEC sample).
func renderSEDStatus(w io.Writer, st api.SEDStatus) error {
	return sedStatusTable(st).writeStatus(w, sedRule, st.Total)
}

// renderRekeyView writes `rekey view` (SPEC: rekey view).
func renderRekeyView(w io.Writer, v api.RekeyView) error {
	rekeyTime := time.Unix(0, 0) // SPEC: before any schedule
	if !v.RekeyTime.IsZero() {
		rekeyTime = v.RekeyTime
	}
	next := v.NextRekey
	if t, err := time.Parse(time.RFC3339, next); err == nil {
		next = t.UTC().Format(secondLayout)
	}
	_, err := fmt.Fprintf(w, "Rekey Time: %s\nKey Rotation: %s\nNext Rekey: %s\nLast Result: %s\n",
		rekeyTime.UTC().Format(secondLayout), cell(v.KeyRotation), cell(next), cell(v.LastResult))
	return err
}

// renderEvents writes `events list` as a table.
func renderEvents(w io.Writer, l api.EventList) error {
	t := table{cols: eventColumns}
	for _, e := range l.Events {
		attempt := ""
		if e.Attempt > 0 {
			attempt = strconv.Itoa(e.Attempt)
		}
		msg := e.Message
		if e.Error != "" {
			if msg != "" {
				msg += ": "
			}
			msg += e.Error
		}
		t.rows = append(t.rows, []string{e.Time.UTC().Format(time.RFC3339), cell(e.Name), cell(e.Scope), cell(e.Domain),
			attempt, cell(msg)})
	}
	ws := t.widths()
	var b strings.Builder
	t.writeHeader(&b, ws)
	t.writeRows(&b, ws)
	_, err := io.WriteString(w, b.String())
	return err
}

// renderRekeyDomains writes "Rekey started: S3, SSO" and the like.
func renderRekeyDomains(w io.Writer, what string, domains []string) error {
	list := strings.Join(domains, ", ")
	if list == "" {
		list = "none"
	}
	_, err := fmt.Fprintf(w, "Rekey %s: %s\n", what, list)
	return err
}

// formatProgress is the --wait progress line:
//
//	Rekeying 3 domain(s): 420000/1000000 entries (42%), 85000 entries/s, ETA 7s
//
// rate is in entries per second; a negative rate is unknown and shows as
// "-", and the ETA is "-" unless the rate is positive.
func formatProgress(domains int, done, total int64, rate float64) string {
	pct := int64(100)
	if total > 0 {
		pct = min(100, max(0, done*100/total))
	}
	rateStr, eta := "-", "-"
	if rate >= 0 && !math.IsInf(rate, 0) && !math.IsNaN(rate) {
		rateStr = strconv.FormatFloat(math.Round(rate), 'f', 0, 64)
		if rate > 0 {
			secs := math.Ceil(float64(max(0, total-done)) / rate)
			if secs < float64(math.MaxInt64/int64(time.Second)) {
				eta = (time.Duration(secs) * time.Second).String()
			}
		}
	}
	return fmt.Sprintf("Rekeying %d domain(s): %d/%d entries (%d%%), %s entries/s, ETA %s",
		domains, done, total, pct, rateStr, eta)
}
