package server

import "time"

// SetImportIdle sets how long an import waits for more of its body, and
// returns a func that restores it.
func SetImportIdle(d time.Duration) (restore func()) {
	old := importIdle.Swap(int64(d))
	return func() { importIdle.Store(old) }
}
