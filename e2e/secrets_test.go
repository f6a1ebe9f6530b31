package e2e_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoPlaintextSecrets stores recognisable secrets, rekeys, provokes
// failures, and then checks that no file kmd wrote (stores, keys, state,
// events, log, its stderr) holds a secret, plain, hex or base64, and that no
// master key sits outside its own key file.
func TestNoPlaintextSecrets(t *testing.T) {
	t.Parallel()
	d := startKMD(t)

	textMarker := []byte(hex.EncodeToString(randomBytes(16))) // 32 hex chars
	binMarker := randomBytes(32)
	binMarker[0], binMarker[1] = 0xff, 0x00 // not text for sure
	embedded := append(append([]byte("user=admin password="), textMarker...), '\n')

	for _, dom := range []string{"S3", "FTP", "SSO", "SED"} {
		d.put(dom, "text-secret", textMarker)
		d.put(dom, "binary-secret", binMarker)
		d.put(dom, "embedded-secret", embedded)
	}
	d.importEntries("JWT", map[string][]byte{"imported-text": textMarker, "imported-binary": binMarker})
	// A value replaced and one deleted: their old ciphertext may linger in
	// free pages, but never a plaintext.
	d.put("CELOG", "replaced", textMarker)
	d.put("CELOG", "replaced", []byte("something else"))
	d.put("CELOG", "deleted", binMarker)
	d.must("entry", "delete", "CELOG", "deleted")

	d.must("cluster", "rekey", "start", "--yes", "--wait")
	d.must("sed", "rekey", "start", "--yes", "--wait")
	d.must("cluster", "rekey", "start", "--domain", "S3", "--yes", "--wait")

	// Failed requests that carry a secret.
	b64 := base64.StdEncoding.EncodeToString
	for _, in := range []string{
		fmt.Sprintf(`{"name":"ok","value":%q}`+"\n"+`{"name":"bad\u0001","value":%q}`+"\n", b64(textMarker), b64(binMarker)),
		fmt.Sprintf(`{"name":"ok","value":%q,"extra":%q}`+"\n", b64(binMarker), textMarker),
		fmt.Sprintf(`{"name":"ok","value":%q}`+"\n"+`{"name":"ok","value":%q}`+"\n", b64(textMarker), b64(binMarker)),
		fmt.Sprintf(`{"name":"big","value":%q}`+"\n", b64(bytes.Repeat(textMarker, 3000))),
		fmt.Sprintf(`{"name":"x","value":"%s!"}`+"\n", b64(binMarker)),
		string(textMarker) + "\n",
	} {
		if _, _, code := d.kmctlIn([]byte(in), "entry", "import", "NDMP"); code == 0 {
			t.Errorf("a bad import was accepted")
		}
	}
	d.kmctlIn(bytes.Repeat(binMarker, 3000), "entry", "put", "NDMP", "too-big")
	d.kmctlIn(textMarker, "entry", "put", "NOPE", "x")
	d.kmctlIn(textMarker, "entry", "put", "S3", "bad\x01name")
	d.kmctl("entry", "get", "S3", "missing")

	// The secrets are still there for an authorised caller.
	for _, dom := range []string{"S3", "FTP", "SSO", "SED"} {
		d.checkGets(dom, []string{"text-secret", "binary-secret", "embedded-secret"},
			map[string][]byte{"text-secret": textMarker, "binary-secret": binMarker, "embedded-secret": embedded})
	}
	d.stop()

	var needles []needle
	add := func(what string, secret []byte) {
		needles = append(needles, needle{what, secret}, needle{what + " (hex)", []byte(hex.EncodeToString(secret))})
		for _, f := range b64Forms(secret) {
			needles = append(needles, needle{what + " (base64)", []byte(f)})
		}
	}
	add("text marker", textMarker)
	needles = append(needles, needle{"text marker (upper case)", bytes.ToUpper(textMarker)})
	add("binary marker", binMarker)

	files := allFiles(t, d.root)
	if len(files) < 20 {
		t.Fatalf("found only %d files under %s", len(files), d.root)
	}
	names := 0 // control: entry names are not secret and are found
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("embedded-secret")) {
			names++
		}
		for _, n := range needles {
			if bytes.Contains(b, n.b) {
				t.Errorf("%s holds the %s", f, n.what)
			}
		}
	}

	if names == 0 {
		t.Errorf("no file holds the entry name embedded-secret: the scan does not see the stores")
	}

	// Master keys: each key file's material appears in no other file.
	keyFiles, err := filepath.Glob(filepath.Join(d.dataDir, "keys", "*", "*.key"))
	if err != nil || len(keyFiles) != 18 {
		t.Fatalf("key files: %v, %v; want 18", keyFiles, err)
	}
	for _, kf := range keyFiles {
		m := keyMaterial(t, kf)
		if m == nil {
			continue
		}
		for _, f := range files {
			if f == kf {
				continue
			}
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, m) || bytes.Contains(b, []byte(hex.EncodeToString(m))) ||
				bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(m)[:40])) {
				t.Errorf("%s holds the master key of %s", f, kf)
			}
		}
	}
}

type needle struct {
	what string
	b    []byte
}

// allFiles lists every regular file under dir.
func allFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// keyMaterial returns the 32 bytes of key material of a local key file:
// a magic header starting "KMDMK", the material, a 16-byte checksum
// (provider/local.go). nil, logged, if the file is not laid out so.
func keyMaterial(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const magic, material, sum = 6, 32, 16
	if len(b) != magic+material+sum || !strings.HasPrefix(string(b), "KMDMK") {
		t.Logf("key file %s: %d bytes, not the layout this test knows; its material is not looked for", path, len(b))
		return nil
	}
	return b[magic : magic+material]
}
