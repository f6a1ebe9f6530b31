package kmip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	kmipgo "github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// The transport is kmd's own, small and synchronous: one request message
// written, one response message read, on a *tls.Conn whose deadline
// follows the context. It uses kmip-go's messages, payloads and TTLV
// encoding, but not kmipclient.Client, whose connection type in v0.8.1
// closes its send channel from its reader goroutine without excluding a
// send under way (a data race, and a "send on closed channel" panic when
// the server drops the connection at the wrong instant), panics in Close
// after a failed reconnect, and silently resends a request after
// reconnecting, which for a Create can leave a second key behind.

// kmipVersions are the protocol versions kmd speaks, preferred first.
var kmipVersions = []kmipgo.ProtocolVersion{kmipgo.V1_4, kmipgo.V1_3, kmipgo.V1_2, kmipgo.V1_1, kmipgo.V1_0}

// session is one connection to one address of the server. Only the
// goroutine whose turn it is (Source.turn) reads and writes it; Close, from
// elsewhere, closes conn, which fails whatever that goroutine is doing.
type session struct {
	conn       *tls.Conn
	stream     ttlv.Stream
	addr       string
	version    kmipgo.ProtocolVersion
	tlsVersion uint16
	spoiled    bool // a context ended during a roundtrip
}

// roundtrip writes msg and reads the answer, giving up when ctx ends.
func (sess *session) roundtrip(ctx context.Context, msg *kmipgo.RequestMessage) (*kmipgo.ResponseMessage, error) {
	dl, _ := ctx.Deadline() // zero: none
	if err := sess.conn.SetDeadline(dl); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = sess.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			// ctx ended: the deadline may move to the past at any moment,
			// even after this answer; do not use the connection again.
			sess.spoiled = true
		}
	}()
	// The only deadlines are ctx's: when one passes, ctx is done or about
	// to be, and callers tell a timeout from a broken connection by ctx.
	deadline := func(err error) error {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			<-ctx.Done()
		}
		return err
	}
	if err := sess.stream.Send(msg); err != nil {
		return nil, deadline(err)
	}
	var resp kmipgo.ResponseMessage
	if err := sess.stream.Recv(&resp); err != nil {
		return nil, deadline(err)
	}
	if int(resp.Header.BatchCount) != len(resp.BatchItem) || len(resp.BatchItem) != len(msg.BatchItem) {
		return nil, fmt.Errorf("%d batch items in the answer, want %d", len(resp.BatchItem), len(msg.BatchItem))
	}
	return &resp, nil
}

// negotiate picks the protocol version as kmipclient does: a
// DiscoverVersions request (in a 1.1 message) offering 1.4 down to 1.0;
// the server answers the versions it speaks among them, preferred first,
// and the first is used. A server that does not know DiscoverVersions
// (OperationNotSupported) is a 1.0 server.
func (sess *session) negotiate(ctx context.Context) error {
	msg := kmipgo.NewRequestMessage(kmipgo.V1_1, &payloads.DiscoverVersionsRequestPayload{ProtocolVersion: kmipVersions})
	resp, err := sess.roundtrip(ctx, &msg)
	if err != nil {
		return err
	}
	bi := resp.BatchItem[0]
	switch {
	case bi.ResultStatus == kmipgo.ResultStatusOperationFailed && bi.ResultReason == kmipgo.ResultReasonOperationNotSupported:
		sess.version = kmipgo.V1_0
		return nil
	case bi.ResultStatus != kmipgo.ResultStatusSuccess:
		return fmt.Errorf("DiscoverVersions refused: %s %s", ttlv.EnumStr(bi.ResultReason), oneLine(bi.ResultMessage))
	}
	pl, ok := bi.ResponsePayload.(*payloads.DiscoverVersionsResponsePayload)
	if !ok {
		return errors.New("DiscoverVersions answered without versions")
	}
	for _, v := range pl.ProtocolVersion {
		if slices.Contains(kmipVersions, v) {
			sess.version = v
			return nil
		}
	}
	return fmt.Errorf("no common KMIP version: the server speaks %v, kmd 1.0-1.4", pl.ProtocolVersion)
}

// session returns the current connection, connecting if there is none.
func (s *Source) session(ctx context.Context) (*session, error) {
	s.mu.Lock()
	sess, closed := s.sess, s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if sess != nil {
		return sess, nil
	}
	if s.failErr != nil && s.failedAt.After(s.started) {
		return nil, s.failErr // failed while this call waited its turn
	}
	sess, err := s.connect(ctx)
	if err != nil {
		var ue *UnreachableError
		if errors.As(err, &ue) {
			s.failedAt, s.failErr = time.Now(), err
		}
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = sess.conn.Close()
		return nil, ErrClosed
	}
	s.sess = sess
	return sess, nil
}

// drop forgets sess, if it is still the current connection, and closes it.
func (s *Source) drop(sess *session) {
	s.mu.Lock()
	if s.sess == sess {
		s.sess = nil
	}
	s.mu.Unlock()
	_ = sess.conn.Close()
}

// connect tries each address in order and returns the first connection
// that completes TCP, TLS and KMIP version negotiation.
func (s *Source) connect(ctx context.Context) (*session, error) {
	var errs []error
	for _, addr := range s.cfg.Addrs {
		sess, err := s.dial(ctx, addr)
		if err == nil {
			return sess, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to kmip server %s: %w", s.cfg.Name, ctx.Err())
		}
		errs = append(errs, err)
	}
	return nil, &UnreachableError{Server: s.cfg.Name, Errs: errs}
}

// dial connects to one address within ConnectTimeout.
func (s *Source) dial(ctx context.Context, addr string) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	cfg := s.tls.Clone()
	cfg.ServerName = host
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, s.handshakeError(addr, err)
	}
	sess := &session{
		conn:       conn,
		stream:     ttlv.NewStream(conn, ttlv.DefaultMaxMessageSize),
		addr:       addr,
		tlsVersion: conn.ConnectionState().Version,
	}
	err = sess.negotiate(ctx)
	if err == nil && sess.spoiled {
		err = ctx.Err()
	}
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within %s: %w", s.cfg.ConnectTimeout, ctx.Err())
		}
		return nil, fmt.Errorf("kmip version negotiation with %s: %w%s", addr, err, s.alertHint(err))
	}
	return sess, nil
}

// handshakeError explains a failed TLS handshake in terms of the files
// the operator configured.
func (s *Source) handshakeError(addr string, err error) error {
	host, _, _ := net.SplitHostPort(addr)
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		hint     string
	)
	switch {
	case errors.As(err, &unknown):
		hint = fmt.Sprintf(" (the server's certificate is not signed by the CA in %s)", s.cfg.CACert)
	case errors.As(err, &hostname):
		hint = fmt.Sprintf(" (the server's certificate is not issued for %s)", host)
	case errors.As(err, &invalid):
		hint = " (the server's certificate is not usable: expired, not yet valid or not for server authentication)"
	case strings.Contains(err.Error(), "protocol version"):
		hint = fmt.Sprintf(" (the server does not offer %s or newer)", tls.VersionName(s.cfg.MinTLSVersion))
	default:
		hint = s.alertHint(err)
	}
	return fmt.Errorf("tls handshake with %s: %w%s", addr, err, hint)
}

// alertHint explains the TLS alerts a server sends when it refuses the
// client certificate (with TLS 1.3 they arrive after the handshake).
func (s *Source) alertHint(err error) string {
	msg := err.Error()
	for _, alert := range []string{"bad certificate", "unknown certificate authority", "certificate required", "certificate expired", "unsupported certificate", "certificate revoked"} {
		if strings.Contains(msg, "remote error: tls: "+alert) {
			return fmt.Sprintf(" (the server refused the client certificate %s)", s.cfg.ClientCert)
		}
	}
	return ""
}

// call sends one KMIP request, connecting first if needed, and waits at
// most OpTimeout for the answer. A KMIP error result is a *ServerError;
// a timeout a *TimeoutError; a broken connection a *connLostError.
func (s *Source) call(ctx context.Context, op string, req kmipgo.OperationPayload) (kmipgo.OperationPayload, error) {
	sess, err := s.session(ctx)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	msg := kmipgo.NewRequestMessage(sess.version, req)
	resp, err := sess.roundtrip(octx, &msg)
	if err != nil {
		s.drop(sess)
		switch {
		case s.isClosed():
			return nil, fmt.Errorf("%s: %w", op, ErrClosed)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		case octx.Err() != nil:
			return nil, &TimeoutError{Server: s.cfg.Name, Operation: op, After: s.cfg.OpTimeout, Err: octx.Err()}
		}
		return nil, &connLostError{server: s.cfg.Name, op: op, err: err}
	}
	if sess.spoiled {
		s.drop(sess)
	}
	bi := resp.BatchItem[0]
	if bi.ResultStatus != kmipgo.ResultStatusSuccess {
		return nil, &ServerError{Server: s.cfg.Name, Operation: op, Status: bi.ResultStatus, Reason: bi.ResultReason, Message: oneLine(bi.ResultMessage)}
	}
	if bi.ResponsePayload == nil || bi.ResponsePayload.Operation() != req.Operation() {
		s.drop(sess)
		return nil, &connLostError{server: s.cfg.Name, op: op, err: fmt.Errorf("answer without a %s payload", ttlv.EnumStr(req.Operation()))}
	}
	return bi.ResponsePayload, nil
}

func (s *Source) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
