package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Vault is one domain as services see it: a Store plus the MKs loaded in
// memory. Service writes are sealed under the current MK; reads open under
// whichever MK the entry names.
//
// A write holds the vault's read lock from sealing to commit, and Switch
// holds the write lock while it records a new current MK. So no write can
// land under an MK after it stopped being current: a rekey that has switched
// and then finds no entry left under the old MK can destroy it safely.
type Vault struct {
	domain string
	store  Store

	// writes is held shared by every write for as long as it takes, and
	// exclusively by Switch, which so waits for the writes in flight.
	writes sync.RWMutex
	// ring guards the keyring and current for a moment at a time. Reads
	// (Get, Key, Current, status) never wait behind writes: under one
	// mutex, a Switch or DropKey waiting for the writes in flight held up
	// every GET behind it (GETs stalled 110 ms at the end of a 1M rekey,
	// as DropKey waited for eight PUTs' commits in a row).
	ring    sync.RWMutex
	keys    map[string]*Key
	current string
	// unavailable explains why a needed MK is not loaded (nil when all are).
	unavailable error
}

// NewVault returns a vault over store with an empty keyring.
func NewVault(domain string, store Store) *Vault {
	return &Vault{domain: domain, store: store, keys: map[string]*Key{}}
}

// Domain returns the domain's name.
func (v *Vault) Domain() string { return v.domain }

// Store returns the underlying store.
func (v *Vault) Store() Store { return v.store }

// AddKey puts k in the keyring.
func (v *Vault) AddKey(k *Key) {
	v.ring.Lock()
	defer v.ring.Unlock()
	v.keys[k.ID()] = k
}

// DropKey removes an MK from the keyring.
func (v *Vault) DropKey(id string) {
	v.ring.Lock()
	defer v.ring.Unlock()
	delete(v.keys, id)
}

// Key returns a loaded MK, or nil.
func (v *Vault) Key(id string) *Key {
	v.ring.RLock()
	defer v.ring.RUnlock()
	return v.keys[id]
}

// Current returns the current MK's ID ("" before one is set).
func (v *Vault) Current() string {
	v.ring.RLock()
	defer v.ring.RUnlock()
	return v.current
}

// SetUnavailable records why an MK the vault needs could not be loaded;
// nil clears it.
func (v *Vault) SetUnavailable(err error) {
	v.ring.Lock()
	defer v.ring.Unlock()
	v.unavailable = err
}

// Unavailable returns the reason set by SetUnavailable.
func (v *Vault) Unavailable() error {
	v.ring.RLock()
	defer v.ring.RUnlock()
	return v.unavailable
}

// Switch makes id the MK new writes are sealed under. It waits for writes in
// flight, runs persist (which must durably record the switch; if it fails
// nothing changes) and only then lets writes go on under id.
func (v *Vault) Switch(id string, persist func() error) error {
	v.writes.Lock()
	defer v.writes.Unlock()
	if v.Key(id) == nil {
		return fmt.Errorf("switch %s to key %s: %w", v.domain, id, ErrKeyUnavailable)
	}
	if persist != nil {
		if err := persist(); err != nil {
			return err
		}
	}
	v.ring.Lock()
	v.current = id
	v.ring.Unlock()
	return nil
}

// writeKey returns the MK a write seals under, or why it is not loaded.
// v.writes is held, so it stays the current MK until the write is done.
func (v *Vault) writeKey() (*Key, error) {
	v.ring.RLock()
	defer v.ring.RUnlock()
	if k := v.keys[v.current]; k != nil {
		return k, nil
	}
	return nil, v.unavailableErr(v.current)
}

// unavailableErr says key id is not loaded, and why. v.ring is held.
func (v *Vault) unavailableErr(id string) error {
	if v.unavailable != nil {
		return fmt.Errorf("domain %s key %s: %w: %v", v.domain, id, ErrKeyUnavailable, v.unavailable)
	}
	return fmt.Errorf("domain %s key %s: %w", v.domain, id, ErrKeyUnavailable)
}

// Get returns an entry's value and version.
func (v *Vault) Get(ctx context.Context, name string) ([]byte, int64, error) {
	if err := ValidateName(name); err != nil {
		return nil, 0, err
	}
	var e Entry
	var k *Key
	// Twice at most: a rekey may rewrap the row and drop its old MK
	// between our read of the row and our look-up of the key.
	for try := 0; try < 2 && k == nil; try++ {
		var err error
		if e, err = v.store.Get(ctx, name); err != nil {
			return nil, 0, v.named(err, name)
		}
		k = v.Key(e.KeyID)
	}
	if k == nil {
		v.ring.RLock()
		defer v.ring.RUnlock()
		return nil, 0, v.unavailableErr(e.KeyID)
	}
	val, err := k.Open(nil, v.domain, name, e.Sealed)
	if err != nil {
		return nil, 0, &EntryError{Domain: v.domain, Name: name, KeyID: e.KeyID, Err: err}
	}
	return val, e.Version, nil
}

// Put seals value under the current MK and writes it subject to c,
// returning the new version.
func (v *Vault) Put(ctx context.Context, name string, value []byte, c Cond) (int64, error) {
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	if err := ValidateValue(value); err != nil {
		return 0, err
	}
	v.writes.RLock()
	defer v.writes.RUnlock()
	k, err := v.writeKey()
	if err != nil {
		return 0, err
	}
	sealed, err := k.Seal(make([]byte, 0, len(value)+SealOverhead), v.domain, name, value)
	if err != nil {
		return 0, err
	}
	n, err := v.store.Put(ctx, Entry{Name: name, KeyID: k.ID(), Sealed: sealed}, c)
	return n, v.named(err, name)
}

// named adds the entry and domain to the "not found", "exists" and
// "version" errors, so an API answer says which entry it is about.
func (v *Vault) named(err error, name string) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrVersionMismatch) {
		return fmt.Errorf("%w: %q in %s", err, name, v.domain)
	}
	return err
}

// Item is one entry to import.
type Item struct {
	Name  string
	Value []byte
}

// PutAll imports items: see Import.
func (v *Vault) PutAll(ctx context.Context, items []Item) error {
	_, err := v.Import(ctx, Each(items))
	return err
}

// importBatch is how many sealed entries Import hands to the store at once.
const importBatch = 256

// Import seals every item next yields (until io.EOF) under the current MK
// and writes them all in one atomic step: all or none. Items are read,
// validated and sealed on a goroutine of their own while the store writes
// the ones before them, and only a few hundred are held at a time. A bad
// item fails the import with an error naming its position, from 1; next's
// own errors are returned as they are. It returns how many it wrote.
func (v *Vault) Import(ctx context.Context, next func() (Item, error)) (int, error) {
	v.writes.RLock()
	defer v.writes.RUnlock()
	k, err := v.writeKey()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type sealed struct {
		es  []Entry
		err error
	}
	ch := make(chan sealed, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		send := func(b sealed) bool {
			select {
			case ch <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		var es []Entry
		for i := 1; ; i++ {
			it, err := next()
			if errors.Is(err, io.EOF) {
				send(sealed{es: es})
				return
			}
			if err == nil {
				err = errors.Join(ValidateName(it.Name), ValidateValue(it.Value))
				if err != nil {
					err = fmt.Errorf("item %d: %w", i, err)
				}
			}
			if err != nil {
				if send(sealed{es: es}) {
					send(sealed{err: err})
				}
				return
			}
			ct, err := k.Seal(make([]byte, 0, len(it.Value)+SealOverhead), v.domain, it.Name, it.Value)
			if err != nil {
				send(sealed{err: err})
				return
			}
			es = append(es, Entry{Name: it.Name, KeyID: k.ID(), Sealed: ct})
			if len(es) == importBatch {
				if !send(sealed{es: es}) {
					return
				}
				es = nil
			}
		}
	}()
	var cur []Entry
	n, err := v.store.Import(ctx, func() (Entry, error) {
		for len(cur) == 0 {
			b, ok := <-ch
			switch {
			case !ok:
				return Entry{}, io.EOF
			case b.err != nil:
				return Entry{}, b.err
			}
			cur = b.es
		}
		e := cur[0]
		cur = cur[1:]
		return e, nil
	})
	cancel()
	for range ch { // let the sealing goroutine end
	}
	wg.Wait()
	return n, err
}

// Delete removes an entry, at ifVersion when ifVersion > 0.
func (v *Vault) Delete(ctx context.Context, name string, ifVersion int64) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return v.named(v.store.Delete(ctx, name, ifVersion), name)
}

// List returns up to limit names after after, sorted.
func (v *Vault) List(ctx context.Context, after string, limit int) ([]string, error) {
	return v.store.List(ctx, after, limit)
}

// Sources finds the key source of a location; it fails for a location kmd
// does not know (for example a KMIP server that was deleted).
type Sources func(location string) (KeySource, error)

// LoadKeys loads into the keyring every MK of the store's metadata but
// PENDING ones (nothing is sealed under those yet), checks each
// against its recorded fingerprint and sets the current one. An MK that
// cannot be loaded is left out and the first such error is returned and
// recorded (SetUnavailable); the others are loaded anyway, so entries under
// them stay readable.
func (v *Vault) LoadKeys(ctx context.Context, sources Sources) error {
	infos, err := v.store.Keys(ctx)
	if err != nil {
		return err
	}
	var first error
	current := ""
	for _, ki := range infos {
		if ki.State == KeyCurrent {
			current = ki.ID
		}
		if ki.State == KeyPending || v.Key(ki.ID) != nil {
			continue
		}
		k, err := LoadKey(ctx, sources, ki)
		if err != nil {
			// No entry is sealed under a RETIRED key: one that is gone
			// (say, a crash mid-DESTROY) does not make the domain unavailable.
			if ki.State != KeyRetired {
				first = cmpOr(first, err)
			}
			continue
		}
		v.AddKey(k)
	}
	v.writes.Lock()
	v.ring.Lock()
	// Only the first load sets the current key; after that only Switch
	// does. A reload (after an outage) read the metadata unlocked and may
	// be older than a Switch made meanwhile: adopting it would send writes
	// back to an MK that is about to be destroyed.
	if v.current == "" {
		v.current = current
	}
	v.unavailable = first
	v.ring.Unlock()
	v.writes.Unlock()
	return first
}

// LoadKey fetches one MK from its source and checks its fingerprint.
func LoadKey(ctx context.Context, sources Sources, ki KeyInfo) (*Key, error) {
	src, err := sources(ki.Location)
	if err != nil {
		return nil, fmt.Errorf("load key %s of %s: %w", ki.ID, ki.Domain, err)
	}
	m, err := src.Load(ctx, ki.KeyRef)
	if err != nil {
		return nil, fmt.Errorf("load key %s of %s: %w", ki.ID, ki.Domain, err)
	}
	if ki.Fingerprint != "" && Fingerprint(m) != ki.Fingerprint {
		return nil, fmt.Errorf("load key %s of %s from %s: fingerprint does not match the recorded one: %w", ki.ID, ki.Domain, ki.Location, ErrKeyCorrupt)
	}
	return NewKey(ki.ID, m)
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
