package e2e_test

import (
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/kmd-project/kmd/kmip/kmiptestserver"
)

// damageCase is one kind of damage done to one domain of a stopped kmd.
type damageCase struct {
	name   string
	domain string
	// damage harms domain in d's data dir (kmd stopped) and returns what
	// the error must name besides the domain.
	damage func(t *testing.T, d *daemon, keyPath string) string
	// atStart: kmd finds the damage when it starts (else at the rekey).
	atStart bool
	// repair undoes the damage (kmd stopped), or is nil.
	repair func(t *testing.T, d *daemon, keyPath string)
	// kmip: the domain's MK lives on a KMIP server, not in a key file.
	kmip bool
}

// TestDamage damages one domain of a stopped kmd in each of four ways — a
// flipped byte in one entry's ciphertext, a truncated key file, a key file
// readable by others, the store's database file removed — and proves on
// the real binaries that kmd detects it (at start or at the rekey) with an
// error naming the domain (and the entry, for the row) in status, kmctl's
// output and events; that no MK is destroyed (the key file stays, byte for
// byte, and the key ID with it); that the other domains stay ACTIVE and
// readable and rekey fine; and that a missing store is never silently
// replaced by an empty one.
func TestDamage(t *testing.T) {
	t.Parallel()
	victim := "victim/row"
	cases := []damageCase{
		{
			name: "corrupted row", domain: "S3",
			damage: func(t *testing.T, d *daemon, _ string) string {
				flipCiphertextByte(t, filepath.Join(d.dataDir, "stores", "S3.db"), victim)
				return victim
			},
		},
		{
			name: "truncated key file", domain: "SNMP", atStart: true,
			damage: func(t *testing.T, d *daemon, keyPath string) string {
				if err := os.Truncate(keyPath, int64(len(fileBytes(t, keyPath))/2)); err != nil {
					t.Fatal(err)
				}
				return filepath.Base(keyPath)
			},
		},
		{
			name: "key file mode 0644", domain: "NDMP", atStart: true,
			damage: func(t *testing.T, d *daemon, keyPath string) string {
				if err := os.Chmod(keyPath, 0o644); err != nil {
					t.Fatal(err)
				}
				return filepath.Base(keyPath)
			},
			repair: func(t *testing.T, d *daemon, keyPath string) {
				if err := os.Chmod(keyPath, 0o600); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "missing store", domain: "FTP", atStart: true,
			damage: func(t *testing.T, d *daemon, _ string) string {
				return removeStoreKeepingBackup(t, d, "FTP")
			},
			repair: func(t *testing.T, d *daemon, _ string) { restoreStore(t, d, "FTP") },
		},
		{
			// No local key file tells that this domain existed: its MK is on
			// a KMIP server.
			name: "missing store of a domain on KMIP", domain: "SIQ", atStart: true, kmip: true,
			damage: func(t *testing.T, d *daemon, _ string) string {
				return removeStoreKeepingBackup(t, d, "SIQ")
			},
			repair: func(t *testing.T, d *daemon, _ string) { restoreStore(t, d, "SIQ") },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			damageOneDomain(t, c, victim)
		})
	}
}

func damageOneDomain(t *testing.T, c damageCase, victim string) {
	d := startKMD(t, "--retry-interval", "2s")
	dom := c.domain
	want := genEntries(strings.ToLower(dom)+"/", 40)
	if c.name == "corrupted row" {
		want[victim] = []byte("the entry whose ciphertext gets one byte flipped")
	}
	d.importEntries(dom, want)
	other := genEntries("jwt/", 15)
	d.importEntries("JWT", other)
	var srv *kmiptestserver.Server
	if c.kmip {
		srv = kmiptestserver.Start(t)
		host, port, _ := strings.Cut(srv.Addr, ":")
		d.must("kmip", "server", "create", "kmip1", "--host", host, "--port", port,
			"--ca-cert-path", srv.CACert, "--client-cert-path", srv.ClientCert, "--client-key-path", srv.ClientKey)
		d.must("cluster", "migrate", "--to-server", "kmip1", "--domain", dom, "--yes", "--wait")
	}
	onKMIP := d.clusterStatus().row(t, dom)
	before := d.keyIDs()
	keyID := before[dom]
	keyPath := filepath.Join(d.dataDir, "keys", dom, keyID+".key")
	d.stop()

	mention := c.damage(t, d, keyPath)
	tally(t, "faults", 1)
	damagedKey, keyErr := os.ReadFile(keyPath)
	keyInfo, _ := os.Stat(keyPath)
	// The MK is not destroyed: its file stays as the damage left it (or,
	// on KMIP, kmd makes no local MK in its place).
	keyKept := func(when string) {
		t.Helper()
		if c.kmip {
			if files := d.keyFiles(dom); len(files) != 0 {
				t.Errorf("%s: keys/%s holds %v: kmd made a local MK for a domain whose MK is on KMIP", when, dom, files)
			}
			return
		}
		b, err := os.ReadFile(keyPath)
		if (err == nil) != (keyErr == nil) || !bytes.Equal(b, damagedKey) {
			t.Errorf("%s: the key file of %s changed or vanished (%v)", when, dom, err)
		}
		if st, err := os.Stat(keyPath); err == nil && keyInfo != nil && st.Mode() != keyInfo.Mode() {
			t.Errorf("%s: the key file of %s has mode %v, was %v", when, dom, st.Mode(), keyInfo.Mode())
		}
		if files := d.keyFiles(dom); !slices.Contains(files, keyID+".key") {
			t.Errorf("%s: keys/%s holds %v, the damaged domain's key %s.key is gone", when, dom, files, keyID)
		}
	}
	names := func(s string) bool { return strings.Contains(s, dom) && strings.Contains(s, mention) }
	missing := strings.HasSuffix(mention, ".db")

	d.start()
	cs := d.clusterStatus()
	r := cs.row(t, dom)
	if c.atStart {
		if r.Status != "FAILED" || !names(r.Error) {
			t.Errorf("%s after kmd started on it: status %s, error %q; want FAILED naming %s and %s", dom, r.Status, r.Error, dom, mention)
		}
		tableShows(t, d, dom, "FAILED", true)
		if !missing && r.KeyID != keyID {
			t.Errorf("%s shows key %s after the damage, want %s", dom, r.KeyID, keyID)
		}
		// kmctl says what is wrong with the domain.
		for _, args := range [][]string{
			{"entry", "get", dom, sortedKeys(want)[0]},
			{"entry", "export", dom},
		} {
			if _, stderr, code := d.kmctl(args...); code != 1 || !strings.Contains(stderr, dom) {
				t.Errorf("kmctl %s on the damaged domain: exit %d, want 1 naming %s; stderr:\n%s", cmdline(args), code, dom, stderr)
			}
		}
	} else if r.Status != "ACTIVE" {
		t.Errorf("%s after a restart with one damaged row: %+v, want ACTIVE until something opens the row", dom, r)
	}
	if missing {
		// Never silently replaced by an empty store: every entry would be lost.
		if _, err := os.Stat(filepath.Join(d.dataDir, "stores", dom+".db")); !os.IsNotExist(err) {
			t.Errorf("kmd made a new stores/%s.db in place of the missing one (stat: %v)", dom, err)
		}
		if _, stderr, code := d.kmctl("entry", "list", dom); code != 1 || !strings.Contains(stderr, dom) {
			t.Errorf("entry list of the domain whose store is missing: exit %d, want 1 naming it; stderr:\n%s", code, stderr)
		}
	}
	keyKept("at start")

	// A rekey of the damaged domain fails, naming the domain (and the entry).
	_, stderr, code := d.kmctl("cluster", "rekey", "start", "--domain", dom, "--yes", "--wait")
	if code != 1 || !names(stderr) || len(errorLines(stderr)) != 1 {
		t.Errorf("rekey start --wait of damaged %s: exit %d, want 1 with one error line naming %s and %s; stderr:\n%s", dom, code, dom, mention, stderr)
	}
	keyKept("after its rekey failed")
	if !missing {
		r = d.waitDomain(dom, 30*time.Second, "FAILED", func(r domainRow) bool { return r.Status == "FAILED" })
		if !names(r.Error) || r.Entries != int64(len(want)) {
			t.Errorf("%s after its failed rekey: error %q, %d entries; want an error naming %s, %d entries", dom, r.Error, r.Entries, mention, len(want))
		}
		ev := firstEvent(d.events(), "KeyManagerRekeyFailed", dom)
		if ev == nil || !names(ev.Error+" "+ev.Message) || ev.Attempt < 1 {
			t.Errorf("KeyManagerRekeyFailed event of %s: %+v; want one naming %s", dom, ev, mention)
		}
		// Retries do not mint MK after MK: at most the first new one.
		if files := d.keyFiles(dom); len(files) > 2 {
			t.Errorf("keys/%s holds %v after the failed rekey and its retries, want at most 2", dom, files)
		}
	}
	if c.name == "corrupted row" {
		ok := map[string][]byte{}
		for n, v := range want {
			if n != victim {
				ok[n] = v
			}
		}
		d.checkGets(dom, sortedKeys(ok), ok)
		if _, stderr, code := d.kmctl("entry", "get", dom, victim); code != 1 || !names(stderr) {
			t.Errorf("entry get of the damaged entry: exit %d, want 1 naming %s and the entry; stderr:\n%s", code, dom, stderr)
		}
		d.put(dom, "written-after-damage", []byte("fine"))
		ok["written-after-damage"] = []byte("fine")
		othersFine(t, d, dom, other)
		// Once the damaged entry is deleted, the retry completes.
		d.must("entry", "delete", dom, victim)
		r = d.waitDomain(dom, time.Minute, "ACTIVE under a new key", func(r domainRow) bool {
			return r.Status == "ACTIVE" && r.Rekey == nil && r.KeyID != keyID
		})
		d.checkExport(dom, ok)
		if files := d.keyFiles(dom); !slices.Equal(files, []string{r.KeyID + ".key"}) {
			t.Errorf("keys/%s holds %v once its rekey completed, want only %s.key", dom, files, r.KeyID)
		}
		return
	}
	othersFine(t, d, dom, other)

	if c.repair != nil {
		d.stop()
		c.repair(t, d, keyPath)
		d.start()
		r = d.waitDomain(dom, time.Minute, "ACTIVE after the repair", func(r domainRow) bool {
			return r.Status == "ACTIVE" && r.Rekey == nil
		})
		if r.Entries != int64(len(want)) {
			t.Errorf("%s after the repair: %+v, want %d entries", dom, r, len(want))
		}
		d.checkExport(dom, want)
		if c.kmip {
			if r.KeyID != onKMIP.KeyID || r.Location != "kmip1" || r.RemoteKeyID != onKMIP.RemoteKeyID {
				t.Errorf("%s after the repair: key %s at %q (%s), want its KMIP key %s at kmip1 (%s)",
					dom, r.KeyID, r.Location, r.RemoteKeyID, onKMIP.KeyID, onKMIP.RemoteKeyID)
			}
			keyKept("after the repair")
		} else if files := d.keyFiles(dom); !slices.Equal(files, []string{r.KeyID + ".key"}) {
			t.Errorf("keys/%s holds %v after the repair, want only %s.key", dom, files, r.KeyID)
		}
	}
}

// othersFine checks that every domain but dom is ACTIVE, that JWT holds
// want, and that a rekey of JWT completes.
func othersFine(t *testing.T, d *daemon, dom string, want map[string][]byte) {
	t.Helper()
	for _, r := range d.clusterStatus().Domains {
		if r.Domain != dom && (r.Status != "ACTIVE" || r.Error != "") {
			t.Errorf("%s beside the damaged %s: %s %q, want ACTIVE", r.Domain, dom, r.Status, r.Error)
		}
	}
	jwtKey := d.clusterStatus().row(t, "JWT").KeyID
	d.must("cluster", "rekey", "start", "--domain", "JWT", "--yes", "--wait")
	r := d.waitActive("JWT", 30*time.Second)
	if r.KeyID == jwtKey {
		t.Errorf("JWT's rekey beside the damaged %s left it under key %s", dom, r.KeyID)
	}
	if files := d.keyFiles("JWT"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
		t.Errorf("keys/JWT holds %v after its rekey, want only %s.key", files, r.KeyID)
	}
	d.checkExport("JWT", want)
}

// firstEvent returns the first event named name of domain, or nil.
func firstEvent(evs []event, name, domain string) *event {
	for i := range evs {
		if evs[i].Name == name && evs[i].Domain == domain {
			return &evs[i]
		}
	}
	return nil
}

// removeStoreKeepingBackup removes the database files of a stopped kmd's
// domain, keeping a copy of the database as the backup an operator would
// restore, and returns the database file's name.
func removeStoreKeepingBackup(t *testing.T, d *daemon, domain string) string {
	t.Helper()
	db := filepath.Join(d.dataDir, "stores", domain+".db")
	if err := os.WriteFile(filepath.Join(d.root, domain+".db.bak"), fileBytes(t, db), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(db + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	return domain + ".db"
}

// restoreStore puts back the backup removeStoreKeepingBackup kept.
func restoreStore(t *testing.T, d *daemon, domain string) {
	t.Helper()
	b := fileBytes(t, filepath.Join(d.root, domain+".db.bak"))
	if err := os.WriteFile(filepath.Join(d.dataDir, "stores", domain+".db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// flipCiphertextByte flips one bit of one byte in the middle of an
// entry's ciphertext (the ct column of the entries table) in a stopped
// kmd's store, the way a bad sector would.
func flipCiphertextByte(t *testing.T, store, name string) {
	t.Helper()
	db, err := sql.Open("sqlite", store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ct []byte
	if err := db.QueryRow(`SELECT ct FROM entries WHERE name = ?`, name).Scan(&ct); err != nil {
		t.Fatalf("read the ciphertext of %q in %s: %v", name, store, err)
	}
	ct[len(ct)/2] ^= 0x10
	res, err := db.Exec(`UPDATE entries SET ct = ? WHERE name = ?`, ct, name)
	if err != nil {
		t.Fatalf("flip a byte of %q in %s: %v", name, store, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("flip a byte of %q in %s: %d rows, want 1", name, store, n)
	}
}
