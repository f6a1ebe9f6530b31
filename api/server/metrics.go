package server

import (
	"net/http"
)

// WithMetrics makes the API serve h as GET /metrics; without it that
// path is no endpoint. It returns s.
func (s *Server) WithMetrics(h http.Handler) *Server {
	s.metrics = h
	return s
}

// metricsHandler serves GET /metrics. Callers need the monitor role (an
// admin holds it), as for status, rekey views and events.
func (s *Server) metricsHandler() http.Handler {
	if s.metrics == nil {
		return http.HandlerFunc(s.noEndpoint)
	}
	return s.metrics
}
