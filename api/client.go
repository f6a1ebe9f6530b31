package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to kmd over its unix socket. One Client serves every call;
// it is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
	base   string
}

// NewClient returns a client for the daemon listening on the unix socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	// Never follow a redirect: a misrouted request must fail, not return
	// another endpoint's body as if it were the answer.
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{socket: socket, http: &http.Client{Transport: tr, CheckRedirect: noRedirect}, base: "http://kmd"}
}

// EntryPath returns the path of an entry, with the name path-escaped. The
// names "." and ".." are sent as %2E segments, which nothing on the way
// takes for a relative path.
func EntryPath(domain, name string) string {
	return PathDomains + url.PathEscape(domain) + "/entries/" + escapeSegment(name)
}

func escapeSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

// do sends a request and decodes a JSON answer into out (if not nil). A
// non-2xx answer becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, body io.Reader, out any) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &ConnectError{Socket: c.socket, Err: unwrapURL(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return resp, decodeError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp, fmt.Errorf("decode %s %s answer: %w", method, path, err)
		}
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb = ErrorBody{Error: fmt.Sprintf("kmd answered %s", resp.Status), Code: ""}
	}
	return &Error{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

func etag(resp *http.Response) int64 {
	v, _ := strconv.ParseInt(strings.Trim(resp.Header.Get("ETag"), `"`), 10, 64)
	return v
}

// PutOptions are the preconditions of a Put or Delete.
type PutOptions struct {
	IfVersion  int64 // > 0: only at this version (If-Match)
	CreateOnly bool  // only if absent (If-None-Match: *)
}

func (o PutOptions) header() http.Header {
	h := http.Header{}
	if o.IfVersion > 0 {
		h.Set("If-Match", strconv.Quote(strconv.FormatInt(o.IfVersion, 10)))
	}
	if o.CreateOnly {
		h.Set("If-None-Match", "*")
	}
	return h
}

// Get returns an entry's value and version. A missing entry: ErrNotFound.
func (c *Client) Get(ctx context.Context, domain, name string) ([]byte, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+EntryPath(domain, name), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, &ConnectError{Socket: c.socket, Err: unwrapURL(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, decodeError(resp)
	}
	v, err := io.ReadAll(io.LimitReader(resp.Body, MaxValueSize+1))
	if err != nil {
		return nil, 0, err
	}
	return v, etag(resp), nil
}

// Put creates or replaces an entry and returns its new version.
func (c *Client) Put(ctx context.Context, domain, name string, value []byte, o PutOptions) (int64, error) {
	resp, err := c.do(ctx, http.MethodPut, EntryPath(domain, name), o.header(), bytes.NewReader(value), nil)
	if err != nil {
		return 0, err
	}
	return etag(resp), nil
}

// Delete removes an entry (at o.IfVersion when set).
func (c *Client) Delete(ctx context.Context, domain, name string, o PutOptions) error {
	_, err := c.do(ctx, http.MethodDelete, EntryPath(domain, name), o.header(), nil, nil)
	return err
}

// List returns one page of names after after (at most limit; 0 = server
// default).
func (c *Client) List(ctx context.Context, domain, after string, limit int) (EntryList, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out EntryList
	_, err := c.do(ctx, http.MethodGet, PathDomains+url.PathEscape(domain)+"/entries?"+q.Encode(), nil, nil, &out)
	return out, err
}

// ListAll returns every name of a domain, sorted.
func (c *Client) ListAll(ctx context.Context, domain string) ([]string, error) {
	var all []string
	after := ""
	for {
		page, err := c.List(ctx, domain, after, 1000)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Names...)
		if page.Next == "" {
			return all, nil
		}
		after = page.Next
	}
}

// Import sends JSON lines ({"name":…,"value":<base64>}) to be imported all
// or nothing.
func (c *Client) Import(ctx context.Context, domain string, lines io.Reader) (ImportResponse, error) {
	var out ImportResponse
	_, err := c.do(ctx, http.MethodPost, PathDomains+url.PathEscape(domain)+"/import", http.Header{"Content-Type": {"application/x-ndjson"}}, lines, &out)
	return out, err
}

// Export writes every entry of domain as JSON lines to w.
func (c *Client) Export(ctx context.Context, domain string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+PathDomains+url.PathEscape(domain)+"/export", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &ConnectError{Socket: c.socket, Err: unwrapURL(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	// The stream ends with a trailer line only when the export completed,
	// so a cut connection is never taken for a complete export.
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && err == nil {
			if bytes.Equal(line, []byte(ExportEnd+"\n")) {
				return nil
			}
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return fmt.Errorf("export of %s ended early: %w", domain, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
}

// ExportEnd is the line that ends a complete export stream. It is not JSON,
// so it cannot be mistaken for an entry.
const ExportEnd = "#end"

// ClusterStatus returns `cluster status`.
func (c *Client) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	var out ClusterStatus
	_, err := c.do(ctx, http.MethodGet, PathStatus+ScopeCluster, nil, nil, &out)
	return out, err
}

// SEDStatus returns `sed status`.
func (c *Client) SEDStatus(ctx context.Context) (SEDStatus, error) {
	var out SEDStatus
	_, err := c.do(ctx, http.MethodGet, PathStatus+ScopeSED, nil, nil, &out)
	return out, err
}

// StartRekey starts a rekey of the scope's domains (all when none named).
func (c *Client) StartRekey(ctx context.Context, scope string, domains []string) (RekeyStartResponse, error) {
	var out RekeyStartResponse
	_, err := c.do(ctx, http.MethodPost, PathRekey+url.PathEscape(scope), nil, jsonBody(RekeyStartRequest{Domains: domains}), &out)
	return out, err
}

// RekeyView returns a scope's rotation schedule.
func (c *Client) RekeyView(ctx context.Context, scope string) (RekeyView, error) {
	var out RekeyView
	_, err := c.do(ctx, http.MethodGet, PathRekey+url.PathEscape(scope), nil, nil, &out)
	return out, err
}

// RekeyModify sets a scope's key rotation.
func (c *Client) RekeyModify(ctx context.Context, scope, rotation string) (RekeyView, error) {
	var out RekeyView
	_, err := c.do(ctx, http.MethodPut, PathRekey+url.PathEscape(scope), nil, jsonBody(RekeyModifyRequest{KeyRotation: rotation}), &out)
	return out, err
}

// Events lists events at or after since (zero: all).
func (c *Client) Events(ctx context.Context, since time.Time) (EventList, error) {
	p := PathEvents
	if !since.IsZero() {
		p += "?since=" + url.QueryEscape(since.UTC().Format(time.RFC3339Nano))
	}
	var out EventList
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, &out)
	return out, err
}

// UILink asks for a one-time link that signs a browser in to the web page.
// With the web page off (kmd has no --ui-listen): ErrConflict.
func (c *Client) UILink(ctx context.Context) (UILink, error) {
	var out UILink
	_, err := c.do(ctx, http.MethodPost, PathUILinks, nil, nil, &out)
	return out, err
}

// Version returns the daemon's version.
func (c *Client) Version(ctx context.Context) (Version, error) {
	var out Version
	_, err := c.do(ctx, http.MethodGet, PathVersion, nil, nil, &out)
	return out, err
}
