package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scratchFS is a small filesystem the test mounts on a kmd's data dir, so
// that it can fill it up or make it read-only under a running kmd.
type scratchFS struct {
	t    *testing.T
	dir  string // the mount point: the daemon's data dir
	img  string // ext4 only: the image file
	loop string // ext4 only: the loop device
}

// needMounts skips the test when it cannot mount filesystems: not root,
// or a tool missing. CI runs as root on a machine that has them all.
func needMounts(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a scratch filesystem under kmd's data dir")
	}
	for _, tool := range append([]string{"mount", "umount"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to mount a scratch filesystem: %v", tool, err)
		}
	}
}

// sh runs a command for the mount helpers and returns its output.
func runTool(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// mountTmpfs mounts a tmpfs of size bytes on d's data dir (kmd not yet
// started). It is unmounted when the test ends, pass or fail, after kmd is
// stopped.
func mountTmpfs(t *testing.T, d *daemon, size int64) *scratchFS {
	t.Helper()
	needMounts(t)
	fs := &scratchFS{t: t, dir: d.dataDir}
	if err := os.MkdirAll(fs.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := runTool("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", fs.dir); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { fs.cleanup(d) })
	return fs
}

// mountExt4 makes an ext4 image of sizeMiB in d's root, attaches it to a
// loop device and mounts it with errors=remount-ro on d's data dir. All of
// it is undone when the test ends, pass or fail, after kmd is stopped.
func mountExt4(t *testing.T, d *daemon, sizeMiB int) *scratchFS {
	t.Helper()
	needMounts(t, "mkfs.ext4", "losetup", "e2fsck")
	fs := &scratchFS{t: t, dir: d.dataDir, img: filepath.Join(d.root, "data.img")}
	if err := os.MkdirAll(fs.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(createEmpty(t, fs.img), int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	// -m 0: root (kmd here) gets no reserved blocks, so full means full.
	if _, err := runTool("mkfs.ext4", "-q", "-F", "-m", "0", fs.img); err != nil {
		t.Fatal(err)
	}
	out, err := runTool("losetup", "-f", "--show", fs.img)
	if err != nil {
		t.Skipf("cannot attach a loop device here: %v", err)
	}
	fs.loop = strings.TrimSpace(out)
	t.Cleanup(func() { fs.cleanup(d) })
	if err := fs.mount(); err != nil {
		t.Skipf("cannot mount an ext4 loop device here: %v", err)
	}
	return fs
}

func createEmpty(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func (fs *scratchFS) mount() error {
	_, err := runTool("mount", "-t", "ext4", "-o", "errors=remount-ro", fs.loop, fs.dir)
	return err
}

// unmount unmounts the filesystem, waiting (bounded) for the last users
// of it to let go.
func (fs *scratchFS) unmount() error {
	var err error
	waitUntil(10*time.Second, func() bool {
		_, err = runTool("umount", fs.dir)
		return err == nil || !fs.mounted()
	})
	return err
}

// mounted reports whether something is mounted on fs.dir.
func (fs *scratchFS) mounted() bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, l := range lines(string(b)) {
		if f := strings.Fields(l); len(f) > 1 && f[1] == fs.dir {
			return true
		}
	}
	return false
}

// cleanup stops kmd if it still runs, unmounts and detaches.
func (fs *scratchFS) cleanup(d *daemon) {
	if d.isRunning() {
		d.stop()
	}
	if fs.mounted() {
		if err := fs.unmount(); err != nil {
			fs.t.Errorf("unmount %s: %v; detaching it lazily", fs.dir, err)
			runTool("umount", "-l", fs.dir)
		}
	}
	if fs.loop != "" {
		if _, err := runTool("losetup", "-d", fs.loop); err != nil {
			fs.t.Errorf("detach %s: %v", fs.loop, err)
		}
	}
}

// fill writes files named fill-N in the filesystem until it has no room
// left but leave bytes (leave rounded to the filesystem's blocks), and
// returns their paths.
func (fs *scratchFS) fill(leave int64) []string {
	fs.t.Helper()
	var made []string
	gap := ""
	if leave > 0 {
		gap = fs.fillFile(leave)
	}
	made = append(made, fs.fillFile(-1))
	if gap != "" {
		if err := os.Remove(gap); err != nil {
			fs.t.Fatal(err)
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(fs.dir, &st); err == nil {
		fs.t.Logf("filled %s: %d bytes free", fs.dir, int64(st.Bavail)*st.Bsize)
	}
	return made
}

// fillFile writes a new file of n bytes, or (n < 0) until ENOSPC, and
// fsyncs it so that the filesystem has really handed out its blocks.
func (fs *scratchFS) fillFile(n int64) string {
	fs.t.Helper()
	f, err := os.CreateTemp(fs.dir, "fill-")
	if err != nil {
		fs.t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xA5}, 1<<20)
	for written := int64(0); n < 0 || written < n; {
		b := chunk
		if n >= 0 {
			b = chunk[:min(int64(len(chunk)), n-written)]
		}
		k, err := f.Write(b)
		written += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			if n >= 0 {
				fs.t.Fatalf("%s: no room for %d bytes", fs.dir, n)
			}
			if len(chunk) > 4096 {
				chunk = chunk[:4096] // the last blocks, one at a time
				continue
			}
			break
		}
		if err != nil {
			fs.t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		fs.t.Fatal(err)
	}
	return f.Name()
}

// writable reports whether a new file can be written in the filesystem.
func (fs *scratchFS) writable() bool {
	p := filepath.Join(fs.dir, "probe")
	err := os.WriteFile(p, []byte("probe"), 0o600)
	if err == nil {
		err = os.Remove(p)
	}
	return err == nil
}

// abortToReadOnly makes the mounted ext4 read-only under kmd's feet, the
// way a failing disk does: an injected filesystem error, which
// errors=remount-ro turns into a read-only filesystem (remount,ro would be
// refused with EBUSY while kmd holds files open for writing). Where the
// kernel lacks trigger_fs_error, the loop device is made read-only and a
// write makes ext4 abort its journal.
func (fs *scratchFS) abortToReadOnly() {
	fs.t.Helper()
	trigger := filepath.Join("/sys/fs/ext4", filepath.Base(fs.loop), "trigger_fs_error")
	if err := os.WriteFile(trigger, []byte("1\n"), 0o200); err != nil {
		fs.t.Logf("trigger_fs_error: %v; using blockdev --setro", err)
		if _, err := runTool("blockdev", "--setro", fs.loop); err != nil {
			fs.t.Fatal(err)
		}
		os.WriteFile(filepath.Join(fs.dir, "probe"), []byte("probe"), 0o600)
		syscall.Sync()
	}
	if !waitUntil(10*time.Second, func() bool { return !fs.writable() }) {
		fs.t.Fatalf("%s still takes writes after the injected error", fs.dir)
	}
}

// repair unmounts the read-only filesystem (kmd stopped), checks it and
// mounts it read-write again.
func (fs *scratchFS) repair() {
	fs.t.Helper()
	if err := fs.unmount(); err != nil {
		fs.t.Fatal(err)
	}
	runTool("blockdev", "--setrw", fs.loop)
	// e2fsck exits 1 when it corrected something: that is expected here.
	if out, err := exec.Command("e2fsck", "-f", "-y", fs.loop).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			fs.t.Fatalf("e2fsck %s: %v\n%s", fs.loop, err, out)
		}
	}
	if err := fs.mount(); err != nil {
		fs.t.Fatal(err)
	}
	if !fs.writable() {
		fs.t.Fatalf("%s not writable after e2fsck and mount", fs.dir)
	}
}

// bigEntries makes n entries named prefix000001… with deterministic values
// of size bytes each: a rekey of them writes size×n bytes of WAL.
func bigEntries(prefix string, n, valueSize int) map[string][]byte {
	m := make(map[string][]byte, n)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s%06d", prefix, i)
		v := make([]byte, 0, valueSize+sha256.Size)
		for sum := sha256.Sum256([]byte(name)); len(v) < valueSize; sum = sha256.Sum256(sum[:]) {
			v = append(v, sum[:]...)
		}
		m[name] = v[:valueSize]
	}
	return m
}

// diskFullText reports whether an error message says that the disk is full.
func diskFullText(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "disk is full") || strings.Contains(s, "no space left") || strings.Contains(s, "is full")
}

// readOnlyText reports whether an error message says the filesystem refuses writes.
func readOnlyText(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "read-only") || strings.Contains(s, "i/o error")
}

// checkReads checks that kmd answers every read of domain while its disk
// refuses writes: status, list, a sample of gets, and an export equal to
// want.
func checkReads(d *daemon, domain string, want map[string][]byte) {
	d.t.Helper()
	if r := d.clusterStatus().row(d.t, domain); r.Entries != int64(len(want)) {
		d.t.Errorf("%s status shows %d entries, want %d", domain, r.Entries, len(want))
	}
	if names := d.list(domain); !slices.Equal(names, sortedKeys(want)) {
		d.t.Errorf("entry list %s: %d names, want the %d written", domain, len(names), len(want))
	}
	d.checkGets(domain, sample(sortedKeys(want), 5), want)
	d.checkExport(domain, want)
}

// fileBytes reads a file, failing the test if it cannot.
func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return b
}

// TestDiskFull runs a rekey on a data dir whose filesystem (a tmpfs of
// its own) has room for the rekey's start but not for its WAL. It proves
// that the rekey fails with an error saying the disk is full, that nothing
// is lost and no MK destroyed, that kmd answers reads (and refuses a new
// rekey saying why) while the disk is completely full, and that once
// space is freed the retry completes with exactly one MK left.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	step := stepper(t)
	d := newDaemon(t, kmdOptions{args: []string{"--retry-interval", "2s"}})
	fs := mountTmpfs(t, d, 64<<20)
	d.start()
	// 512-byte values: one rewrap batch (1000 entries) needs over 500 KiB
	// of WAL, far more than the room left below.
	s3 := bigEntries("df/", size(1500, 20000), 512)
	d.importEntries("S3", s3)
	ftp := genEntries("ftp/", 20)
	d.importEntries("FTP", ftp)
	// A restart checkpoints and drops the WAL that the import grew: the
	// rekey's WAL must then grow from nothing.
	d.restart()
	step("imported")
	keyBefore := d.clusterStatus().row(t, "S3").KeyID
	keyPath := filepath.Join(d.dataDir, "keys", "S3", keyBefore+".key")
	keyBytes := fileBytes(t, keyPath)
	ftpKey := d.clusterStatus().row(t, "FTP").KeyID
	started := d.events()

	// Room for the rekey's start, its new MK and the switch; not for a batch.
	fillers := fs.fill(256 << 10)
	tally(t, "faults", 1)
	d.must("cluster", "rekey", "start", "--domain", "S3", "--yes")
	r := d.waitDomain("S3", time.Minute, "FAILED", func(r domainRow) bool { return r.Status == "FAILED" })
	step("rekey failed: " + r.Error)
	if !diskFullText(r.Error) || r.NextRetry == nil || r.Entries != int64(len(s3)) {
		t.Errorf("S3 after its rekey ran out of disk: error %q, next_retry %v, %d entries; want an error saying the disk is full, a retry time, %d entries",
			r.Error, r.NextRetry, r.Entries, len(s3))
	}
	if files := d.keyFiles("S3"); !slices.Contains(files, keyBefore+".key") || len(files) > 2 {
		t.Errorf("keys/S3 holds %v while the rekey fails; want the old key %s.key and at most the new one", files, keyBefore)
	} else if !bytes.Equal(fileBytes(t, keyPath), keyBytes) {
		t.Errorf("the old key file of S3 changed while the rekey failed")
	}

	// Now completely full.
	fillers = append(fillers, fs.fill(0)...)
	tally(t, "faults", 1)
	checkReads(d, "S3", s3)
	checkReads(d, "FTP", ftp)
	_, stderr, code := d.kmctl("cluster", "rekey", "start", "--domain", "FTP", "--yes")
	if code != 1 || !diskFullText(stderr) || strings.Contains(stderr, "internal error") {
		t.Errorf("rekey start of FTP on a full disk: exit %d, want 1 saying the disk is full; stderr:\n%s", code, stderr)
	}
	cs := d.clusterStatus()
	if row := cs.row(t, "FTP"); row.Status != "ACTIVE" || row.KeyID != ftpKey {
		t.Errorf("FTP after its refused start on a full disk: %+v, want ACTIVE under its key", row)
	}
	if row := cs.row(t, "S3"); row.Status == "ACTIVE" {
		t.Errorf("S3 completed its rekey on a full disk: %+v", row)
	}
	if files := d.keyFiles("S3"); !slices.Contains(files, keyBefore+".key") {
		t.Errorf("keys/S3 holds %v on a full disk; the old key is gone", files)
	}
	step("read while full")

	for _, f := range fillers {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	r = d.waitDomain("S3", time.Minute, "ACTIVE under a new key", func(r domainRow) bool {
		return r.Status == "ACTIVE" && r.Rekey == nil && r.KeyID != keyBefore
	})
	step("retry completed")
	if r.Error != "" || r.NextRetry != nil || r.Entries != int64(len(s3)) {
		t.Errorf("S3 after the retry: %+v; want no error, no retry, %d entries", r, len(s3))
	}
	if files := d.keyFiles("S3"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
		t.Errorf("keys/S3 holds %v after the retry, want only %s.key", files, r.KeyID)
	}
	d.checkExport("S3", s3)
	d.checkExport("FTP", ftp)
	evs := d.events()
	if n := countEvents(evs, "KeyManagerRekeyCompleted", "S3") - countEvents(started, "KeyManagerRekeyCompleted", "S3"); n != 1 {
		t.Errorf("%d KeyManagerRekeyCompleted events for S3, want 1", n)
	}
	failed := 0
	for _, e := range evs {
		if e.Name == "KeyManagerRekeyFailed" && e.Domain == "S3" {
			failed++
			if !diskFullText(e.Error) {
				t.Errorf("KeyManagerRekeyFailed event of S3 with error %q, want it to say the disk is full", e.Error)
			}
		}
	}
	if failed == 0 {
		t.Errorf("no KeyManagerRekeyFailed event for S3's rekey that ran out of disk")
	}
	if row := d.clusterStatus().row(t, "FTP"); row.Status != "ACTIVE" || row.KeyID != ftpKey {
		t.Errorf("FTP at the end: %+v, want ACTIVE under its key", row)
	}
}

// TestReadOnlyDataDir makes the data dir's filesystem (an ext4 image on a
// loop device) read-only in the middle of a rekey, as a failing disk does.
// It proves that the rekey fails with a clear error and destroys no MK,
// that reads keep working and a new rekey is refused saying why, and that
// once the filesystem is repaired and kmd restarted the rekey completes
// with nothing lost and one MK left.
func TestReadOnlyDataDir(t *testing.T) {
	t.Parallel()
	step := stepper(t)
	d := newDaemon(t, kmdOptions{args: []string{"--retry-interval", "2s"}})
	fs := mountExt4(t, d, 128)
	d.start()
	s3 := genEntries("ro/", size(5000, 50000))
	d.importEntries("S3", s3)
	ftp := genEntries("ftp/", 20)
	d.importEntries("FTP", ftp)
	step("imported")
	keyBefore := d.clusterStatus().row(t, "S3").KeyID
	keyPath := filepath.Join(d.dataDir, "keys", "S3", keyBefore+".key")
	keyBytes := fileBytes(t, keyPath)
	ftpKey := d.clusterStatus().row(t, "FTP").KeyID

	// The rekey of thousands of entries takes far longer than the moment
	// between its start's answer and the injected error.
	d.must("cluster", "rekey", "start", "--domain", "S3", "--yes")
	fs.abortToReadOnly()
	tally(t, "faults", 1)
	r := d.waitDomain("S3", time.Minute, "FAILED", func(r domainRow) bool { return r.Status != "IN_PROGRESS" })
	if r.Status != "FAILED" {
		t.Fatalf("S3 after its filesystem went read-only under its rekey: %+v, want FAILED", r)
	}
	step("rekey failed: " + r.Error)
	if !readOnlyText(r.Error) || !strings.Contains(r.Error, "S3") {
		t.Errorf("S3 error %q after its filesystem went read-only, want one naming S3 and saying the filesystem is read-only or failing", r.Error)
	}
	if !slices.Contains(d.keyFiles("S3"), keyBefore+".key") || !bytes.Equal(fileBytes(t, keyPath), keyBytes) {
		t.Errorf("the old key file of S3 is gone or changed after the filesystem went read-only")
	}
	checkReads(d, "S3", s3)
	checkReads(d, "FTP", ftp)
	_, stderr, code := d.kmctl("cluster", "rekey", "start", "--domain", "FTP", "--yes")
	if code != 1 || !readOnlyText(stderr) || strings.Contains(stderr, "internal error") {
		t.Errorf("rekey start of FTP on a read-only filesystem: exit %d, want 1 saying the filesystem is read-only or failing; stderr:\n%s", code, stderr)
	}
	if row := d.clusterStatus().row(t, "FTP"); row.Status != "ACTIVE" || row.KeyID != ftpKey {
		t.Errorf("FTP on a read-only filesystem: %+v, want ACTIVE under its key", row)
	}
	step("read while read-only")

	d.stop()
	fs.repair()
	if !slices.Contains(d.keyFiles("S3"), keyBefore+".key") {
		t.Fatalf("the old key file of S3 did not survive the read-only filesystem and e2fsck")
	}
	d.start()
	// The interrupted rekey resumes at start, or is retried within 2s.
	r = d.waitDomain("S3", 2*time.Minute, "ACTIVE under a new key", func(r domainRow) bool {
		return r.Status == "ACTIVE" && r.Rekey == nil && r.KeyID != keyBefore
	})
	step("rekey completed after repair")
	if r.Error != "" || r.Entries != int64(len(s3)) {
		t.Errorf("S3 after the repair: %+v; want no error and %d entries", r, len(s3))
	}
	if files := d.keyFiles("S3"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
		t.Errorf("keys/S3 holds %v after the rekey, want only %s.key", files, r.KeyID)
	}
	d.checkExport("S3", s3)
	d.checkExport("FTP", ftp)
	if n := countEvents(d.events(), "KeyManagerRekeyCompleted", "S3"); n != 1 {
		t.Errorf("%d KeyManagerRekeyCompleted events for S3, want 1", n)
	}
	if row := d.clusterStatus().row(t, "FTP"); row.Status != "ACTIVE" || row.KeyID != ftpKey {
		t.Errorf("FTP after the repair: %+v, want ACTIVE under its key", row)
	}
	d.put("FTP", "after-repair", []byte("writable again"))
}
