package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// importIdle is how long an import waits for the next bytes of its body.
// An import holds its domain's read lock from its first line to its last,
// and a rekey's SWITCH waits for that lock, so a client that stalls
// mid-upload may hold the domain no longer than this.
var importIdle atomic.Int64 // a time.Duration

func init() { importIdle.Store(int64(30 * time.Second)) }

// idleBody reads a request body, failing once nothing has come for idle.
type idleBody struct {
	rc    *http.ResponseController
	r     io.Reader
	idle  time.Duration
	pause error // set once nothing came for idle
}

func newIdleBody(w http.ResponseWriter, r io.Reader, idle time.Duration) *idleBody {
	return &idleBody{rc: http.NewResponseController(w), r: r, idle: idle}
}

func (b *idleBody) Read(p []byte) (int, error) {
	// Not every connection has deadlines (a test's recorder has none);
	// there, the body is read as it comes.
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("nothing received for %v; send the body without pauses", b.idle)
		b.pause = badRequestf("request body: " + err.Error())
	}
	return n, err
}

// stalled returns the error of a pause, if the body had one: the cause of
// whatever else failed after it (net/http cancels the request's context
// once its connection fails to read).
func (b *idleBody) stalled() error { return b.pause }

// done lifts the deadline for the connection's next request.
func (b *idleBody) done() { b.rc.SetReadDeadline(time.Time{}) }
