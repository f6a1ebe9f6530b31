// Package jsonl holds what kmd's append-only JSON-lines files (the event
// journal, the audit trail) share: reading them back with a torn last line
// told apart from damage in the middle, and appending a line so that a
// failed write never leaves half a line for the next one to continue.
package jsonl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
)

// Stats say what Scan found.
type Stats struct {
	// End is the offset after the last good line: where the next append
	// must start.
	End int64
	// Size is the number of bytes read.
	Size int64
	// Skipped counts the bad lines that a good line follows: damage in the
	// middle of the file, which is left in place.
	Skipped int
	// Tail counts the bad lines after the last good one, an unterminated
	// line included: a torn append when they end the file.
	Tail int
}

// Torn reports whether the file ends with something other than a good
// line, which Truncate(f, s.End) cuts.
func (s Stats) Torn() bool { return s.End != s.Size }

// Scan reads r's lines from its current position (offset 0) and calls good
// for each line that ends in a newline, with its offset and bytes (newline
// included; valid only during the call). good reports whether the line is
// one of the file's records. A last line without its newline is bad
// without a call.
func Scan(r io.Reader, good func(off int64, line []byte) bool) (Stats, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var s Stats
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			off := s.Size
			s.Size += int64(len(b))
			if b[len(b)-1] == '\n' && good(off, b) {
				s.Skipped += s.Tail
				s.Tail = 0
				s.End = s.Size
			} else {
				s.Tail++
			}
		}
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			return s, err
		}
	}
}

// Truncate cuts f after its last good line, at end, and fsyncs it, so
// that the next append starts a line of its own.
func Truncate(f *os.File, end int64) error {
	if err := f.Truncate(end); err != nil {
		return fmt.Errorf("truncate torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync after truncate: %w", err)
	}
	return nil
}

// Append writes line (newline included) to f, opened with O_APPEND, whose
// good lines end at size, and returns the bytes written. A write that
// fails part way is cut off again, so that the next append starts a line
// of its own. It does not fsync.
func Append(f *os.File, size int64, line []byte) (int, error) {
	n, err := f.Write(line)
	if err == nil {
		return n, nil
	}
	if n > 0 {
		if terr := f.Truncate(size); terr != nil {
			err = errors.Join(err, fmt.Errorf("truncate partial append: %w", terr))
		}
	}
	return 0, err
}
