package provider

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

const (
	// KeySize is the size of a master key: AES-256.
	KeySize = 32
	// MaxValueSize is the largest entry value accepted.
	MaxValueSize = 64 << 10
	// MaxNameSize is the longest entry name accepted, in bytes.
	MaxNameSize = 255

	sealVersion = 1
	nonceSize   = 12
	// SealOverhead is how many bytes sealing adds to a value.
	SealOverhead = 1 + nonceSize + 16
)

// Key is an MK's material in memory with its ID. It never prints its
// material: fmt verbs and zap see only the ID.
type Key struct {
	id   string
	aead cipher.AEAD
	fp   string
}

// NewKey wraps 32 bytes of material. The slice is not retained.
func NewKey(id string, material []byte) (*Key, error) {
	if len(material) != KeySize {
		return nil, fmt.Errorf("key %s: material is %d bytes, want %d: %w", id, len(material), KeySize, ErrKeyCorrupt)
	}
	block, err := aes.NewCipher(material)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Key{id: id, aead: aead, fp: Fingerprint(material)}, nil
}

// GenerateKeyMaterial returns 32 bytes from crypto/rand.
func GenerateKeyMaterial() ([]byte, error) {
	b := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return b, nil
}

// Fingerprint is a one-way, keyed digest of an MK: HMAC-SHA-256 keyed by the
// material over a fixed label, first 16 bytes in hex. It identifies a key
// and detects damaged material without revealing anything of it.
func Fingerprint(material []byte) string {
	m := hmac.New(sha256.New, material)
	m.Write([]byte("kmd master key fingerprint v1"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// ID returns the key's ID.
func (k *Key) ID() string { return k.id }

// Fingerprint returns the key's fingerprint.
func (k *Key) Fingerprint() string { return k.fp }

// String and Format never reveal material.
func (k *Key) String() string { return "mk:" + k.id }

// Format implements fmt.Formatter so that %v, %+v, %#v print only the ID.
func (k *Key) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// adSize is additionalData's length. (A fixed-size array would escape to
// the heap through the AEAD interface anyway, at 512 bytes a call.)
func adSize(domain, name, keyID string) int { return 4 + 6 + len(domain) + len(name) + len(keyID) }

// additionalData binds a ciphertext to its domain, entry name and MK ID.
// Each part is length-prefixed so no two triples share an encoding.
func additionalData(dst []byte, domain, name, keyID string) []byte {
	dst = append(dst, "kmd1"...)
	for _, s := range [...]string{domain, name, keyID} {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// Seal encrypts value for entry name of domain, appending to dst.
// Layout: version(1) | nonce(12) | ciphertext+tag.
func (k *Key) Seal(dst []byte, domain, name string, value []byte) ([]byte, error) {
	ad := additionalData(make([]byte, 0, adSize(domain, name, k.id)), domain, name, k.id)
	start := len(dst)
	dst = append(dst, sealVersion)
	dst = append(dst, make([]byte, nonceSize)...)
	nonce := dst[start+1 : start+1+nonceSize]
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return k.aead.Seal(dst, nonce, value, ad), nil
}

// Open decrypts a sealed value of entry name of domain, appending to dst.
// It fails with ErrOpen if the ciphertext was altered or moved to another
// row, domain or key.
func (k *Key) Open(dst []byte, domain, name string, sealed []byte) ([]byte, error) {
	if len(sealed) < SealOverhead || sealed[0] != sealVersion {
		return nil, ErrOpen
	}
	ad := additionalData(make([]byte, 0, adSize(domain, name, k.id)), domain, name, k.id)
	out, err := k.aead.Open(dst, sealed[1:1+nonceSize], sealed[1+nonceSize:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// ValidateName checks an entry name: 1–255 bytes of printable UTF-8.
func ValidateName(name string) error {
	if len(name) == 0 {
		return fmt.Errorf("%w: empty; want 1-%d bytes of printable UTF-8", ErrInvalidName, MaxNameSize)
	}
	if len(name) > MaxNameSize {
		return fmt.Errorf("%w: %d bytes; want at most %d", ErrInvalidName, len(name), MaxNameSize)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	for i, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: non-printable character %U at byte %d", ErrInvalidName, r, i)
		}
	}
	return nil
}

// ValidateValue checks an entry value's size.
func ValidateValue(value []byte) error {
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes; want at most %d (64 KiB)", ErrValueTooLarge, len(value), MaxValueSize)
	}
	return nil
}
