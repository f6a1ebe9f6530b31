package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/kmip"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
	"github.com/kmd-project/kmd/provider"
)

// TestDurability_AckedWriteSurvivesKill9 proves that a write kmd has
// acknowledged is durable: kmd is killed with SIGKILL the instant the API
// acknowledges a put or a delete (in a local domain and in SED, whose MK is
// on KMIP; every other round while a rekey of that domain runs), and after
// the restart every acknowledged write is there, with its version.
func TestDurability_AckedWriteSurvivesKill9(t *testing.T) {
	t.Parallel()
	rounds := size(8, 100)
	d := startKMD(t)
	addKMIPServer(d, "kmip1")
	// Enough entries that a rekey is still running when the writes land.
	const preload = 2000
	want := map[string]map[string][]byte{}
	versions := map[string]map[string]int64{}
	for _, dom := range []string{"S3", "SED"} {
		want[dom] = genEntries("pre/", preload)
		versions[dom] = map[string]int64{}
		for name := range want[dom] {
			versions[dom][name] = 1
		}
		d.importEntries(dom, want[dom])
	}
	d.must("sed", "migrate", "--to-server", "kmip1", "--yes", "--wait")
	client := api.NewClient(d.sock)
	ctx := context.Background()

	duringRekey := 0
	for round := range rounds {
		dom := []string{"S3", "SED"}[round%2]
		if round%4 >= 2 {
			if dom == "SED" {
				d.kmctl("sed", "rekey", "start", "--yes") // refused if one still runs: fine
			} else {
				d.kmctl("cluster", "rekey", "start", "--domain", dom, "--yes")
			}
		}
		rekeying := tortureRekeying(client, dom)
		// A few acknowledged writes, the last one a put or a delete, then
		// SIGKILL at once.
		names := sortedKeys(want[dom])
		var ops []string
		deleted := ""
		for i := range 3 {
			var name string
			switch i {
			case 0:
				name = fmt.Sprintf("new/%03d", round) // a creation
			default:
				name = names[(round*7+i*131)%len(names)] // a replacement
			}
			v := fmt.Appendf(nil, "round %d write %d of %s", round, i, name)
			ver, err := client.Put(ctx, dom, name, v, api.PutOptions{})
			if err != nil {
				t.Fatalf("round %d: put %s %q: %v", round, dom, name, err)
			}
			want[dom][name], versions[dom][name] = v, ver
			ops = append(ops, "put")
		}
		if round%3 == 0 {
			name := names[(round*13+5)%len(names)]
			if err := client.Delete(ctx, dom, name, api.PutOptions{}); err != nil {
				t.Fatalf("round %d: delete %s %q: %v", round, dom, name, err)
			}
			delete(want[dom], name)
			delete(versions[dom], name)
			ops = append(ops, "delete")
			deleted = name
		}
		d.kill9()
		if rekeying {
			duringRekey++
		}
		d.start()
		if deleted != "" {
			if _, _, err := client.Get(ctx, dom, deleted); !errors.Is(err, api.ErrNotFound) {
				t.Errorf("round %d (%v, kill -9 after the last ack): get %s %q deleted: %v, want not found", round, ops, dom, deleted, err)
			}
		}
		// Every acknowledged write so far, through get: value and version.
		for _, name := range sortedKeys(want[dom]) {
			if !bytes.HasPrefix(want[dom][name], []byte("round ")) {
				continue
			}
			v, ver, err := client.Get(ctx, dom, name)
			switch {
			case err != nil:
				t.Errorf("round %d (%v, kill -9 after the last ack): get %s %q: %v", round, ops, dom, name, err)
			case !bytes.Equal(v, want[dom][name]) || ver != versions[dom][name]:
				t.Errorf("round %d (%v, kill -9 after the last ack): %s %q is %d bytes at version %d, want %d bytes at version %d",
					round, ops, dom, name, len(v), ver, len(want[dom][name]), versions[dom][name])
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d rounds, %d of them killed during a rekey", rounds, duringRekey)
	for _, dom := range []string{"S3", "SED"} {
		d.checkExport(dom, want[dom])
	}
	tally(t, "kills", rounds)
}

// tortureRekeying reports whether a rekey of domain is under way.
func tortureRekeying(c *api.Client, domain string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if domain == "SED" {
		ss, err := c.SEDStatus(ctx)
		return err == nil && len(ss.Nodes) == 1 && ss.Nodes[0].Rekey != nil
	}
	cs, err := c.ClusterStatus(ctx)
	if err != nil {
		return false
	}
	for _, r := range cs.Domains {
		if r.Domain == domain {
			return r.Rekey != nil
		}
	}
	return false
}

// TestDurability_KeyOnDiskBeforeFirstSealedEntry proves invariant 2: an MK
// is durable (its key file, or its KMIP object) before any entry is sealed
// under it. kmd is killed with SIGKILL as soon as a rekey's first batch is
// reported done (a local domain and SED on KMIP rekeying together, with
// service writes landing right after the start); with kmd down, every row
// of both stores is opened under the MK it names, fetched as kmd fetches
// it (key file / KMIP object, checked against the recorded fingerprint).
// Restarted, kmd resumes the rekeys and completes them, every entry intact
// and only the new MKs left.
func TestDurability_KeyOnDiskBeforeFirstSealedEntry(t *testing.T) {
	t.Parallel()
	rounds := size(2, 10)
	doms := []string{"S3", "SED"}
	d := startKMD(t)
	srv := addKMIPServer(d, "kmip1")
	want := map[string]map[string][]byte{}
	for _, dom := range doms {
		want[dom] = genEntries("k/", 3000)
		d.importEntries(dom, want[dom])
	}
	d.must("sed", "migrate", "--to-server", "kmip1", "--yes", "--wait")
	client := api.NewClient(d.sock)
	ctx := context.Background()

	underNew := 0
	for round := range rounds {
		before := map[string]string{"S3": d.clusterStatus().row(t, "S3").KeyID, "SED": d.sedKeyID()}
		d.must("cluster", "rekey", "start", "--domain", "S3", "--yes")
		d.must("sed", "rekey", "start", "--yes")
		// Service writes right after the start: sealed under the new MK
		// once the rekey has switched.
		for _, dom := range doms {
			name := fmt.Sprintf("w/%03d", round)
			v := fmt.Appendf(nil, "written during rekey %d", round)
			if _, err := client.Put(ctx, dom, name, v, api.PutOptions{}); err != nil {
				t.Fatalf("put %s %q: %v", dom, name, err)
			}
			want[dom][name] = v
		}
		if !waitUntil(time.Minute, func() bool { return rekeyDone(client, "S3") > 0 || rekeyDone(client, "SED") > 0 }) {
			t.Fatalf("round %d: no rekey batch reported done within a minute", round)
		}
		d.kill9()
		for _, dom := range doms {
			byKey := openAllRows(t, d, srv, dom)
			for id, n := range byKey {
				if id != before[dom] {
					underNew += n
				}
			}
			t.Logf("round %d: %s rows by MK after kill -9: %v (old MK %s)", round, dom, byKey, before[dom])
		}
		if t.Failed() {
			t.FailNow()
		}
		d.start()
		r := d.waitActive("S3", 3*time.Minute)
		if !waitUntil(3*time.Minute, func() bool { return slices.Contains(tortureIdle(client), "SED") }) {
			t.Fatalf("round %d: the SED rekey did not complete after the restart", round)
		}
		sed := d.sedStatus().Nodes[0]
		if r.KeyID == before["S3"] || r.Error != "" || sed.Error != "" || sed.Status != "KMIP" {
			t.Fatalf("round %d: after the resumed rekeys S3 is %+v and SED %+v; want new keys, no error", round, r, sed)
		}
		if files := d.keyFiles("S3"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
			t.Errorf("round %d: keys/S3 holds %v, want only %s.key", round, files, r.KeyID)
		}
		if live := sortedKeys(srv.Keys()); !slices.Equal(live, []string{sed.RemoteKeyID}) {
			t.Errorf("round %d: the KMIP server holds live keys %v, want only SED's %s", round, live, sed.RemoteKeyID)
		}
	}
	if underNew == 0 {
		t.Errorf("no row was sealed under a new MK when kmd was killed: the test proved nothing")
	}
	for _, dom := range doms {
		d.checkExport(dom, want[dom])
	}
	for _, e := range d.events() {
		if e.Name == "KeyManagerRekeyFailed" || e.Name == "KeyManagerSedsRekeyFailed" {
			t.Errorf("event %s for %s: %s", e.Name, e.Domain, e.Error)
		}
	}
	tally(t, "kills", rounds)
	tally(t, "entries-checked", underNew)
}

// rekeyDone returns how many entries domain's running rekey has moved (0
// when none runs or kmd does not answer).
func rekeyDone(c *api.Client, domain string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if domain == "SED" {
		if ss, err := c.SEDStatus(ctx); err == nil && len(ss.Nodes) == 1 && ss.Nodes[0].Rekey != nil {
			return ss.Nodes[0].Rekey.Done
		}
		return 0
	}
	cs, err := c.ClusterStatus(ctx)
	if err != nil {
		return 0
	}
	for _, r := range cs.Domains {
		if r.Domain == domain && r.Rekey != nil {
			return r.Rekey.Done
		}
	}
	return 0
}

// openAllRows, with kmd stopped, reads every row of domain's store (from a
// copy of its files, so that kmd finds its crash as it left it) and opens
// it under the MK the row names: that MK's key file, or, for an MK on KMIP,
// the live object of the test server recorded for it and named for it;
// each MK's material must match the fingerprint recorded in the store. It
// returns the rows per MK.
func openAllRows(t *testing.T, d *daemon, srv *kmiptestserver.Server, domain string) map[string]int {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(d.dataDir, "stores", domain+".db")
	for _, suffix := range []string{"", "-wal"} {
		if err := copyFile(src+suffix, filepath.Join(dir, "s.db"+suffix)); err != nil && !(suffix != "" && errors.Is(err, os.ErrNotExist)) {
			t.Fatalf("copy the store of %s: %v", domain, err)
		}
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	type meta struct{ location, remoteID, fingerprint string }
	metas := map[string]meta{}
	rows, err := db.Query(`SELECT id, location, remote_id, fingerprint FROM keys`)
	if err != nil {
		t.Fatalf("store of %s: %v", domain, err)
	}
	for rows.Next() {
		var id string
		var m meta
		if err := rows.Scan(&id, &m.location, &m.remoteID, &m.fingerprint); err != nil {
			t.Fatal(err)
		}
		metas[id] = m
	}
	rows.Close()

	local, err := provider.NewLocalKeys(filepath.Join(d.dataDir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]*provider.Key{}
	bad := map[string]bool{}
	key := func(id string) *provider.Key {
		if k, ok := keys[id]; ok || bad[id] {
			return k
		}
		bad[id] = true
		m, ok := metas[id]
		if !ok {
			t.Errorf("%s: rows are sealed under MK %s, which has no metadata", domain, id)
			return nil
		}
		var material []byte
		if m.location == provider.LocationLocal {
			var err error
			material, err = local.Load(context.Background(), provider.KeyRef{Domain: domain, ID: id, Location: m.location})
			if err != nil {
				t.Errorf("%s: rows are sealed under MK %s, whose key file is not usable: %v", domain, id, err)
				return nil
			}
		} else {
			material = srv.Keys()[m.remoteID]
			named := srv.Lookup(kmip.KeyName(1, domain, id))
			if material == nil || !slices.Contains(named, m.remoteID) {
				t.Errorf("%s: rows are sealed under MK %s, recorded as KMIP object %q at %s, which holds no live key of that name (named ones: %v)",
					domain, id, m.remoteID, m.location, named)
				return nil
			}
		}
		if fp := provider.Fingerprint(material); fp != m.fingerprint {
			t.Errorf("%s: MK %s does not match its recorded fingerprint", domain, id)
			return nil
		}
		k, err := provider.NewKey(id, material)
		if err != nil {
			t.Errorf("%s: MK %s: %v", domain, id, err)
			return nil
		}
		delete(bad, id)
		keys[id] = k
		return k
	}

	byKey := map[string]int{}
	// Schema 2: a row names its MK by number; mks maps it to the MK's ID.
	rows, err = db.Query(`SELECT e.name, m.id, e.ct FROM entries e JOIN mks m ON m.num = e.mk`)
	if err != nil {
		t.Fatalf("store of %s: %v", domain, err)
	}
	defer rows.Close()
	failed := 0
	for rows.Next() {
		var name, mk string
		var ct []byte
		if err := rows.Scan(&name, &mk, &ct); err != nil {
			t.Fatal(err)
		}
		byKey[mk]++
		k := key(mk)
		if k == nil {
			continue
		}
		if _, err := k.Open(nil, domain, name, ct); err != nil {
			if failed++; failed <= 10 {
				t.Errorf("%s: entry %q does not open under MK %s: %v", domain, name, mk, err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("store of %s: %v", domain, err)
	}
	return byKey
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
