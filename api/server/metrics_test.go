package server_test

import (
	"net/http"
	"testing"

	"github.com/kmd-project/kmd/api"
)

// Without WithMetrics, /metrics is no endpoint (package metrics tests the
// handler it is given); another method than GET never is one.
func TestServer_MetricsOnlyWhenGiven(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	for _, method := range []string{"GET", "POST"} {
		status, _, body := k.do(t, method, api.PathMetrics, nil, nil)
		wantErrorBody(t, status, body, http.StatusNotFound, api.CodeNoEndpoint)
	}
}
