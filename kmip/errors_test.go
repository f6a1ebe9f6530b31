package kmip

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	kmipgo "github.com/ovh/kmip-go"

	"github.com/kmd-project/kmd/provider"
)

func TestErrors_Matching(t *testing.T) {
	cases := []struct {
		err   error
		is    []error
		isNot []error
		text  string
	}{
		{&UnreachableError{Server: "k", Errs: []error{io.EOF}}, []error{ErrUnreachable, provider.ErrKeyUnavailable, io.EOF}, []error{ErrServer, ErrTimeout}, "kmip server k unreachable: EOF"},
		{&connLostError{server: "k", op: "get", err: io.EOF}, []error{ErrUnreachable, provider.ErrKeyUnavailable, io.EOF}, []error{ErrServer}, "kmip server k: get: connection lost: EOF"},
		{&TimeoutError{Server: "k", Operation: "get", After: time.Second, Err: context.DeadlineExceeded}, []error{ErrTimeout, provider.ErrKeyUnavailable, context.DeadlineExceeded}, []error{ErrUnreachable, ErrServer}, "kmip server k did not answer get within 1s"},
		{&ServerError{Server: "k", Operation: "get", Status: kmipgo.ResultStatusOperationFailed, Reason: kmipgo.ResultReasonItemNotFound, Message: "gone"}, []error{ErrServer}, []error{ErrUnreachable, provider.ErrKeyUnavailable, provider.ErrKeyNotFound}, "kmip server k answered get with ItemNotFound: gone"},
		{&ServerError{Server: "k", Operation: "get", Status: kmipgo.ResultStatusOperationPending}, []error{ErrServer}, nil, "kmip server k answered get with OperationPending"},
	}
	for _, c := range cases {
		if c.err.Error() != c.text {
			t.Errorf("Error() = %q, want %q", c.err, c.text)
		}
		for _, target := range c.is {
			if !errors.Is(c.err, target) {
				t.Errorf("%q does not match %v", c.err, target)
			}
		}
		for _, target := range c.isNot {
			if errors.Is(c.err, target) {
				t.Errorf("%q matches %v", c.err, target)
			}
		}
	}
}

func TestErrors_ServerMessagesAreOneShortLine(t *testing.T) {
	cases := map[string]string{
		"plain":                    "plain",
		"  two\nlines\r\tand tab ": "two lines  and tab",
		"bell\a and nul\x00 gone":  "bell and nul gone",
		strings.Repeat("é", 300):   strings.Repeat("é", 200) + "…",
		"":                         "",
	}
	for in, want := range cases {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
