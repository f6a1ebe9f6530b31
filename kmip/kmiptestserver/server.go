// Package kmiptestserver runs an in-process KMIP server for tests, built on
// kmip-go's kmipserver, that really keeps AES keys in memory, behind mutual
// TLS with certificates it makes itself (ECDSA P-256), with knobs to break
// it: failing or hanging operations, refused connections, restarts.
//
//	srv := kmiptestserver.Start(t)
//	src, err := kmip.New(kmip.ServerConfig{Name: "kmip1", Addrs: []string{srv.Addr},
//		CACert: srv.CACert, ClientCert: srv.ClientCert, ClientKey: srv.ClientKey})
//
// Requests go to a kmipserver.BatchExecutor (kmip-go's routing, batch and
// error handling); the accept and connection loops are this package's own,
// synchronous ones, because kmipserver.Server's connection type in kmip-go
// v0.8.1 races (and may panic) when a client drops its connection.
//
// It answers DiscoverVersions, Query, Create (symmetric keys), Activate, Get,
// GetAttributes, Locate, Revoke and Destroy, with the state rules of KMIP 1.4
// (an Active object must be revoked before it is destroyed; only an Active
// object can be revoked for a reason other than compromise), as PyKMIP does.
package kmiptestserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// Server is a running test server. The paths are of PEM files in Dir: the
// CA that signed both the server's and the client's certificates, and a
// client certificate with its key, ready for kmip.ServerConfig.
type Server struct {
	Addr       string // 127.0.0.1:port; Restart keeps it
	Dir        string
	CACert     string
	ClientCert string
	ClientKey  string
	ServerCert string
	ServerKey  string

	t        testing.TB
	opts     options
	ca       *authority
	tlsCfg   *tls.Config
	versions []kmip.ProtocolVersion // preferred first

	mu      sync.Mutex
	objects map[string]*object
	nextID  int
	fail    map[string]error
	hang    map[string]time.Duration
	counts  map[string]int
	refuse  bool
	run     *instance
}

// instance is one listening incarnation of the server.
type instance struct {
	ln     net.Listener
	exec   *kmipserver.BatchExecutor
	ctx    context.Context // canceled by Stop: ends hangs and connections
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
}

type options struct {
	certsFrom     *Server
	certHosts     []string
	maxTLS        uint16
	versions      []kmip.ProtocolVersion
	noDiscover    bool
	keepDestroyed bool
}

// Option changes how Start sets the server up.
type Option func(*options)

// WithCertsFrom makes the server trust, and be trusted by, the same
// certificates as other: its CA signs this server's certificate, and
// CACert, ClientCert and ClientKey are other's. Two such servers are one
// cluster for a client, which can fail over from one to the other.
func WithCertsFrom(other *Server) Option { return func(o *options) { o.certsFrom = other } }

// WithServerCertHosts issues the server's certificate for these DNS names
// or IP addresses only, instead of 127.0.0.1, ::1 and localhost: a client
// dialing 127.0.0.1 then finds a certificate not issued for that address.
func WithServerCertHosts(hosts ...string) Option {
	return func(o *options) { o.certHosts = slices.Clone(hosts) }
}

// WithMaxTLSVersion caps the TLS version the server accepts
// (tls.VersionTLS12, say); by default it accepts TLS 1.2 and 1.3.
func WithMaxTLSVersion(v uint16) Option { return func(o *options) { o.maxTLS = v } }

// WithKMIPVersions sets the KMIP protocol versions the server speaks, in
// order of preference (default 1.4, 1.3, 1.2, 1.1, 1.0).
func WithKMIPVersions(v ...kmip.ProtocolVersion) Option {
	return func(o *options) { o.versions = slices.Clone(v) }
}

// WithoutDiscoverVersions makes the server answer DiscoverVersions with
// OperationNotSupported, as a KMIP 1.0 server does.
func WithoutDiscoverVersions() Option { return func(o *options) { o.noDiscover = true } }

// WithKeepDestroyed makes Destroy keep the object's metadata in state
// Destroyed (material wiped), as some servers do: Locate and GetAttributes
// still find it, Get does not.
func WithKeepDestroyed() Option { return func(o *options) { o.keepDestroyed = true } }

// Start makes certificates in a temporary directory, starts the server on
// 127.0.0.1:0 and registers its Stop with t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		t:       t,
		Dir:     t.TempDir(),
		objects: map[string]*object{},
		fail:    map[string]error{},
		hang:    map[string]time.Duration{},
		counts:  map[string]int{},
	}
	for _, o := range opts {
		o(&s.opts)
	}
	s.versions = s.opts.versions
	if len(s.versions) == 0 {
		s.versions = []kmip.ProtocolVersion{kmip.V1_4, kmip.V1_3, kmip.V1_2, kmip.V1_1, kmip.V1_0}
	}
	if err := s.makeCerts(); err != nil {
		t.Fatalf("kmiptestserver: certificates: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kmiptestserver: listen: %v", err)
	}
	s.Addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) makeCerts() error {
	now := time.Now()
	if other := s.opts.certsFrom; other != nil {
		s.ca = other.ca
		s.CACert, s.ClientCert, s.ClientKey = other.CACert, other.ClientCert, other.ClientKey
	} else {
		ca, err := newAuthority("kmiptestserver CA")
		if err != nil {
			return err
		}
		s.ca = ca
		s.CACert = filepath.Join(s.Dir, "ca.pem")
		if err := os.WriteFile(s.CACert, ca.certPEM(), 0o644); err != nil {
			return err
		}
		if s.ClientCert, s.ClientKey, err = s.IssueClientCert("client", now.Add(-time.Hour), now.Add(24*time.Hour)); err != nil {
			return err
		}
	}
	srvLeaf, err := s.ca.issueServer(s.opts.certHosts, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		return err
	}
	if s.ServerCert, s.ServerKey, err = srvLeaf.write(s.Dir, "server"); err != nil {
		return err
	}
	ca := s.ca
	pair, err := tls.X509KeyPair(srvLeaf.certPEM, srvLeaf.keyPEM)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	s.tlsCfg = &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   s.opts.maxTLS,
	}
	return nil
}

// IssueClientCert makes another client certificate signed by the server's
// CA, valid from notBefore to notAfter (in the past, say, for an expired
// one), and writes it to Dir as <name>.pem and <name>-key.pem.
func (s *Server) IssueClientCert(name string, notBefore, notAfter time.Time) (certPath, keyPath string, err error) {
	l, err := s.ca.issue("kmd-test-"+name, x509.ExtKeyUsageClientAuth, notBefore, notAfter)
	if err != nil {
		return "", "", err
	}
	return l.write(s.Dir, name)
}

func (s *Server) serve(ln net.Listener) {
	exec := kmipserver.NewBatchExecutor()
	exec.SetSupportedProtocolVersions(slices.Clone(s.versions)...)
	exec.BatchItemUse(s.faults)
	exec.Route(kmip.OperationDiscoverVersions, kmipserver.HandleFunc(s.discoverVersions))
	exec.Route(kmip.OperationQuery, kmipserver.HandleFunc(s.query))
	exec.Route(kmip.OperationCreate, kmipserver.HandleFunc(s.create))
	exec.Route(kmip.OperationActivate, kmipserver.HandleFunc(s.activate))
	exec.Route(kmip.OperationGet, kmipserver.HandleFunc(s.get))
	exec.Route(kmip.OperationGetAttributes, kmipserver.HandleFunc(s.getAttributes))
	exec.Route(kmip.OperationLocate, kmipserver.HandleFunc(s.locate))
	exec.Route(kmip.OperationRevoke, kmipserver.HandleFunc(s.revoke))
	exec.Route(kmip.OperationDestroy, kmipserver.HandleFunc(s.destroy))

	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{ln: ln, exec: exec, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	s.mu.Lock()
	s.run = inst
	s.mu.Unlock()
	inst.wg.Add(1)
	go s.accept(inst)
}

func (s *Server) accept(inst *instance) {
	defer inst.wg.Done()
	for {
		c, err := inst.ln.Accept()
		if err != nil {
			return // closed by Stop
		}
		s.mu.Lock()
		refuse := s.refuse
		s.mu.Unlock()
		if refuse || !inst.track(c) {
			_ = c.Close()
			continue
		}
		inst.wg.Add(1)
		go s.handle(inst, c)
	}
}

// handle serves one connection: TLS handshake (client certificate
// required), then one request message after another.
func (s *Server) handle(inst *instance, raw net.Conn) {
	defer inst.wg.Done()
	defer inst.untrack(raw)
	defer raw.Close()
	conn := tls.Server(raw, s.tlsCfg)
	if err := conn.HandshakeContext(inst.ctx); err != nil {
		return
	}
	stream := ttlv.NewStream(conn, ttlv.DefaultMaxMessageSize)
	for {
		var req kmip.RequestMessage
		if err := stream.Recv(&req); err != nil {
			if ttlv.IsErrEncoding(err) {
				_ = stream.Send(&kmip.ResponseMessage{
					Header: kmip.ResponseHeader{ProtocolVersion: kmip.V1_0, TimeStamp: time.Now(), BatchCount: 1},
					BatchItem: []kmip.ResponseBatchItem{{
						ResultStatus:  kmip.ResultStatusOperationFailed,
						ResultReason:  kmip.ResultReasonInvalidMessage,
						ResultMessage: err.Error(),
					}},
				})
			}
			return
		}
		resp := inst.exec.HandleRequest(inst.ctx, &req)
		if inst.ctx.Err() != nil {
			return
		}
		if err := stream.Send(resp); err != nil {
			return
		}
	}
}

func (inst *instance) track(c net.Conn) bool {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.stopped {
		return false
	}
	inst.conns[c] = struct{}{}
	return true
}

func (inst *instance) untrack(c net.Conn) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	delete(inst.conns, c)
}

// closeConns closes every open connection; with stop, no more are taken.
func (inst *instance) closeConns(stop bool) {
	inst.mu.Lock()
	inst.stopped = inst.stopped || stop
	conns := slices.Collect(maps.Keys(inst.conns))
	inst.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Stop closes the listener and every connection. Keys are kept for Restart.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	inst := s.run
	s.run = nil
	s.mu.Unlock()
	if inst == nil {
		return
	}
	inst.cancel()
	_ = inst.ln.Close()
	inst.closeConns(true)
	inst.wg.Wait()
}

// Restart stops the server if it runs and starts it again on the same
// address, with the same certificates and keys.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", s.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("kmiptestserver: listen again on %s: %v", s.Addr, err)
	}
	s.serve(ln)
}

// RefuseConnections(true) closes every open connection and, until
// RefuseConnections(false), every new one as soon as it is accepted,
// before the TLS handshake.
func (s *Server) RefuseConnections(refuse bool) {
	s.mu.Lock()
	s.refuse = refuse
	inst := s.run
	s.mu.Unlock()
	if refuse && inst != nil {
		inst.closeConns(false)
	}
}

// FailOn makes every later op ("Create", "Get", "Destroy", "Revoke",
// "Activate", "Locate", "GetAttributes", "Query", "DiscoverVersions") answer
// a KMIP error result: err's reason if err is a kmipserver.Error, else
// GeneralFailure with err's text as the message. A nil err ends it.
func (s *Server) FailOn(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.fail, op)
		return
	}
	s.fail[op] = err
}

// Hang makes the server wait d before handling every later op (0 ends it).
// Stop ends a wait early.
func (s *Server) Hang(op string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.hang, op)
		return
	}
	s.hang[op] = d
}

// Count returns how many requests for op the server has received,
// including failed ones.
func (s *Server) Count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[op]
}

// Keys returns a copy of the material of every object not destroyed, by
// unique identifier.
func (s *Server) Keys() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for id, o := range s.objects {
		if !o.destroyed() {
			out[id] = slices.Clone(o.material)
		}
	}
	return out
}

// Lookup returns the unique identifiers of the objects not destroyed that
// carry name, in creation order.
func (s *Server) Lookup(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, id := range s.sortedIDs() {
		o := s.objects[id]
		if !o.destroyed() && slices.Contains(o.names, name) {
			ids = append(ids, id)
		}
	}
	return ids
}

// State returns the KMIP state of object id, and false if there is none.
func (s *Server) State(id string) (kmip.State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[id]
	if !ok {
		return 0, false
	}
	return o.state, true
}

// Object is what Put stores.
type Object struct {
	Name     string          // empty for none
	Type     kmip.ObjectType // default SymmetricKey
	State    kmip.State      // default Active
	Material []byte
}

// Put stores an object as is, bypassing Create's checks (a key of the wrong
// size, a secret where a key is expected), and returns its identifier.
func (s *Server) Put(o Object) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	obj := &object{
		typ:      o.Type,
		state:    o.State,
		material: slices.Clone(o.Material),
		alg:      kmip.CryptographicAlgorithmAES,
		length:   int32(len(o.Material) * 8),
		usage:    kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt,
	}
	if obj.typ == 0 {
		obj.typ = kmip.ObjectTypeSymmetricKey
	}
	if obj.state == 0 {
		obj.state = kmip.StateActive
	}
	if o.Name != "" {
		obj.names = []string{o.Name}
	}
	return s.add(obj)
}

// SetMaterial replaces the material of object id (to simulate damage).
func (s *Server) SetMaterial(id string, material []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.objects[id]; ok {
		o.material = slices.Clone(material)
	}
}

// faults counts every batch item and applies FailOn and Hang.
func (s *Server) faults(next kmipserver.BatchItemNext, ctx context.Context, bi *kmip.RequestBatchItem) (*kmip.ResponseBatchItem, error) {
	op := ttlv.EnumStr(bi.Operation)
	s.mu.Lock()
	s.counts[op]++
	err := s.fail[op]
	d := s.hang[op]
	s.mu.Unlock()
	if d > 0 {
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-ctx.Done(): // Stop
		}
		tm.Stop()
	}
	if err != nil {
		return &kmip.ResponseBatchItem{Operation: bi.Operation, UniqueBatchItemID: bi.UniqueBatchItemID}, err
	}
	return next(ctx, bi)
}

func (s *Server) discoverVersions(_ context.Context, req *payloads.DiscoverVersionsRequestPayload) (*payloads.DiscoverVersionsResponsePayload, error) {
	if s.opts.noDiscover {
		return nil, kmipserver.ErrOperationNotSupported
	}
	resp := &payloads.DiscoverVersionsResponsePayload{}
	for _, v := range s.versions {
		if len(req.ProtocolVersion) == 0 || slices.Contains(req.ProtocolVersion, v) {
			resp.ProtocolVersion = append(resp.ProtocolVersion, v)
		}
	}
	return resp, nil
}

func (s *Server) query(_ context.Context, _ *payloads.QueryRequestPayload) (*payloads.QueryResponsePayload, error) {
	return &payloads.QueryResponsePayload{
		Operations: []kmip.Operation{
			kmip.OperationCreate, kmip.OperationLocate, kmip.OperationGet, kmip.OperationGetAttributes,
			kmip.OperationActivate, kmip.OperationRevoke, kmip.OperationDestroy, kmip.OperationQuery,
			kmip.OperationDiscoverVersions,
		},
		ObjectType:           []kmip.ObjectType{kmip.ObjectTypeSymmetricKey},
		VendorIdentification: "kmd kmiptestserver",
	}, nil
}

func (s *Server) String() string { return fmt.Sprintf("kmiptestserver %s", s.Addr) }
