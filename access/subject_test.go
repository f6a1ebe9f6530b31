package access

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/internal/testca"
)

// certSubject returns the subject of a real certificate made with name, as
// crypto/x509 parses and writes it.
func certSubject(t testing.TB, name pkix.Name) string {
	t.Helper()
	l := testca.New(t, "test CA", time.Time{}, time.Time{}).Issue(t, name, false)
	cert, err := x509.ParseCertificate(l.TLS.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return CertCaller(cert, "").Subject
}

var oidEmail = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

func TestParseSubject_MatchesCertificates(t *testing.T) {
	for _, c := range []struct {
		rule string
		name pkix.Name
	}{
		{"CN=prometheus", pkix.Name{CommonName: "prometheus"}},
		{"cn=prometheus", pkix.Name{CommonName: "prometheus"}},
		{"CN=s3-gateway,O=Acme", pkix.Name{CommonName: "s3-gateway", Organization: []string{"Acme"}}},
		{"O=Acme, CN=s3-gateway", pkix.Name{CommonName: "s3-gateway", Organization: []string{"Acme"}}},
		{"  CN = s3-gateway ;O=Acme ", pkix.Name{CommonName: "s3-gateway", Organization: []string{"Acme"}}},
		{"CN=s3+O=Acme", pkix.Name{CommonName: "s3", Organization: []string{"Acme"}}},
		{`CN=a\,b\+c\"d\\e\<f\>g\;h,O=x`, pkix.Name{CommonName: `a,b+c"d\e<f>g;h`, Organization: []string{"x"}}},
		{`CN=\ lead and trail\ `, pkix.Name{CommonName: " lead and trail "}},
		{`CN=\#hash`, pkix.Name{CommonName: "#hash"}},
		{`CN=caf\C3\A9`, pkix.Name{CommonName: "café"}},
		{"CN=café", pkix.Name{CommonName: "café"}},
		{"CN=a=b", pkix.Name{CommonName: "a=b"}},
		{"CN=#0c0470726f6d", pkix.Name{CommonName: "prom"}},
		{"CN=x,OU=b,OU=a,O=o,L=l,ST=st,C=DE,STREET=s,POSTALCODE=1,SERIALNUMBER=9",
			pkix.Name{CommonName: "x", OrganizationalUnit: []string{"a", "b"}, Organization: []string{"o"}, Locality: []string{"l"},
				Province: []string{"st"}, Country: []string{"DE"}, StreetAddress: []string{"s"}, PostalCode: []string{"1"}, SerialNumber: "9"}},
		{"CN=x,1.2.840.113549.1.9.1=ops@example.net",
			pkix.Name{CommonName: "x", ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidEmail, Value: "ops@example.net"}}}},
	} {
		want := certSubject(t, c.name)
		got, err := ParseSubject(c.rule)
		if err != nil {
			t.Errorf("ParseSubject(%q): %v", c.rule, err)
			continue
		}
		if got != want {
			t.Errorf("ParseSubject(%q) = %q; the certificate's subject is %q", c.rule, got, want)
		}
		// A certificate's subject, as written, parses to itself.
		if again, err := ParseSubject(want); err != nil || again != want {
			t.Errorf("ParseSubject(%q) = %q, %v; want it unchanged", want, again, err)
		}
	}
}

func TestParseSubject_Refused(t *testing.T) {
	for _, c := range []struct{ in, err string }{
		{"", "empty"},
		{"   ", "empty"},
		{"prometheus", `"prometheus" has no =VALUE`},
		{"CN=", "empty value for CN"},
		{"CN=x,", "an attribute is missing"},
		{",CN=x", "an attribute is missing"},
		{"=x", "attribute type is missing"},
		{"EMAIL=a@b", `unknown attribute type "EMAIL"`},
		{"CN=x,O", `"O" has no =VALUE`},
		{"1=x", `unknown attribute type "1"`},
		{"1.02.3=x", `unknown attribute type "1.02.3"`},
		{`CN=a"b`, `unescaped "`},
		{`CN=a\`, `a \ ends the name`},
		{`CN=a\q`, `\q is not an escape`},
		{`CN=a\4`, `half a hex pair`},
		{"CN=#zz", "# is not followed by an even number of hex digits"},
		{"CN=#0c02", "not the DER encoding of a string"},
		{"CN=#020101", "not the DER encoding of a string"},
		{"CN=\xd4", "not valid UTF-8"},
	} {
		got, err := ParseSubject(c.in)
		if err == nil {
			t.Errorf("ParseSubject(%q) = %q, want an error with %q", c.in, got, c.err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.err) || !strings.Contains(msg, "want an RFC 2253 name such as CN=prometheus") || strings.Contains(msg, "\n") {
			t.Errorf("ParseSubject(%q): %q; want one line with %q and what is wanted", c.in, msg, c.err)
		}
	}
}

// FuzzParseSubject proves that parsing never panics and that an accepted
// subject is written in a form that parses to itself and that a
// certificate with that name would carry.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"CN=prometheus", "O=Acme, CN=s3", `CN=a\,b+OU=x`, "CN=#0c0470726f6d",
		"1.2.840.113549.1.9.1=a@b,CN=x", `CN=\ x\ `, "CN=x;O=y", "CN==", "CN=\x00", "CN=\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := parseSubject(s)
		if err != nil {
			return
		}
		canon := name.String()
		again, err := ParseSubject(canon)
		if err != nil || again != canon {
			t.Fatalf("%q gave %q, which parses to %q, %v", s, canon, again, err)
		}
		// The same name through DER, as in a certificate.
		var rdns pkix.RDNSequence
		for _, atv := range name.Names {
			rdns = append(rdns, pkix.RelativeDistinguishedNameSET{atv})
		}
		der, err := asn1.Marshal(rdns)
		if err != nil {
			return // not encodable (e.g. an OID arc asn1 refuses): no certificate holds it
		}
		var back pkix.RDNSequence
		if _, err := asn1.Unmarshal(der, &back); err != nil {
			t.Fatalf("%q: DER of the name does not parse: %v", s, err)
		}
		var n2 pkix.Name
		n2.FillFromRDNSequence(&back)
		if got := n2.String(); got != canon {
			t.Fatalf("%q: written %q, but through DER %q", s, canon, got)
		}
	})
}
