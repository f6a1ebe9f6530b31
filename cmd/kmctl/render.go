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
// SPEC samples start them; cluster status has the Location and Remote Key ID
// columns of sed status too (a newer issue than the SPEC sample). A value
// that would touch the next column (one at least as long as its column is
// wide) widens the column to the value plus two spaces; the last column is
// never padded.
var (
	clusterColumns = []column{
		{"Domain", 11}, {"Status", 13}, {"Location", 10}, {"Remote Key ID", 15}, {"Key Creation Date", 21}, {"Error Info(if any)", 0},
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
		t.rows = append(t.rows, []string{cell(d.Domain), cell(d.Status), cell(d.Location), cell(d.RemoteKeyID),
			keyDate(d.KeyCreated), statusInfo(d.Error, d.StagedUntil)})
	}
	return t
}

// statusInfo is a status row's last cell: its error, or for a STAGED one
// until when its retired key is kept.
func statusInfo(err string, stagedUntil *time.Time) string {
	if err == "" && stagedUntil != nil {
		return "retired key kept until " + keyDate(*stagedUntil)
	}
	return cell(err)
}

// renderClusterStatus writes `cluster status` as a table (SPEC sample).
func renderClusterStatus(w io.Writer, st api.ClusterStatus) error {
	return clusterStatusTable(st).writeStatus(w, clusterRule, st.Total)
}

func sedStatusTable(st api.SEDStatus) table {
	t := table{indent: " ", cols: sedColumns}
	for _, n := range st.Nodes {
		t.rows = append(t.rows, []string{strconv.Itoa(n.Node), cell(n.Status), cell(n.Location), cell(n.RemoteKeyID),
			keyDate(n.KeyCreated), statusInfo(n.Error, n.StagedUntil)})
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

// renderRekeyDomains writes "Rekey started: S3, SSO", "Migration
// completed: SED" and the like.
func renderRekeyDomains(w io.Writer, op operation, what string, domains []string) error {
	list := strings.Join(domains, ", ")
	if list == "" {
		list = "none"
	}
	_, err := fmt.Fprintf(w, "%s %s: %s\n", op.title, what, list)
	return err
}

// formatProgress is the --wait progress line, after ongoing (Rekeying or
// Migrating):
//
//	Rekeying 3 domain(s): 420000/1000000 entries (42%), 85000 entries/s, ETA 7s
//
// rate is in entries per second; a negative rate is unknown and shows as
// "-", and the ETA is "-" unless the rate is positive.
func formatProgress(ongoing string, domains int, done, total int64, rate float64) string {
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
	return fmt.Sprintf("%s %d domain(s): %d/%d entries (%d%%), %s entries/s, ETA %s",
		ongoing, domains, done, total, pct, rateStr, eta)
}

// fitColumns returns columns for titles that fit every cell: each as wide
// as its longest value plus two spaces.
func fitColumns(titles []string, rows [][]string) []column {
	cols := make([]column, len(titles))
	for i, title := range titles {
		w := utf8.RuneCountInString(title)
		for _, r := range rows {
			w = max(w, utf8.RuneCountInString(r[i]))
		}
		cols[i] = column{title: title, width: w + 2}
	}
	return cols
}

// orDash is s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// domainList is "S3, SSO", or "-" for none.
func domainList(domains []string) string {
	cells := make([]string, len(domains))
	for i, d := range domains {
		cells[i] = cell(d)
	}
	return orDash(strings.Join(cells, ", "))
}

// renderKMIPServers writes `kmip server list`: a table padded to its
// content, then the total.
func renderKMIPServers(w io.Writer, l api.KMIPServerList) error {
	var rows [][]string
	for _, s := range l.Servers {
		rows = append(rows, []string{cell(s.Name), cell(s.Host), strconv.Itoa(s.Port), cell(s.MinTLSVersion),
			strconv.Itoa(s.Keys), domainList(s.Domains)})
	}
	t := table{cols: fitColumns([]string{"Name", "Host", "Port", "Min TLS", "Keys", "Domains"}, rows), rows: rows}
	ws := t.widths()
	var b strings.Builder
	t.writeHeader(&b, ws)
	t.writeRows(&b, ws)
	fmt.Fprintf(&b, "Total: %d\n", len(l.Servers))
	_, err := io.WriteString(w, b.String())
	return err
}

// renderKMIPServer writes `kmip server view`: one "Key: value" line per
// field, times in UTC.
func renderKMIPServer(w io.Writer, s api.KMIPServer) error {
	_, err := fmt.Fprintf(w, "Name: %s\nHost: %s\nPort: %d\nMinimum TLS Version: %s\nConnection Timeout: %s\n"+
		"Client Certificate Subject: %s\nClient Certificate Expires: %s\nCreated: %s\nKeys: %d\nDomains: %s\n",
		cell(s.Name), cell(s.Host), s.Port, orDash(cell(s.MinTLSVersion)), orDash(cell(s.ConnectionTimeout)),
		orDash(cell(s.ClientCertSubject)), orDash(keyDate(s.ClientCertExpires)), orDash(keyDate(s.Created)),
		s.Keys, domainList(s.Domains))
	return err
}

// probeOK reports whether a verification's probe worked: some step ran and
// none failed.
func probeOK(r api.KMIPVerifyReport) bool {
	ran := false
	for _, s := range r.Steps {
		switch s.Result {
		case "ok":
			ran = true
		case "skipped":
		default:
			return false
		}
	}
	return ran
}

// renderKMIPVerify writes `kmip server verify`: a block per server, blocks
// separated by a blank line.
func renderKMIPVerify(w io.Writer, v api.KMIPVerifyResponse) error {
	var b strings.Builder
	if len(v.Reports) == 0 {
		b.WriteString("No KMIP servers to verify\n")
	}
	for i, r := range v.Reports {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString("Server: " + cell(r.Server))
		if r.Addr != "" {
			b.WriteString(" (" + cell(r.Addr) + ")")
		}
		reachable, probe := "no", "failed"
		if r.Reachable {
			reachable = "yes"
		}
		if probeOK(r) {
			probe = "ok"
		}
		fmt.Fprintf(&b, "\nReachable: %s\nTLS Version: %s\nKMIP Version: %s\nProbe: %s\n",
			reachable, orDash(cell(r.TLSVersion)), orDash(cell(r.KMIPVersion)), probe)
		for _, s := range r.Steps {
			line := fmt.Sprintf("  %-8s %s", cell(s.Name), cell(s.Result))
			if s.Error != "" {
				line += ": " + cell(s.Error)
			}
			b.WriteString(line + "\n")
		}
		if r.Error != "" {
			b.WriteString("Error: " + cell(r.Error) + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
