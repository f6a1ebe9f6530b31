package api

import (
	"errors"
	"fmt"
)

// Error codes of the {"error":"…","code":"…"} body. Stable: clients match on
// them.
const (
	CodeBadRequest    = "bad_request"    // 400: malformed body or parameter
	CodeInvalidName   = "invalid_name"   // 400: entry name not 1–255 bytes printable UTF-8
	CodeInvalidValue  = "invalid_value"  // 400: e.g. a key rotation that does not parse
	CodeUnauthorized  = "unauthorized"   // 401: no valid web-page session
	CodeForbidden     = "forbidden"      // 403
	CodeNotFound      = "not_found"      // 404: no such entry
	CodeNoEndpoint    = "no_endpoint"    // 404: no such API path or method
	CodeUnknownDomain = "unknown_domain" // 404: no such domain or scope
	CodeInProgress    = "in_progress"    // 409: a rekey of the domain is running
	CodeConflict      = "conflict"       // 409: other conflicts
	CodeVersion       = "version"        // 412: If-Match / If-None-Match not met
	CodeTooLarge      = "too_large"      // 413: value over 64 KiB
	CodeUnavailable   = "unavailable"    // 503: the domain's MK is unavailable
	CodeInternal      = "internal"       // 500
)

// Sentinels the client rebuilds from a response's code, so that
// errors.Is(err, api.ErrNotFound) works across the socket.
var (
	ErrBadRequest    = errors.New("bad request")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrForbidden     = errors.New("forbidden")
	ErrNotFound      = errors.New("not found")
	ErrUnknownDomain = errors.New("unknown domain")
	ErrInProgress    = errors.New("rekey already in progress")
	ErrConflict      = errors.New("conflict")
	ErrVersion       = errors.New("version mismatch")
	ErrTooLarge      = errors.New("value too large")
	ErrUnavailable   = errors.New("unavailable")
	ErrInternal      = errors.New("internal error")
)

var codeSentinel = map[string]error{
	CodeBadRequest: ErrBadRequest, CodeInvalidName: ErrBadRequest, CodeInvalidValue: ErrBadRequest,
	CodeUnauthorized: ErrUnauthorized, CodeForbidden: ErrForbidden, CodeNotFound: ErrNotFound, CodeUnknownDomain: ErrUnknownDomain,
	CodeInProgress: ErrInProgress, CodeConflict: ErrConflict, CodeVersion: ErrVersion,
	CodeTooLarge: ErrTooLarge, CodeUnavailable: ErrUnavailable, CodeInternal: ErrInternal,
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Error is an error response as the client sees it. errors.Is matches the
// sentinel of its code.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel of the code.
func (e *Error) Unwrap() error {
	if s, ok := codeSentinel[e.Code]; ok {
		return s
	}
	return nil
}

// ConnectError: the daemon could not be reached.
type ConnectError struct {
	Socket string
	Err    error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("cannot reach kmd at %s: %v", e.Socket, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }
