package kmip

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	kmipgo "github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/kmd-project/kmd/provider"
)

// Sentinel errors. Test them with errors.Is; the typed errors below carry
// the details.
var (
	// ErrConfig: a ServerConfig that New refuses (a missing or wrong file, a
	// bad address, a TLS version below 1.2).
	ErrConfig = errors.New("invalid kmip server configuration")
	// ErrUnreachable: no address of the server could be connected to (TCP,
	// TLS handshake or KMIP version negotiation failed), or the connection
	// broke during an operation. Errors that match it also match
	// provider.ErrKeyUnavailable.
	ErrUnreachable = errors.New("kmip server unreachable")
	// ErrTimeout: the server did not answer an operation within OpTimeout.
	// Errors that match it also match provider.ErrKeyUnavailable.
	ErrTimeout = errors.New("kmip server did not answer in time")
	// ErrServer: the server answered with a KMIP error result; see
	// ServerError for its reason and message.
	ErrServer = errors.New("kmip server error")
	// ErrWrongObject: the object behind a key's unique identifier is not
	// that key (its Name is another key's), as after the server reused
	// identifiers.
	ErrWrongObject = errors.New("kmip object is not the expected key")
	// ErrClosed: the Source was closed.
	ErrClosed = errors.New("kmip source closed")
)

// UnreachableError says that no address of a server could be used. Errs
// holds one cause per address tried, in order; each names its address.
type UnreachableError struct {
	Server string
	Errs   []error
}

func (e *UnreachableError) Error() string {
	causes := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		causes[i] = err.Error()
	}
	return fmt.Sprintf("kmip server %s unreachable: %s", e.Server, strings.Join(causes, "; "))
}

func (e *UnreachableError) Unwrap() []error { return e.Errs }

// Is makes an UnreachableError match ErrUnreachable and
// provider.ErrKeyUnavailable.
func (e *UnreachableError) Is(target error) bool {
	return target == ErrUnreachable || target == provider.ErrKeyUnavailable
}

// connLostError: the connection broke during an operation. The operation
// may or may not have been carried out; Source retries whole methods,
// which are idempotent, once on a new connection.
type connLostError struct {
	server, op string
	err        error
}

func (e *connLostError) Error() string {
	return fmt.Sprintf("kmip server %s: %s: connection lost: %v", e.server, e.op, e.err)
}

func (e *connLostError) Unwrap() error { return e.err }

func (e *connLostError) Is(target error) bool {
	return target == ErrUnreachable || target == provider.ErrKeyUnavailable
}

// TimeoutError says that the server did not answer an operation in time.
type TimeoutError struct {
	Server    string
	Operation string // lower case: "get", "create", …
	After     time.Duration
	Err       error // context.DeadlineExceeded
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("kmip server %s did not answer %s within %s", e.Server, e.Operation, e.After)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// Is makes a TimeoutError match ErrTimeout and provider.ErrKeyUnavailable.
func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || target == provider.ErrKeyUnavailable
}

// ServerError is a KMIP error result: the server got the request and
// refused it.
type ServerError struct {
	Server    string
	Operation string // lower case: "get", "create", …
	Status    kmipgo.ResultStatus
	Reason    kmipgo.ResultReason
	Message   string // the server's ResultMessage, made one printable line
}

func (e *ServerError) Error() string {
	what := ttlv.EnumStr(e.Reason)
	if e.Reason == 0 {
		what = ttlv.EnumStr(e.Status)
	}
	msg := fmt.Sprintf("kmip server %s answered %s with %s", e.Server, e.Operation, what)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is makes a ServerError match ErrServer.
func (e *ServerError) Is(target error) bool { return target == ErrServer }

// NotFound reports whether the server said that the object does not exist.
func (e *ServerError) NotFound() bool { return e.Reason == kmipgo.ResultReasonItemNotFound }

func isNotFound(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && se.NotFound()
}

// oneLine keeps a server-supplied message to one printable line of at most
// 200 characters.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}
