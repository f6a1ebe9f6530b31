package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/kmip"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// badRequest marks an error in what the caller sent.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badRequestf(msg string) error { return &badRequest{msg: msg} }

// httpError is the one place where errors become statuses and codes.
func httpError(err error) (int, string) {
	var br *badRequest
	var fb *forbidden
	switch {
	case errors.As(err, &br):
		return http.StatusBadRequest, api.CodeBadRequest
	case errors.As(err, &fb):
		return http.StatusForbidden, api.CodeForbidden
	case errors.Is(err, kmip.ErrConfig):
		return http.StatusBadRequest, api.CodeInvalidValue
	case errors.Is(err, domains.ErrUnknownServer):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, domains.ErrInUse), errors.Is(err, domains.ErrExists), errors.Is(err, domains.ErrNothingToDo),
		errors.Is(err, rekey.ErrOtherPending), errors.Is(err, rekey.ErrStaged), errors.Is(err, rekey.ErrNotStaged),
		errors.Is(err, rekey.ErrKeyInUse), errors.Is(err, domains.ErrKeyNotRetired):
		return http.StatusConflict, api.CodeConflict
	case errors.Is(err, domains.ErrKeyNotFound):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, domains.ErrBadFingerprint):
		return http.StatusBadRequest, api.CodeInvalidValue
	case errors.Is(err, domains.ErrVerify), errors.Is(err, kmip.ErrUnreachable), errors.Is(err, kmip.ErrTimeout):
		return http.StatusServiceUnavailable, api.CodeUnavailable
	case errors.Is(err, provider.ErrInvalidName):
		return http.StatusBadRequest, api.CodeInvalidName
	case errors.Is(err, rekey.ErrBadRotation):
		return http.StatusBadRequest, api.CodeInvalidValue
	case errors.Is(err, provider.ErrValueTooLarge):
		return http.StatusRequestEntityTooLarge, api.CodeTooLarge
	case errors.Is(err, errNoEndpoint):
		return http.StatusNotFound, api.CodeNoEndpoint
	case errors.Is(err, provider.ErrNotFound):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, domains.ErrUnknownDomain), errors.Is(err, domains.ErrUnknownScope):
		return http.StatusNotFound, api.CodeUnknownDomain
	case errors.Is(err, rekey.ErrInProgress):
		return http.StatusConflict, api.CodeInProgress
	case errors.Is(err, provider.ErrVersionMismatch), errors.Is(err, provider.ErrExists):
		return http.StatusPreconditionFailed, api.CodeVersion
	case errors.Is(err, provider.ErrKeyUnavailable), errors.Is(err, domains.ErrUnavailable):
		return http.StatusServiceUnavailable, api.CodeUnavailable
	case provider.StorageFault(err) != "":
		// The disk is full or read-only: the operator can act on that, so it
		// is said, not hidden behind "internal error".
		return http.StatusServiceUnavailable, api.CodeUnavailable
	}
	return http.StatusInternalServerError, api.CodeInternal
}

// writeError answers err as {"error","code"}. Unknown errors are logged
// whole and answered with a short message: their text might say more than a
// caller should see.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := httpError(err)
	msg := err.Error()
	if fault := provider.StorageFault(err); fault != "" {
		msg += " (" + fault + ")"
	}
	if status == http.StatusInternalServerError {
		s.lg.Error("request failed", zap.String("method", r.Method), zap.String(logs.Path, r.URL.Path), zap.Error(err))
		// An entry that does not open under its MK is damage an operator
		// must find: its error names the domain, entry and key, never a value.
		var ee *provider.EntryError
		if !errors.As(err, &ee) {
			msg = "internal error; see the kmd log"
		}
	} else {
		s.lg.Debug("request refused", zap.String("method", r.Method), zap.String(logs.Path, r.URL.Path), zap.Int("status", status), zap.Error(err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.ErrorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
