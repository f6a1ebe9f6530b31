package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/kmip"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
)

// The torture's domains: four local cluster domains and the SED store,
// whose MK lives on an in-process KMIP server.
var tortureLocal = []string{"CELOG", "JWT", "S3", "SNMP"}

const tortureKMIP = "SED"

func tortureDomains() []string { return append(slices.Clone(tortureLocal), tortureKMIP) }

// TestTorture_Kill9 proves invariants 1, 2, 3, 6 and 7 of DESIGN.md under
// SIGKILL at random moments: a kmd holding 100k+ entries (in the full run)
// over four local domains, plus SED with its MK on KMIP, is killed again
// and again (right after a rekey start, during rekeys, right after one
// completes, right after a restart, during a migration of SED between KMIP
// and local with a rekey queued behind it, at random) while writers keep
// writing. After every
// restart and at the end: every entry holds its last acknowledged write or
// one of the unacknowledged writes issued after it, none is missing, none
// appears from nowhere; every rekey started completed with a new key;
// exactly one MK per domain remains (one key file, or one live KMIP
// object); and no rekey failed.
//
// The kill moments come from a seeded RNG: KMD_TORTURE_SEED=N replays a
// run's schedule (the timing of kmd itself is not replayable).
func TestTorture_Kill9(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KMD_TORTURE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KMD_TORTURE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with KMD_TORTURE_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b6d64))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
	}
	// The full run holds 110k entries; the short one is sized for make
	// test's budget (the -race kmd imports ~1k entries a second).
	perDomain := size(4000, 25000)
	sedEntries := size(2000, 10000)
	kills := size(20, 200)
	step := stepper(t)

	d := startKMD(t)
	srv := addKMIPServer(d, "kmip1")

	m := newTortureModel()
	for _, dom := range tortureLocal {
		entries := genEntries("t/", perDomain)
		m.seed(dom, entries)
		importChunked(d, dom, entries)
	}
	drives := genEntries("drive/", sedEntries)
	m.seed(tortureKMIP, drives)
	importChunked(d, tortureKMIP, drives)
	step(fmt.Sprintf("imported %d entries", len(tortureLocal)*perDomain+sedEntries))
	d.must("sed", "migrate", "--to-server", "kmip1", "--yes", "--wait")
	if n := d.sedStatus().Nodes[0]; n.Location != "kmip1" || n.RemoteKeyID == "" {
		t.Fatalf("SED after its migration: %+v; want its MK on kmip1", n)
	}
	step("SED migrated to KMIP")

	keysBefore := d.keyIDs()
	keysBefore[tortureKMIP] = d.sedKeyID()
	evBase := int64(0)
	for _, e := range d.events() {
		evBase = max(evBase, e.Seq)
	}
	client := api.NewClient(d.sock)

	// Writers: each owns a share of the names, so that its writes to one
	// name are ordered; it pauses while a checkpoint reads the domains.
	ctx, stopWriters := context.WithCancel(context.Background())
	var pause sync.RWMutex
	const writers = 4
	var wwg sync.WaitGroup
	defer func() { stopWriters(); wwg.Wait() }() // none outlives the test, even a failed one
	for w := range writers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		owned := m.owned(w, writers)
		wwg.Go(func() { m.write(ctx, t, client, &pause, w, wrng, owned) })
	}

	accepted := map[string]int{} // rekeys accepted, by domain
	// startRekeys starts rekeys of up to max idle domains, chosen at
	// random, and returns them.
	startRekeys := func(maxN int) []string {
		t.Helper()
		idle := tortureIdle(client)
		rng.Shuffle(len(idle), func(i, j int) { idle[i], idle[j] = idle[j], idle[i] })
		pick := idle[:min(len(idle), 1+rng.IntN(maxN))]
		var cluster []string
		for _, dom := range pick {
			if dom == tortureKMIP {
				d.must("sed", "rekey", "start", "--yes")
			} else {
				cluster = append(cluster, "--domain", dom)
			}
		}
		if len(cluster) > 0 {
			d.must(append([]string{"cluster", "rekey", "start", "--yes"}, cluster...)...)
		}
		for _, dom := range pick {
			accepted[dom]++
		}
		return pick
	}

	modes := map[string]int{}
	migrations := 0
	checkpointEvery := max(kills/4, 1)
	// Every kind of moment as often as the others, in a random order.
	order := make([]int, kills)
	for i := range order {
		order[i] = i % 6
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for k := 1; k <= kills; k++ {
		var mode string
		switch order[k-1] {
		case 5:
			// SED moves between KMIP and a local key file; half the time a
			// rekey is queued behind the move.
			mode = "during a migration"
			if !slices.Contains(tortureIdle(client), tortureKMIP) {
				break
			}
			if tortureSEDLocation(t, client) == "kmip1" {
				d.must("sed", "migrate", "--to-local", "--yes")
			} else {
				d.must("sed", "migrate", "--to-server", "kmip1", "--yes")
			}
			accepted[tortureKMIP]++
			migrations++
			if rng.IntN(2) == 0 {
				d.must("sed", "rekey", "start", "--yes")
				accepted[tortureKMIP]++
			}
			frac := rng.Float64()
			waitUntil(time.Minute, func() bool { return tortureProgress(client, []string{tortureKMIP}) >= frac })
		case 0:
			mode = "right after a rekey start"
			startRekeys(3)
		case 1:
			mode = "during rekeys"
			started := startRekeys(3)
			frac := rng.Float64()
			waitUntil(time.Minute, func() bool { return tortureProgress(client, started) >= frac })
		case 2:
			mode = "right after a rekey completed"
			started := startRekeys(1)
			if len(started) > 0 && !waitUntil(5*time.Minute, func() bool { return slices.Contains(tortureIdle(client), started[0]) }) {
				fail("kill %d: the rekey of %s did not complete within 5m", k, started[0])
			}
		case 3:
			mode = "right after a restart"
		default:
			mode = "at a random moment"
			if rng.IntN(2) == 0 {
				startRekeys(2)
			}
			time.Sleep(time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))) // the kill's moment, not a wait
		}
		modes[mode]++
		d.kill9()
		d.start()
		if k%checkpointEvery == 0 && k < kills {
			// A cheap checkpoint: one domain, writers paused.
			dom := tortureDomains()[rng.IntN(len(tortureDomains()))]
			func() {
				pause.Lock()
				defer pause.Unlock()
				m.checkedAtCheckpoints += m.check(t, seed, dom, d.export(dom))
			}()
			step(fmt.Sprintf("kill %d/%d; checkpoint %s", k, kills, dom))
		}
		if t.Failed() {
			fail("kill %d (%s) broke kmd; stopping", k, mode)
		}
	}
	stopWriters()
	wwg.Wait()
	t.Logf("kills by moment: %v", modes)
	step(fmt.Sprintf("%d kills", kills))

	// Every pending rekey completes after the last restart.
	if !waitUntil(10*time.Minute, func() bool { return len(tortureIdle(client)) == len(tortureDomains()) }) {
		fail("rekeys still running 10m after the last restart: idle %v", tortureIdle(client))
	}
	if tortureSEDLocation(t, client) != "kmip1" {
		d.must("sed", "migrate", "--to-server", "kmip1", "--yes", "--wait")
		accepted[tortureKMIP]++
	}
	step(fmt.Sprintf("rekeys completed (%d migrations of SED)", migrations))
	checked := 0
	for _, dom := range tortureDomains() {
		checked += m.check(t, seed, dom, d.export(dom))
	}
	step("every entry checked")

	cs := d.clusterStatus()
	for _, r := range cs.Domains {
		if r.Status != "ACTIVE" || r.Error != "" || r.Rekey != nil {
			t.Errorf("seed %d: %s after the torture: %+v; want ACTIVE, no error", seed, r.Domain, r)
		}
		if accepted[r.Domain] > 0 && r.KeyID == keysBefore[r.Domain] {
			t.Errorf("seed %d: %s: %d rekeys accepted but its key is still %s", seed, r.Domain, accepted[r.Domain], r.KeyID)
		}
		if files := d.keyFiles(r.Domain); !slices.Equal(files, []string{r.KeyID + ".key"}) {
			t.Errorf("seed %d: keys/%s holds %v, want only %s.key", seed, r.Domain, files, r.KeyID)
		}
	}
	sed := d.sedStatus().Nodes[0]
	if sed.Status != "KMIP" || sed.Error != "" || sed.Rekey != nil || sed.Location != "kmip1" {
		t.Errorf("seed %d: SED after the torture: %+v; want KMIP at kmip1, no error", seed, sed)
	}
	if accepted[tortureKMIP] > 0 && sed.KeyID == keysBefore[tortureKMIP] {
		t.Errorf("seed %d: SED: %d rekeys accepted but its key is still %s", seed, accepted[tortureKMIP], sed.KeyID)
	}
	if files := d.keyFiles(tortureKMIP); len(files) != 0 {
		t.Errorf("seed %d: keys/SED holds %v, want none (the MK is on KMIP)", seed, files)
	}
	live := sortedKeys(srv.Keys())
	if !slices.Equal(live, []string{sed.RemoteKeyID}) {
		t.Errorf("seed %d: the KMIP server holds %d live keys %v, want only SED's %s", seed, len(live), live, sed.RemoteKeyID)
	}
	if ids := srv.Lookup(kmip.KeyName(1, tortureKMIP, sed.KeyID)); !slices.Equal(ids, []string{sed.RemoteKeyID}) {
		t.Errorf("seed %d: KMIP objects named for SED's key %s: %v, want [%s]", seed, sed.KeyID, ids, sed.RemoteKeyID)
	}

	completed := map[string]int{}
	for _, e := range d.events() {
		if e.Seq <= evBase {
			continue
		}
		switch e.Name {
		case "KeyManagerRekeyFailed", "KeyManagerSedsRekeyFailed":
			t.Errorf("seed %d: event %s for %s (attempt %d): %s", seed, e.Name, e.Domain, e.Attempt, e.Error)
		case "KeyManagerRekeyCompleted":
			completed[e.Domain]++
		}
	}
	for _, dom := range tortureDomains() {
		// (A kill in the microseconds between a rekey's last commit and
		// its event would lose the event.)
		if completed[dom] != accepted[dom] {
			t.Errorf("seed %d: %s: %d KeyManagerRekeyCompleted events for %d rekeys and migrations accepted", seed, dom, completed[dom], accepted[dom])
		}
	}
	t.Logf("rekeys accepted %v, completion events %v", accepted, completed)
	tally(t, "kills", kills)
	tally(t, "entries-checked", checked+m.checkedAtCheckpoints)
	tally(t, "acknowledged-writes", int(m.acked.Load()))
	t.Logf("writes: %d acknowledged, %d unacknowledged", m.acked.Load(), m.unacked.Load())
}

// importChunked imports entries with one `entry import` per 5000, so
// that each stays well within the harness's command timeout on a loaded
// machine (the -race kmd imports a few thousand entries a second at best).
func importChunked(d *daemon, domain string, entries map[string][]byte) {
	d.t.Helper()
	names := sortedKeys(entries)
	for len(names) > 0 {
		n := min(len(names), 5000)
		chunk := make(map[string][]byte, n)
		for _, name := range names[:n] {
			chunk[name] = entries[name]
		}
		d.importEntries(domain, chunk)
		names = names[n:]
	}
}

// addKMIPServer starts an in-process KMIP server (in the test process)
// and makes it kmd's KMIP server name with `kmctl kmip server create`.
func addKMIPServer(d *daemon, name string) *kmiptestserver.Server {
	d.t.Helper()
	srv := kmiptestserver.Start(d.t)
	host, port, _ := strings.Cut(srv.Addr, ":")
	d.must("kmip", "server", "create", name, "--host", host, "--port", port,
		"--ca-cert-path", srv.CACert, "--client-cert-path", srv.ClientCert, "--client-key-path", srv.ClientKey)
	return srv
}

// tortureIdle returns the torture's domains with no rekey pending (none
// while kmd does not answer).
func tortureIdle(c *api.Client) []string {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cs, err := c.ClusterStatus(ctx)
	if err != nil {
		return nil
	}
	ss, err := c.SEDStatus(ctx)
	if err != nil {
		return nil
	}
	var idle []string
	for _, r := range cs.Domains {
		if slices.Contains(tortureLocal, r.Domain) && r.Rekey == nil && r.Status == "ACTIVE" {
			idle = append(idle, r.Domain)
		}
	}
	if n := ss.Nodes; len(n) == 1 && n[0].Rekey == nil && (n[0].Status == "KMIP" || n[0].Status == "LOCAL") {
		idle = append(idle, tortureKMIP)
	}
	return idle
}

// tortureSEDLocation returns where SED's MK is.
func tortureSEDLocation(t *testing.T, c *api.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	ss, err := c.SEDStatus(ctx)
	if err != nil || len(ss.Nodes) != 1 {
		t.Fatalf("sed status: %v", err)
	}
	return ss.Nodes[0].Location
}

// tortureProgress returns the largest fraction done of the rekeys of
// domains (1 once one of them is over, or kmd does not answer).
func tortureProgress(c *api.Client, domains []string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cs, err1 := c.ClusterStatus(ctx)
	ss, err2 := c.SEDStatus(ctx)
	if err1 != nil || err2 != nil || len(domains) == 0 {
		return 1
	}
	best := 0.0
	frac := func(p *api.Progress) float64 {
		if p == nil {
			return 1
		}
		if p.Total == 0 {
			return 0
		}
		return float64(p.Done) / float64(p.Total)
	}
	for _, r := range cs.Domains {
		if slices.Contains(domains, r.Domain) {
			best = max(best, frac(r.Rekey))
		}
	}
	if slices.Contains(domains, tortureKMIP) && len(ss.Nodes) == 1 {
		best = max(best, frac(ss.Nodes[0].Rekey))
	}
	return best
}

// tortureModel is what the entries may hold: per entry, what its last
// acknowledged write left, and the writes issued after it that were not
// acknowledged (kmd was killed under them).
type tortureModel struct {
	mu      sync.Mutex
	entries map[tortureKey]*tortureEntry
	names   []tortureKey // the imported ones, in a fixed order

	seq                  atomic.Uint64
	acked, unacked       atomic.Int64
	checkedAtCheckpoints int
}

type tortureKey struct{ domain, name string }

// tortureWrite is what a write leaves: a value, or nothing (deleted).
type tortureWrite struct {
	seq     uint64 // 0: imported
	deleted bool
	value   []byte
}

func (w tortureWrite) String() string {
	switch {
	case w.deleted && w.seq == 0:
		return "absent"
	case w.deleted:
		return fmt.Sprintf("deleted by write #%d", w.seq)
	case w.seq == 0:
		return "the imported value"
	}
	return fmt.Sprintf("write #%d", w.seq)
}

type tortureEntry struct {
	acked tortureWrite
	maybe []tortureWrite
}

func newTortureModel() *tortureModel {
	return &tortureModel{entries: map[tortureKey]*tortureEntry{}}
}

// seed records imported entries as acknowledged.
func (m *tortureModel) seed(domain string, entries map[string][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range sortedKeys(entries) {
		k := tortureKey{domain, name}
		m.entries[k] = &tortureEntry{acked: tortureWrite{value: entries[name]}}
		m.names = append(m.names, k)
	}
}

// owned returns writer w's share of the imported names and the names it
// creates, of every domain.
func (m *tortureModel) owned(w, writers int) []tortureKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []tortureKey
	for _, k := range m.names {
		h := fnv.New32a()
		h.Write([]byte(k.domain + "/" + k.name))
		if int(h.Sum32())%writers == w {
			out = append(out, k)
		}
	}
	doms := tortureDomains()
	for i := range 50 {
		k := tortureKey{doms[i%len(doms)], fmt.Sprintf("new/w%d/%03d", w, i)}
		m.entries[k] = &tortureEntry{acked: tortureWrite{deleted: true}}
		out = append(out, k)
	}
	return out
}

// tortureValue is write seq's value for an entry: unique to the write.
func tortureValue(k tortureKey, seq uint64) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", k.domain, k.name, seq))
	v := binary.BigEndian.AppendUint64(nil, seq)
	v = append(v, sum[:]...)
	if seq%5 == 0 {
		v = append(v, bytes.Repeat(sum[:], int(seq%7))...)
	}
	return v
}

func (m *tortureModel) record(k tortureKey, w tortureWrite, acked bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[k]
	if acked {
		e.acked, e.maybe = w, nil
		m.acked.Add(1)
	} else {
		e.maybe = append(e.maybe, w)
		m.unacked.Add(1)
	}
}

// write runs one writer until ctx ends: puts (mostly), deletes, on its
// own names, one at a time, each under pause's read lock.
func (m *tortureModel) write(ctx context.Context, t *testing.T, c *api.Client, pause *sync.RWMutex, w int, rng *rand.Rand, owned []tortureKey) {
	tick := time.NewTicker(4 * time.Millisecond) // pace: leave the CPUs to kmd's rekeys
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k := owned[rng.IntN(len(owned))]
		seq := m.seq.Add(1)
		wr := tortureWrite{seq: seq}
		pause.RLock()
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		var err error
		if rng.IntN(10) == 0 {
			wr.deleted = true
			err = c.Delete(octx, k.domain, k.name, api.PutOptions{})
			if errors.Is(err, api.ErrNotFound) {
				err = nil // acknowledged: the entry is absent
			}
		} else {
			wr.value = tortureValue(k, seq)
			_, err = c.Put(octx, k.domain, k.name, wr.value, api.PutOptions{})
		}
		cancel()
		var ae *api.Error
		switch {
		case err == nil:
			m.record(k, wr, true)
		case ctx.Err() != nil:
			m.record(k, wr, false) // stopped under it
		case errors.As(err, &ae):
			// kmd answered and refused: that is a failure of its own.
			t.Errorf("writer %d: %s %s/%s: kmd refused: %v", w, wr, k.domain, k.name, err)
			m.record(k, wr, false)
		case errors.Is(err, context.DeadlineExceeded):
			t.Errorf("writer %d: %s %s/%s: no answer within a minute", w, wr, k.domain, k.name)
			m.record(k, wr, false)
		default:
			m.record(k, wr, false) // kmd killed or down: it may or may not have landed
		}
		pause.RUnlock()
		if err != nil {
			// kmd is down: try again a little later, not 250 times a second.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// check compares an export of domain with the model, and, since no write
// is in flight, adopts what it found as acknowledged. It returns how many
// entries it checked.
func (m *tortureModel) check(t *testing.T, seed uint64, domain string, got map[string][]byte) int {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	checked, bad := 0, 0
	report := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 20 {
			t.Errorf("seed %d: "+format, append([]any{seed}, args...)...)
		}
	}
	for k, e := range m.entries {
		if k.domain != domain {
			continue
		}
		checked++
		v, present := got[k.name]
		var found *tortureWrite
		for _, w := range append([]tortureWrite{e.acked}, e.maybe...) {
			if w.deleted && !present || !w.deleted && present && bytes.Equal(v, w.value) {
				found = &w
				break
			}
		}
		if found == nil {
			want := []string{e.acked.String() + " (acknowledged)"}
			for _, w := range e.maybe {
				want = append(want, w.String())
			}
			report("entry %s %q holds %s; want %s", domain, k.name, m.describe(k, v, present), strings.Join(want, " or "))
			continue
		}
		e.acked, e.maybe = *found, nil
	}
	for name := range got {
		if _, ok := m.entries[tortureKey{domain, name}]; !ok {
			report("entry %s %q appeared from nowhere", domain, name)
		}
	}
	if bad > 20 {
		t.Errorf("seed %d: %s: %d bad entries in all", seed, domain, bad)
	}
	return checked
}

// describe tells what an entry holds without showing its value.
func (m *tortureModel) describe(k tortureKey, v []byte, present bool) string {
	if !present {
		return "nothing (missing)"
	}
	if len(v) >= 8 {
		if seq := binary.BigEndian.Uint64(v); bytes.Equal(v, tortureValue(k, seq)) {
			return fmt.Sprintf("write #%d", seq)
		}
	}
	return fmt.Sprintf("an unknown value of %d bytes", len(v))
}

// TestTorture_QueuedRekeySurvivesKill9 proves that a rekey kmd accepted
// while a migration ran (queued behind it) is not forgotten by a kill -9:
// after the restart the migration completes, then the queued rekey does,
// each with its own new MK, and only the last one is left on KMIP.
func TestTorture_QueuedRekeySurvivesKill9(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	srv := addKMIPServer(d, "kmip1")
	drives := genEntries("q/", 5000)
	d.importEntries("SED", drives)
	// The server answers the new key's Activate only after a while, so the
	// migration is surely still under way when the rekey is asked for and
	// kmd is killed (it rewraps 5000 entries in well under a second).
	srv.Hang("Activate", 5*time.Second)
	d.must("sed", "migrate", "--to-server", "kmip1", "--yes")
	var started struct {
		Started []string `json:"started"`
	}
	decodeJSON(t, "sed rekey start -o json", d.must("sed", "rekey", "start", "--yes", "-o", "json"), &started)
	if !slices.Equal(started.Started, []string{"SED"}) {
		t.Fatalf("sed rekey start during the migration: started %v, want [SED]", started.Started)
	}
	if r := d.sedStatus().Nodes[0]; r.Status != "MIGRATING" {
		t.Fatalf("SED is %s, not MIGRATING, when killed: the test proves nothing", r.Status)
	}
	d.kill9()
	srv.Hang("Activate", 0)
	d.start()
	client := api.NewClient(d.sock)
	// Both complete: two completion events, then SED idle on KMIP.
	if !waitUntil(3*time.Minute, func() bool {
		return countEvents(d.eventsQuiet(), "KeyManagerRekeyCompleted", "SED") >= 2 && slices.Contains(tortureIdle(client), "SED")
	}) {
		t.Fatalf("after kill -9 during a migration with a rekey queued behind it: %d completion events for SED, want 2 (the migration and the queued rekey); SED %+v",
			countEvents(d.events(), "KeyManagerRekeyCompleted", "SED"), d.sedStatus().Nodes[0])
	}
	sed := d.sedStatus().Nodes[0]
	if sed.Status != "KMIP" || sed.Location != "kmip1" || sed.Error != "" {
		t.Errorf("SED after both: %+v; want KMIP at kmip1, no error", sed)
	}
	if n := countEvents(d.events(), "KeyManagerRekeyCompleted", "SED"); n != 2 {
		t.Errorf("%d KeyManagerRekeyCompleted events for SED, want 2", n)
	}
	if live := sortedKeys(srv.Keys()); !slices.Equal(live, []string{sed.RemoteKeyID}) {
		t.Errorf("the KMIP server holds live keys %v, want only SED's %s", live, sed.RemoteKeyID)
	}
	d.checkExport("SED", drives)
}

// eventsQuiet is `events list` for polling: nil when kmd does not answer.
func (d *daemon) eventsQuiet() []event {
	out, _, code := d.kmctlQuiet(nil, "events", "list", "-o", "json")
	var el eventList
	if code != 0 || !decodeQuiet(out, &el) {
		return nil
	}
	return el.Events
}
