package server

import (
	"strings"
	"testing"

	"github.com/kmd-project/kmd/api"
)

// Every way a JSON body can be wrong is one line in the request's terms:
// field names and JSON kinds, never a Go type.
func TestDecodeStrict_SaysWhatIsWrong(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"name":"a","value":"AA==","mode":1}`, `unknown field "mode"`},
		{`{"name":"a","name":"b","value":"AA=="}`, `field "name" appears twice`},
		{`{"name":"a","value":"AA=="} x`, `data after the JSON value`},
		{`{"name":"a","value":"A"}`, `field "value": illegal base64 data`},
		{`{"name":1,"value":"AA=="}`, `field "name": a JSON number where a string belongs`},
		{`{"name":"a","value":true}`, `field "value": a JSON boolean where a base64 string belongs`},
		{`["a"]`, `a JSON array where an object belongs`},
		{`{"name":"a"`, `the JSON value ends early`},
		{`{"name":"a\ud800","value":"AA=="}`, `invalid surrogate pair`},
		{`{"Name":"a","value":"AA=="}`, `unknown field "Name"`},
	} {
		var l api.ImportLine
		err := decodeStrict([]byte(tc.body), &l)
		if err == nil {
			t.Errorf("%s: decoded, want an error", tc.body)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, "Go ") || strings.Contains(msg, "uint8") || strings.Contains(msg, "\n") {
			t.Errorf("%s: %q, want one line saying %q and no Go type", tc.body, msg, tc.want)
		}
	}
	var l api.ImportLine
	if err := decodeStrict([]byte(` {"name":"a","value":"AAE="} `+"\n"), &l); err != nil || l.Name != "a" || string(l.Value) != "\x00\x01" {
		t.Fatalf("a good line: %+v, %v", l, err)
	}
	var req api.RekeyStartRequest
	if err := decodeStrict([]byte(`{"domains":"S3"}`), &req); err == nil || !strings.Contains(err.Error(), `field "domains": a JSON string where a list belongs`) {
		t.Fatalf("domains as a string: %v", err)
	}
}
