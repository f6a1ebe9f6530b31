package kmiptestserver

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// client speaks raw KMIP 1.4 to a Server.
type client struct {
	t      *testing.T
	conn   *tls.Conn
	stream ttlv.Stream
}

func dial(t *testing.T, s *Server) *client {
	t.Helper()
	conn, err := dialTLS(s)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, stream: ttlv.NewStream(conn, 0)}
}

func dialTLS(s *Server) (*tls.Conn, error) {
	pair, err := tls.LoadX509KeyPair(s.ClientCert, s.ClientKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(s.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	// TLS 1.3: the server's verdict on our certificate comes with the
	// first read.
	if err := conn.Handshake(); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c *client) batch(v kmip.ProtocolVersion, pls ...kmip.OperationPayload) []kmip.ResponseBatchItem {
	c.t.Helper()
	msg := kmip.NewRequestMessage(v, pls...)
	if err := c.stream.Send(&msg); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	var resp kmip.ResponseMessage
	if err := c.stream.Recv(&resp); err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return resp.BatchItem
}

// do sends one request and returns its payload, or the failed item.
func (c *client) do(pl kmip.OperationPayload) (kmip.OperationPayload, kmip.ResponseBatchItem) {
	c.t.Helper()
	bi := c.batch(kmip.V1_4, pl)[0]
	return bi.ResponsePayload, bi
}

func (c *client) ok(pl kmip.OperationPayload) kmip.OperationPayload {
	c.t.Helper()
	resp, bi := c.do(pl)
	if bi.ResultStatus != kmip.ResultStatusSuccess {
		c.t.Fatalf("%s: %v", ttlv.EnumStr(pl.Operation()), bi.Err())
	}
	return resp
}

func (c *client) fails(pl kmip.OperationPayload, reason kmip.ResultReason) {
	c.t.Helper()
	_, bi := c.do(pl)
	if bi.ResultStatus != kmip.ResultStatusOperationFailed || bi.ResultReason != reason {
		c.t.Errorf("%s: status %s reason %s (%s), want failure %s", ttlv.EnumStr(pl.Operation()),
			ttlv.EnumStr(bi.ResultStatus), ttlv.EnumStr(bi.ResultReason), bi.ResultMessage, ttlv.EnumStr(reason))
	}
}

func aesCreate(name string, bits int32) *payloads.CreateRequestPayload {
	attrs := []kmip.Attribute{
		{AttributeName: kmip.AttributeNameCryptographicAlgorithm, AttributeValue: kmip.CryptographicAlgorithmAES},
		{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: bits},
		{AttributeName: kmip.AttributeNameCryptographicUsageMask, AttributeValue: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt},
	}
	if name != "" {
		attrs = append(attrs, kmip.Attribute{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: name, NameType: kmip.NameTypeUninterpretedTextString}})
	}
	return &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey, TemplateAttribute: kmip.TemplateAttribute{Attribute: attrs}}
}

func locateByName(name string) *payloads.LocateRequestPayload {
	return &payloads.LocateRequestPayload{Attribute: []kmip.Attribute{{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: name}}}}
}

func TestServer_Lifecycle(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	id := c.ok(aesCreate("k", 256)).(*payloads.CreateResponsePayload).UniqueIdentifier
	if st, _ := s.State(id); st != kmip.StatePreActive {
		t.Fatalf("state after Create = %s", ttlv.EnumStr(st))
	}
	if m := s.Keys()[id]; len(m) != 32 || bytes.Equal(m, make([]byte, 32)) {
		t.Fatalf("material: %d bytes", len(m))
	}
	c.fails(&payloads.RevokeRequestPayload{UniqueIdentifier: id, RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeSuperseded}}, kmip.ResultReasonIllegalOperation)
	c.ok(&payloads.ActivateRequestPayload{UniqueIdentifier: id})
	c.fails(&payloads.ActivateRequestPayload{UniqueIdentifier: id}, kmip.ResultReasonIllegalOperation)
	c.fails(&payloads.DestroyRequestPayload{UniqueIdentifier: id}, kmip.ResultReasonPermissionDenied)

	get := c.ok(&payloads.GetRequestPayload{UniqueIdentifier: id}).(*payloads.GetResponsePayload)
	raw, err := get.SymmetricKey()
	if err != nil || !bytes.Equal(raw, s.Keys()[id]) {
		t.Fatalf("Get: %v", err)
	}
	get = c.ok(&payloads.GetRequestPayload{UniqueIdentifier: id, KeyFormatType: kmip.KeyFormatTypeTransparentSymmetricKey}).(*payloads.GetResponsePayload)
	if tr, err := get.SymmetricKey(); err != nil || !bytes.Equal(tr, raw) {
		t.Fatalf("Get as TransparentSymmetricKey: %v", err)
	}
	c.fails(&payloads.GetRequestPayload{UniqueIdentifier: id, KeyFormatType: kmip.KeyFormatTypePKCS_8}, kmip.ResultReasonKeyFormatTypeNotSupported)

	c.ok(&payloads.RevokeRequestPayload{UniqueIdentifier: id, RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeSuperseded}})
	if st, _ := s.State(id); st != kmip.StateDeactivated {
		t.Fatalf("state after Revoke = %s", ttlv.EnumStr(st))
	}
	c.fails(&payloads.RevokeRequestPayload{UniqueIdentifier: id, RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeSuperseded}}, kmip.ResultReasonIllegalOperation)
	c.ok(&payloads.DestroyRequestPayload{UniqueIdentifier: id})
	if _, ok := s.State(id); ok || len(s.Keys()) != 0 {
		t.Fatalf("object %s left after Destroy", id)
	}
	for _, pl := range []kmip.OperationPayload{
		&payloads.GetRequestPayload{UniqueIdentifier: id},
		&payloads.GetAttributesRequestPayload{UniqueIdentifier: id},
		&payloads.ActivateRequestPayload{UniqueIdentifier: id},
		&payloads.RevokeRequestPayload{UniqueIdentifier: id},
		&payloads.DestroyRequestPayload{UniqueIdentifier: id},
	} {
		c.fails(pl, kmip.ResultReasonItemNotFound)
	}
	c.fails(&payloads.GetRequestPayload{}, kmip.ResultReasonMissingData)
}

func TestServer_CreateChecks(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	c.fails(&payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSecretData}, kmip.ResultReasonFeatureNotSupported)
	c.fails(&payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey}, kmip.ResultReasonInvalidField)
	c.fails(aesCreate("", 100), kmip.ResultReasonInvalidField)
	id := c.ok(aesCreate("", 128)).(*payloads.CreateResponsePayload).UniqueIdentifier
	if n := len(s.Keys()[id]); n != 16 {
		t.Fatalf("AES-128 key of %d bytes", n)
	}
}

// A batch with ID placeholders: Create, Activate and Get of the new key in
// one message.
func TestServer_BatchWithPlaceholder(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	items := c.batch(kmip.V1_4, aesCreate("b", 256), &payloads.ActivateRequestPayload{}, &payloads.GetRequestPayload{})
	for _, bi := range items {
		if err := bi.Err(); err != nil {
			t.Fatalf("batch: %v", err)
		}
	}
	id := items[0].ResponsePayload.(*payloads.CreateResponsePayload).UniqueIdentifier
	if st, _ := s.State(id); st != kmip.StateActive {
		t.Fatalf("state = %s", ttlv.EnumStr(st))
	}
}

func TestServer_LocateAndAttributes(t *testing.T) {
	s := Start(t, WithKeepDestroyed())
	c := dial(t, s)
	a := s.Put(Object{Name: "n", Material: make([]byte, 32)})
	b := s.Put(Object{Name: "n", State: kmip.StatePreActive, Material: make([]byte, 32)})
	secret := s.Put(Object{Name: "n", Type: kmip.ObjectTypeSecretData, Material: []byte("pw")})
	s.Put(Object{Name: "other", Material: make([]byte, 32)})
	ids := func(pl kmip.OperationPayload) []string {
		return c.ok(pl).(*payloads.LocateResponsePayload).UniqueIdentifier
	}
	if got := ids(locateByName("n")); !slices.Equal(got, []string{a, b, secret}) {
		t.Errorf("Locate n = %v", got)
	}
	if got := s.Lookup("n"); !slices.Equal(got, []string{a, b, secret}) {
		t.Errorf("Lookup n = %v", got)
	}
	byState := locateByName("n")
	byState.Attribute = append(byState.Attribute, kmip.Attribute{AttributeName: kmip.AttributeNameState, AttributeValue: kmip.StatePreActive})
	if got := ids(byState); !slices.Equal(got, []string{b}) {
		t.Errorf("Locate n, PreActive = %v", got)
	}
	byType := locateByName("n")
	byType.Attribute = append(byType.Attribute,
		kmip.Attribute{AttributeName: kmip.AttributeNameObjectType, AttributeValue: kmip.ObjectTypeSymmetricKey},
		kmip.Attribute{AttributeName: kmip.AttributeNameCryptographicAlgorithm, AttributeValue: kmip.CryptographicAlgorithmAES})
	byType.MaximumItems = 1
	if got := ids(byType); !slices.Equal(got, []string{a}) {
		t.Errorf("Locate n, symmetric, at most 1 = %v", got)
	}
	bad := locateByName("n")
	bad.Attribute = append(bad.Attribute, kmip.Attribute{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: int32(256)})
	c.fails(bad, kmip.ResultReasonInvalidField)

	get := c.ok(&payloads.GetRequestPayload{UniqueIdentifier: secret}).(*payloads.GetResponsePayload)
	if pw, err := get.Secret(); err != nil || string(pw) != "pw" {
		t.Errorf("Get secret: %q, %v", pw, err)
	}

	// Two names: the second has index 1.
	s.mu.Lock()
	s.objects[a].names = append(s.objects[a].names, "alias")
	s.mu.Unlock()
	attrs := c.ok(&payloads.GetAttributesRequestPayload{UniqueIdentifier: a}).(*payloads.GetAttributesResponsePayload).Attribute
	got := map[kmip.AttributeName]int{}
	for _, at := range attrs {
		got[at.AttributeName]++
		if at.AttributeName == kmip.AttributeNameName && at.AttributeValue.(kmip.Name).NameValue == "alias" && (at.AttributeIndex == nil || *at.AttributeIndex != 1) {
			t.Errorf("second name without index 1")
		}
	}
	for _, n := range []kmip.AttributeName{kmip.AttributeNameUniqueIdentifier, kmip.AttributeNameObjectType, kmip.AttributeNameCryptographicAlgorithm, kmip.AttributeNameCryptographicLength, kmip.AttributeNameCryptographicUsageMask, kmip.AttributeNameState} {
		if got[n] != 1 {
			t.Errorf("GetAttributes: %d %q", got[n], n)
		}
	}
	if got[kmip.AttributeNameName] != 2 {
		t.Errorf("GetAttributes: %d names, want 2", got[kmip.AttributeNameName])
	}

	// Kept after Destroy, in state Destroyed(Compromised), material gone.
	c.ok(&payloads.RevokeRequestPayload{UniqueIdentifier: a, RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeKeyCompromise}})
	c.ok(&payloads.DestroyRequestPayload{UniqueIdentifier: a})
	c.ok(&payloads.DestroyRequestPayload{UniqueIdentifier: b})
	if st, _ := s.State(a); st != kmip.StateDestroyedCompromised {
		t.Errorf("state of a = %s", ttlv.EnumStr(st))
	}
	if st, _ := s.State(b); st != kmip.StateDestroyed {
		t.Errorf("state of b = %s", ttlv.EnumStr(st))
	}
	if got := ids(locateByName("n")); !slices.Equal(got, []string{a, b, secret}) {
		t.Errorf("Locate n after Destroy = %v", got)
	}
	if got := s.Lookup("n"); !slices.Equal(got, []string{secret}) {
		t.Errorf("Lookup n after Destroy = %v", got)
	}
	c.fails(&payloads.GetRequestPayload{UniqueIdentifier: a}, kmip.ResultReasonItemNotFound)
	c.ok(&payloads.GetAttributesRequestPayload{UniqueIdentifier: a})
	if _, ok := s.Keys()[a]; ok {
		t.Errorf("Keys lists a destroyed key")
	}
}

func TestServer_VersionsAndQuery(t *testing.T) {
	s := Start(t, WithKMIPVersions(kmip.V1_2, kmip.V1_1))
	c := dial(t, s)
	resp := c.batch(kmip.V1_1, &payloads.DiscoverVersionsRequestPayload{ProtocolVersion: []kmip.ProtocolVersion{kmip.V1_4, kmip.V1_2, kmip.V1_1}})[0]
	if got := resp.ResponsePayload.(*payloads.DiscoverVersionsResponsePayload).ProtocolVersion; !slices.Equal(got, []kmip.ProtocolVersion{kmip.V1_2, kmip.V1_1}) {
		t.Errorf("DiscoverVersions = %v", got)
	}
	resp = c.batch(kmip.V1_1, &payloads.DiscoverVersionsRequestPayload{})[0]
	if got := resp.ResponsePayload.(*payloads.DiscoverVersionsResponsePayload).ProtocolVersion; !slices.Equal(got, []kmip.ProtocolVersion{kmip.V1_2, kmip.V1_1}) {
		t.Errorf("DiscoverVersions of all = %v", got)
	}
	if bi := c.batch(kmip.V1_4, &payloads.QueryRequestPayload{})[0]; bi.ResultReason != kmip.ResultReasonInvalidMessage {
		t.Errorf("a KMIP 1.4 message to a 1.2 server: %s", ttlv.EnumStr(bi.ResultReason))
	}
	q := c.batch(kmip.V1_2, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}})[0]
	if qr, ok := q.ResponsePayload.(*payloads.QueryResponsePayload); !ok || !slices.Contains(qr.Operations, kmip.OperationLocate) || qr.VendorIdentification == "" {
		t.Errorf("Query: %+v", q)
	}

	old := Start(t, WithoutDiscoverVersions())
	if bi := dial(t, old).batch(kmip.V1_1, &payloads.DiscoverVersionsRequestPayload{})[0]; bi.ResultReason != kmip.ResultReasonOperationNotSupported {
		t.Errorf("DiscoverVersions of a 1.0 server: %s", ttlv.EnumStr(bi.ResultReason))
	}
}

func TestServer_Faults(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	s.FailOn("Create", errors.New("full"))
	_, bi := c.do(aesCreate("x", 256))
	if bi.ResultReason != kmip.ResultReasonGeneralFailure || bi.ResultMessage != "full" {
		t.Errorf("FailOn Create: %s %q", ttlv.EnumStr(bi.ResultReason), bi.ResultMessage)
	}
	s.FailOn("Create", kmipserver.Errorf(kmip.ResultReasonPermissionDenied, "no"))
	c.fails(aesCreate("x", 256), kmip.ResultReasonPermissionDenied)
	s.FailOn("Create", nil)
	c.ok(aesCreate("x", 256))
	if n := s.Count("Create"); n != 3 {
		t.Errorf("Count(Create) = %d, want 3", n)
	}

	s.Hang("Query", 150*time.Millisecond)
	start := time.Now()
	c.ok(&payloads.QueryRequestPayload{})
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Hang: answered after %s", d)
	}
	s.Hang("Query", 0)

	id := s.Put(Object{Name: "p", Material: make([]byte, 32)})
	s.SetMaterial(id, []byte{1, 2, 3})
	if !bytes.Equal(s.Keys()[id], []byte{1, 2, 3}) {
		t.Errorf("SetMaterial did not take")
	}
	if s.String() == "" {
		t.Errorf("String is empty")
	}
}

// Stop ends a hanging operation at once; Restart serves the same keys on
// the same address.
func TestServer_StopAndRestart(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	id := c.ok(aesCreate("r", 256)).(*payloads.CreateResponsePayload).UniqueIdentifier
	s.Hang("Get", time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := kmip.NewRequestMessage(kmip.V1_4, &payloads.GetRequestPayload{UniqueIdentifier: id})
		_ = c.stream.Send(&msg)
		var resp kmip.ResponseMessage
		_ = c.stream.Recv(&resp)
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	s.Stop()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Stop took %s with an operation hanging", d)
	}
	<-done
	if _, err := dialTLS(s); err == nil {
		t.Errorf("dial after Stop succeeded")
	}
	s.Stop() // again: nothing
	s.Hang("Get", 0)
	s.Restart()
	c = dial(t, s)
	c.ok(&payloads.GetRequestPayload{UniqueIdentifier: id})
	s.Restart() // while running
	dial(t, s).ok(&payloads.GetRequestPayload{UniqueIdentifier: id})
}

func TestServer_RefuseConnections(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	s.RefuseConnections(true)
	msg := kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{})
	var resp kmip.ResponseMessage
	if err := c.stream.Send(&msg); err == nil {
		if err := c.stream.Recv(&resp); err == nil {
			t.Errorf("an open connection survived RefuseConnections")
		}
	}
	if conn, err := dialTLS(s); err == nil {
		conn.Close()
		t.Errorf("a new connection was accepted")
	}
	s.RefuseConnections(false)
	dial(t, s).ok(&payloads.QueryRequestPayload{})
}

// Garbage gets an InvalidMessage answer, and the connection closed.
func TestServer_InvalidMessage(t *testing.T) {
	s := Start(t)
	c := dial(t, s)
	// A TTLV structure with an unknown tag.
	if _, err := c.conn.Write([]byte{0x42, 0x00, 0x99, 0x01, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var resp kmip.ResponseMessage
	if err := c.stream.Recv(&resp); err != nil {
		t.Fatalf("recv: %v", err)
	}
	if len(resp.BatchItem) != 1 || resp.BatchItem[0].ResultReason != kmip.ResultReasonInvalidMessage {
		t.Fatalf("answer to garbage: %+v", resp)
	}
}

func TestServer_Certificates(t *testing.T) {
	a := Start(t)
	b := Start(t, WithCertsFrom(a), WithServerCertHosts("kmip.example.com", "10.9.9.9"))
	if b.CACert != a.CACert || b.ClientCert != a.ClientCert {
		t.Fatalf("WithCertsFrom: other files")
	}
	pem, _ := os.ReadFile(b.ServerCert)
	pair, err := tls.X509KeyPair(pem, mustRead(t, b.ServerKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if !slices.Equal(leaf.DNSNames, []string{"kmip.example.com"}) || len(leaf.IPAddresses) != 1 {
		t.Errorf("server certificate for %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if _, err := dialTLS(b); err == nil {
		t.Errorf("dial 127.0.0.1 with a certificate for kmip.example.com succeeded")
	}
	if fi, err := os.Stat(a.ClientKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("client key mode %v, %v", fi.Mode(), err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
