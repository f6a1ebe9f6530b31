package provider_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/provider/providertest"
)

// newKey returns a key of fresh material and that material.
func newKey(t testing.TB, id string) (*provider.Key, []byte) {
	t.Helper()
	m, err := provider.GenerateKeyMaterial()
	if err != nil {
		t.Fatal(err)
	}
	k, err := provider.NewKey(id, m)
	if err != nil {
		t.Fatal(err)
	}
	return k, m
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestSeal_RoundTrip(t *testing.T) {
	k, _ := newKey(t, "k1")
	for _, size := range []int{0, 1, 15, 16, 17, 255, 64 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			value := pattern(size)
			sealed, err := k.Seal(nil, "S3", "ftp/password", value)
			if err != nil {
				t.Fatal(err)
			}
			if len(sealed) != size+provider.SealOverhead {
				t.Errorf("sealed %d bytes into %d, want %d", size, len(sealed), size+provider.SealOverhead)
			}
			if size >= 16 && bytes.Contains(sealed, value[:16]) {
				t.Errorf("the sealed value holds the plaintext")
			}
			got, err := k.Open(nil, "S3", "ftp/password", sealed)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, value) {
				t.Fatalf("Open returned other bytes")
			}
		})
	}
}

func TestSeal_AppendsToDst(t *testing.T) {
	k, _ := newKey(t, "k1")
	value := []byte("secret value")
	sealed, err := k.Seal([]byte("hdr"), "S3", "n", value)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sealed, []byte("hdr")) {
		t.Fatalf("Seal did not append to dst: %q", sealed[:3])
	}
	got, err := k.Open([]byte("out:"), "S3", "n", sealed[3:])
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "out:secret value" {
		t.Fatalf("Open did not append to dst: %q", got)
	}
	// Reusing the capacity of a buffer must not disturb earlier values.
	buf := make([]byte, 0, 4*(len(value)+provider.SealOverhead))
	var parts [][]byte
	for i := range 4 {
		n := len(buf)
		buf, err = k.Seal(buf, "S3", fmt.Sprint("n", i), value)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, buf[n:])
	}
	for i, p := range parts {
		if got, err := k.Open(nil, "S3", fmt.Sprint("n", i), p); err != nil || !bytes.Equal(got, value) {
			t.Errorf("value %d sealed into a shared buffer: Open = %q, %v", i, got, err)
		}
	}
}

func TestSeal_NonceIsRandom(t *testing.T) {
	k, _ := newKey(t, "k1")
	seen := map[string]bool{}
	nonces := map[string]bool{}
	for range 64 {
		s, err := k.Seal(nil, "S3", "n", []byte("same value"))
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(s)] {
			t.Fatal("two seals of the same value are equal")
		}
		seen[string(s)] = true
		nonce := string(s[1 : provider.SealOverhead-16])
		if nonces[nonce] {
			t.Fatal("two seals share a nonce")
		}
		nonces[nonce] = true
	}
}

func TestOpen_FailsOutOfPlace(t *testing.T) {
	k, m := newKey(t, "k1")
	sameMaterialOtherID, err := provider.NewKey("k2", m)
	if err != nil {
		t.Fatal(err)
	}
	otherMaterialSameID, _ := newKey(t, "k1")
	sealed, err := k.Seal(nil, "S3", "ftp/password", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	// Parts that would run together without their length prefixes.
	joined, err := k.Seal(nil, "ab", "c", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		desc         string
		key          *provider.Key
		domain, name string
		sealed       []byte
	}{
		{"another domain", k, "FTP", "ftp/password", sealed},
		{"another name", k, "S3", "ftp/password2", sealed},
		{"name case", k, "S3", "FTP/password", sealed},
		{"empty domain", k, "", "ftp/password", sealed},
		{"another key id, same material", sameMaterialOtherID, "S3", "ftp/password", sealed},
		{"same key id, another material", otherMaterialSameID, "S3", "ftp/password", sealed},
		{"domain|name boundary moved", k, "a", "bc", joined},
		{"empty", k, "S3", "ftp/password", nil},
		{"overhead only", k, "S3", "ftp/password", sealed[:provider.SealOverhead-1]},
		{"truncated tag", k, "S3", "ftp/password", sealed[:len(sealed)-1]},
		{"extra byte", k, "S3", "ftp/password", append(bytes.Clone(sealed), 0)},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			got, err := c.key.Open(nil, c.domain, c.name, c.sealed)
			if !errors.Is(err, provider.ErrOpen) {
				t.Fatalf("Open = (%q, %v), want ErrOpen", got, err)
			}
			if got != nil {
				t.Errorf("Open failed but returned %q", got)
			}
		})
	}
	if got, err := k.Open(nil, "ab", "c", joined); err != nil || string(got) != "v" {
		t.Fatalf("the control value does not open: %v", err)
	}
}

func TestOpen_EveryFlippedByteFails(t *testing.T) {
	k, _ := newKey(t, "k1")
	sealed, err := k.Seal(nil, "S3", "n", []byte("short"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(sealed)
			b[i] ^= bit
			if got, err := k.Open(nil, "S3", "n", b); !errors.Is(err, provider.ErrOpen) {
				t.Errorf("byte %d ^ %#x: Open = (%q, %v), want ErrOpen", i, bit, got, err)
			}
		}
	}
	if _, err := k.Open(nil, "S3", "n", sealed); err != nil {
		t.Fatalf("the unflipped ciphertext does not open: %v", err)
	}
}

func TestNewKey_Size(t *testing.T) {
	for _, n := range []int{0, 1, 16, 24, 31, 33, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			m := pattern(n)
			k, err := provider.NewKey("k1", m)
			if !errors.Is(err, provider.ErrKeyCorrupt) {
				t.Fatalf("NewKey of %d bytes = (%v, %v), want ErrKeyCorrupt", n, k, err)
			}
			if n >= 8 {
				noLeak(t, err, m)
			}
		})
	}
	if _, err := provider.NewKey("k1", pattern(32)); err != nil {
		t.Fatalf("NewKey of 32 bytes: %v", err)
	}
}

func TestNewKey_DoesNotRetainMaterial(t *testing.T) {
	m := pattern(32)
	k, err := provider.NewKey("k1", m)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal(nil, "S3", "n", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	clear(m)
	if got, err := k.Open(nil, "S3", "n", sealed); err != nil || string(got) != "v" {
		t.Fatalf("after the caller cleared the material, Open = %q, %v", got, err)
	}
	if k.Fingerprint() != provider.Fingerprint(pattern(32)) {
		t.Error("the fingerprint changed when the caller cleared the material")
	}
}

func TestGenerateKeyMaterial(t *testing.T) {
	a, err := provider.GenerateKeyMaterial()
	if err != nil {
		t.Fatal(err)
	}
	b, err := provider.GenerateKeyMaterial()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != provider.KeySize || len(b) != provider.KeySize {
		t.Fatalf("lengths %d, %d, want %d", len(a), len(b), provider.KeySize)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two keys are equal")
	}
}

type holder struct {
	Name string
	Key  *provider.Key
	key  *provider.Key
	Keys []*provider.Key
	Map  map[string]*provider.Key
}

func TestKey_FormatNeverShowsMaterial(t *testing.T) {
	k, m := newKey(t, "mk-42")
	h := holder{Name: "x", Key: k, key: k, Keys: []*provider.Key{k}, Map: map[string]*provider.Key{"a": k}}
	cases := map[string]string{
		"verbs":             fmt.Sprintf("%v %+v %#v %s", k, k, k, k),
		"other verbs":       fmt.Sprintf("%x %X %q %d %T", k, k, k, k, k),
		"holder %+v":        fmt.Sprintf("%+v", h),
		"holder %#v":        fmt.Sprintf("%#v", h),
		"holder %v":         fmt.Sprintf("%v", h),
		"pointer to holder": fmt.Sprintf("%+v", &h),
		"dereferenced key":  fmt.Sprintf("%v %+v %#v", *k, *k, *k),
		"error wrapping":    fmt.Errorf("op on %v: %w", k, errors.New("x")).Error(),
		"String":            k.String(),
	}
	for name, s := range cases {
		if how := providertest.Leaks(s, m); how != "" {
			t.Errorf("%s: %q reveals the material (%s)", name, s, how)
		}
		if strings.Contains(s, k.Fingerprint()) && name != "dereferenced key" {
			t.Errorf("%s: %q shows the fingerprint; want only the ID", name, s)
		}
	}
	if got := fmt.Sprintf("%v|%+v|%#v|%s", k, k, k, k); got != "mk:mk-42|mk:mk-42|mk:mk-42|mk:mk-42" {
		t.Errorf("formatted key = %q, want its ID", got)
	}
	if !strings.Contains(cases["holder %+v"], "Key:mk:mk-42") {
		t.Errorf("holder %%+v = %q, want the key shown by ID", cases["holder %+v"])
	}
	if k.ID() != "mk-42" {
		t.Errorf("ID() = %q", k.ID())
	}
}

func TestFingerprint(t *testing.T) {
	a, b := pattern(32), pattern(32)
	b[31] ^= 1
	fa := provider.Fingerprint(a)
	if fa != provider.Fingerprint(bytes.Clone(a)) {
		t.Error("Fingerprint is not deterministic")
	}
	if len(fa) != 32 {
		t.Errorf("Fingerprint is %d characters, want 32", len(fa))
	}
	if _, err := hex.DecodeString(fa); err != nil || strings.ToLower(fa) != fa {
		t.Errorf("Fingerprint %q is not lower-case hex", fa)
	}
	if fa == provider.Fingerprint(b) {
		t.Error("keys that differ in one bit have the same fingerprint")
	}
	for _, m := range [][]byte{a, b, pattern(32)} {
		if how := providertest.Leaks(provider.Fingerprint(m), m); how != "" {
			t.Errorf("Fingerprint reveals the material (%s)", how)
		}
	}
	k, err := provider.NewKey("k1", a)
	if err != nil {
		t.Fatal(err)
	}
	if k.Fingerprint() != fa {
		t.Errorf("Key.Fingerprint = %q, want Fingerprint(material) %q", k.Fingerprint(), fa)
	}
	// A fingerprint is not a plain hash of the material.
	if strings.Contains(hex.EncodeToString(sha256Sum(a)), fa) {
		t.Error("Fingerprint is the unkeyed SHA-256 of the material")
	}
}

func TestValidateName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"", false},
		{"a", true},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("é", 127) + "a", true}, // 255 bytes, 128 runes
		{strings.Repeat("é", 128), false},      // 256 bytes, 128 runes
		{"\xff", false},
		{"ab\xc3", false}, // truncated sequence
		{"\xed\xa0\x80", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\tb", false},
		{"a\rb", false},
		{"a\x7fb", false},
		{"a\u0085b", false},
		{"a\u2028b", false},
		{"a\u200bb", false},
		{"a\ufeffb", false},
		{"ключ/пароль", true},
		{"日本語", true},
		{"🔑", true},
		{"ftp/password", true},
		{"with space", true},
		{" ", true},
		{"a-b_c.d:e@f+g=h", true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.name), func(t *testing.T) {
			err := provider.ValidateName(c.name)
			if c.ok && err != nil {
				t.Errorf("ValidateName(%q) = %v, want nil", c.name, err)
			}
			if !c.ok && !errors.Is(err, provider.ErrInvalidName) {
				t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", c.name, err)
			}
		})
	}
}

func TestValidateValue(t *testing.T) {
	cases := []struct {
		size int
		ok   bool
	}{
		{0, true},
		{1, true},
		{64 << 10, true},
		{64<<10 + 1, false},
		{1 << 20, false},
	}
	for _, c := range cases {
		err := provider.ValidateValue(make([]byte, c.size))
		if c.ok && err != nil {
			t.Errorf("ValidateValue(%d bytes) = %v, want nil", c.size, err)
		}
		if !c.ok && !errors.Is(err, provider.ErrValueTooLarge) {
			t.Errorf("ValidateValue(%d bytes) = %v, want ErrValueTooLarge", c.size, err)
		}
	}
	if err := provider.ValidateValue(nil); err != nil {
		t.Errorf("ValidateValue(nil) = %v", err)
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

const benchValueSize = 256

func BenchmarkSeal(b *testing.B) {
	k, _ := newKey(b, "k1")
	value := pattern(benchValueSize)
	dst := make([]byte, 0, benchValueSize+provider.SealOverhead)
	b.SetBytes(benchValueSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(dst[:0], "S3", "ftp/password", value); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k, _ := newKey(b, "k1")
	sealed, err := k.Seal(nil, "S3", "ftp/password", pattern(benchValueSize))
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, benchValueSize)
	b.SetBytes(benchValueSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(dst[:0], "S3", "ftp/password", sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewrapEntry is the crypto of moving one entry to a new MK, as the
// rekey engine does it: open under the old key, seal under the new one.
func BenchmarkRewrapEntry(b *testing.B) {
	from, _ := newKey(b, "k1")
	to, _ := newKey(b, "k2")
	sealed, err := from.Seal(nil, "S3", "ftp/password", pattern(benchValueSize))
	if err != nil {
		b.Fatal(err)
	}
	plain := make([]byte, 0, benchValueSize)
	out := make([]byte, 0, benchValueSize+provider.SealOverhead)
	b.SetBytes(benchValueSize)
	b.ReportAllocs()
	for b.Loop() {
		p, err := from.Open(plain[:0], "S3", "ftp/password", sealed)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := to.Seal(out[:0], "S3", "ftp/password", p); err != nil {
			b.Fatal(err)
		}
	}
}
