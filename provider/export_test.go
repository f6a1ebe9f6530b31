package provider

// Checkpoints returns how many checkpoints the store's checkpointer ran.
func (s *SQLiteStore) Checkpoints() int {
	s.ckpt.mu.Lock()
	defer s.ckpt.mu.Unlock()
	return s.ckpt.done
}
