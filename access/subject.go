package access

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// attributeTypes are the attribute keywords of a subject, as Go's
// pkix.Name.String writes them; any other attribute is written as its
// dotted OID.
var attributeTypes = map[string]asn1.ObjectIdentifier{
	"CN":           {2, 5, 4, 3},
	"SERIALNUMBER": {2, 5, 4, 5},
	"C":            {2, 5, 4, 6},
	"L":            {2, 5, 4, 7},
	"ST":           {2, 5, 4, 8},
	"STREET":       {2, 5, 4, 9},
	"O":            {2, 5, 4, 10},
	"OU":           {2, 5, 4, 11},
	"POSTALCODE":   {2, 5, 4, 17},
}

var oidCommonName = attributeTypes["CN"]

const subjectWant = "want an RFC 2253 name such as CN=prometheus or CN=s3-gateway,O=Acme"

// ParseSubject parses a certificate subject written as an RFC 2253
// (RFC 4514) distinguished name and returns it in the form
// crypto/x509/pkix.Name.String gives a certificate's subject, so the two
// compare as strings: "O=Acme, CN=s3-gateway" gives "CN=s3-gateway,O=Acme".
// Attribute types are CN, O, OU, C, L, ST, STREET, POSTALCODE,
// SERIALNUMBER (any case) or a dotted OID; values may use \ escapes and
// #hex (DER) forms. Spaces around the separators are ignored.
func ParseSubject(s string) (string, error) {
	name, err := parseSubject(s)
	if err != nil {
		return "", fmt.Errorf("invalid subject %q: %v; %s", s, err, subjectWant)
	}
	return name.String(), nil
}

// parseSubject parses s into the pkix.Name a certificate with that subject
// would hold.
func parseSubject(s string) (pkix.Name, error) {
	var rdns pkix.RDNSequence
	p := &dnParser{s: s}
	if strings.TrimSpace(s) == "" {
		return pkix.Name{}, errors.New("empty")
	}
	for {
		var rdn pkix.RelativeDistinguishedNameSET
		for {
			atv, err := p.attribute()
			if err != nil {
				return pkix.Name{}, err
			}
			rdn = append(rdn, atv)
			if !p.skip('+') {
				break
			}
		}
		rdns = append(rdns, rdn)
		if p.done() {
			break
		}
		if !p.skip(',') && !p.skip(';') {
			return pkix.Name{}, fmt.Errorf("unexpected %q at byte %d", p.s[p.i], p.i)
		}
	}
	// The string names the last RDN first.
	for i, j := 0, len(rdns)-1; i < j; i, j = i+1, j-1 {
		rdns[i], rdns[j] = rdns[j], rdns[i]
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdns)
	return name, nil
}

// dnParser reads a distinguished name.
type dnParser struct {
	s string
	i int
}

func (p *dnParser) spaces() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *dnParser) done() bool {
	p.spaces()
	return p.i == len(p.s)
}

// skip consumes c (and the spaces around it) if it comes next.
func (p *dnParser) skip(c byte) bool {
	p.spaces()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		p.spaces()
		return true
	}
	return false
}

// attribute reads TYPE=VALUE.
func (p *dnParser) attribute() (pkix.AttributeTypeAndValue, error) {
	p.spaces()
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != '=' && p.s[p.i] != ',' && p.s[p.i] != '+' && p.s[p.i] != ';' {
		p.i++
	}
	typ := strings.TrimSpace(p.s[start:p.i])
	if p.i == len(p.s) || p.s[p.i] != '=' {
		if typ == "" {
			return pkix.AttributeTypeAndValue{}, errors.New("an attribute is missing")
		}
		return pkix.AttributeTypeAndValue{}, fmt.Errorf("%q has no =VALUE", typ)
	}
	p.i++ // '='
	oid, err := attributeType(typ)
	if err != nil {
		return pkix.AttributeTypeAndValue{}, err
	}
	val, err := p.value()
	if err != nil {
		return pkix.AttributeTypeAndValue{}, fmt.Errorf("%s: %v", typ, err)
	}
	if val == "" {
		return pkix.AttributeTypeAndValue{}, fmt.Errorf("empty value for %s", typ)
	}
	if !utf8.ValidString(val) {
		return pkix.AttributeTypeAndValue{}, fmt.Errorf("the value of %s is not valid UTF-8", typ)
	}
	return pkix.AttributeTypeAndValue{Type: oid, Value: val}, nil
}

func attributeType(typ string) (asn1.ObjectIdentifier, error) {
	if oid, ok := attributeTypes[strings.ToUpper(typ)]; ok {
		return oid, nil
	}
	var oid asn1.ObjectIdentifier
	parts := strings.Split(typ, ".")
	for _, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || (len(part) > 1 && part[0] == '0') || len(parts) < 2 {
			if typ == "" {
				return nil, errors.New("an attribute type is missing before =")
			}
			return nil, fmt.Errorf("unknown attribute type %q: want CN, O, OU, C, L, ST, STREET, POSTALCODE, SERIALNUMBER or a dotted OID", typ)
		}
		oid = append(oid, n)
	}
	return oid, nil
}

// value reads an attribute's value up to the next unescaped , + or ;.
func (p *dnParser) value() (string, error) {
	p.spaces()
	if p.i < len(p.s) && p.s[p.i] == '#' {
		return p.hexValue()
	}
	var b []byte
	trail := 0 // unescaped spaces at the end of b, which are not part of the value
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch c {
		case ',', '+', ';':
			return string(b[:len(b)-trail]), nil
		case '"':
			return "", errors.New(`unescaped "; write \"`)
		case '\\':
			if p.i+1 == len(p.s) {
				return "", errors.New(`a \ ends the name; write \\ for a backslash`)
			}
			n := p.s[p.i+1]
			if isHex(n) {
				if p.i+2 == len(p.s) || !isHex(p.s[p.i+2]) {
					return "", fmt.Errorf(`\%c is half a hex pair; want \ and two hex digits, or \ before one of ,+"\<>;=# and space`, n)
				}
				v, _ := hex.DecodeString(p.s[p.i+1 : p.i+3])
				b = append(b, v[0])
				p.i += 3
			} else {
				if !strings.ContainsRune(`,+"\<>;=# `, rune(n)) {
					return "", fmt.Errorf(`\%c is not an escape; want \ and two hex digits, or \ before one of ,+"\<>;=# and space`, n)
				}
				b = append(b, n)
				p.i += 2
			}
			trail = 0
			continue
		case ' ':
			trail++
		default:
			trail = 0
		}
		b = append(b, c)
		p.i++
	}
	return string(b[:len(b)-trail]), nil
}

// hexValue reads #hex: the DER encoding of a string.
func (p *dnParser) hexValue() (string, error) {
	p.i++ // '#'
	start := p.i
	for p.i < len(p.s) && isHex(p.s[p.i]) {
		p.i++
	}
	der, err := hex.DecodeString(p.s[start:p.i])
	if err != nil || len(der) == 0 {
		return "", errors.New("# is not followed by an even number of hex digits")
	}
	var v any
	rest, err := asn1.Unmarshal(der, &v)
	s, ok := v.(string)
	if err != nil || len(rest) > 0 || !ok {
		return "", fmt.Errorf("#%s is not the DER encoding of a string", p.s[start:p.i])
	}
	return s, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// subjectCN returns the common name of a subject as ParseSubject (or a
// certificate) writes it, and whether it has one.
func subjectCN(subject string) (string, bool) {
	name, err := parseSubject(subject)
	if err != nil || name.CommonName == "" {
		return "", false
	}
	return name.CommonName, true
}

// cnOnly returns x when name is CN=x and nothing else.
func cnOnly(name pkix.Name) (string, bool) {
	if len(name.Names) == 1 && name.Names[0].Type.Equal(oidCommonName) {
		return name.CommonName, true
	}
	return "", false
}

// CertCaller is the caller a verified client certificate stands for,
// without roles; remote is the client's address.
func CertCaller(cert *x509.Certificate, remote string) *Caller {
	return &Caller{Via: ViaTLS, Subject: cert.Subject.String(), Remote: remote}
}
