package provider

// Checkpoints returns how many checkpoints the store's checkpointer ran.
func (s *SQLiteStore) Checkpoints() int {
	s.ckpt.mu.Lock()
	defer s.ckpt.mu.Unlock()
	return s.ckpt.done
}

// PrefetchHits returns how many rewrapped rows took their prefetched
// ciphertext.
func (s *SQLiteStore) PrefetchHits() int { return s.prefetchHits }

// WaitPrefetch waits until the prefetch RewrapRange started, if any, is done.
func (s *SQLiteStore) WaitPrefetch() {
	s.pf.Lock()
	p := s.pf.p
	s.pf.Unlock()
	if p != nil {
		<-p.done
	}
}
