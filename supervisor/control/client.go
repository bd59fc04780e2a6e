package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
)

// Client talks to a running baton over its control socket. Its methods
// are safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the control socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// NotRunningError says that no baton answers on the socket.
type NotRunningError struct{ Socket string }

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("baton is not running: nothing answers on %s (start it with baton run, or pass -config or -socket)", e.Socket)
}

// Status returns the programs of the running baton.
func (c *Client) Status(ctx context.Context) (StatusReply, error) {
	var st StatusReply
	err := c.do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

// Reload asks baton to re-read its config and hand over programs (all
// when none are named), and waits for the outcome.
func (c *Client) Reload(ctx context.Context, programs ...string) (ReloadReply, error) {
	var reply ReloadReply
	err := c.do(ctx, "POST", "/v1/reload", ReloadRequest{Programs: programs}, &reply)
	return reply, err
}

// Restart, Stop and Start act on one program and wait for the outcome. A
// failed handover or start is a Result with Error set, not an error.
func (c *Client) Restart(ctx context.Context, program string) (Result, error) {
	return c.program(ctx, "restart", program)
}

// Stop stops every generation of program; see Restart.
func (c *Client) Stop(ctx context.Context, program string) (Result, error) {
	return c.program(ctx, "stop", program)
}

// Start starts a stopped program; see Restart.
func (c *Client) Start(ctx context.Context, program string) (Result, error) {
	return c.program(ctx, "start", program)
}

// Promote ends a program's bake as passed; see Restart.
func (c *Client) Promote(ctx context.Context, program string) (Result, error) {
	return c.program(ctx, "promote", program)
}

// Revert ends a program's bake as failed: the old generation serves on;
// see Restart.
func (c *Client) Revert(ctx context.Context, program string) (Result, error) {
	return c.program(ctx, "revert", program)
}

// Rollback hands a program over to the binary of the generation that
// served before the current one; see Restart.
func (c *Client) Rollback(ctx context.Context, program string) (Result, error) {
	return c.program(ctx, "rollback", program)
}

// Upgrade asks baton to replace itself by the binary on disk, in place.
// It returns once the binary passed its checks and baton is about to
// exec it; UpgradeStatus tells the outcome.
func (c *Client) Upgrade(ctx context.Context) (UpgradeReply, error) {
	var r UpgradeReply
	err := c.do(ctx, "POST", "/v1/upgrade", nil, &r)
	return r, err
}

// UpgradeStatus returns the running baton's version and upgrades.
func (c *Client) UpgradeStatus(ctx context.Context) (UpgradeStatus, error) {
	var st UpgradeStatus
	err := c.do(ctx, "GET", "/v1/upgrade", nil, &st)
	return st, err
}

func (c *Client) program(ctx context.Context, verb, name string) (Result, error) {
	var r Result
	err := c.do(ctx, "POST", "/v1/programs/"+url.PathEscape(name)+"/"+verb, nil, &r)
	return r, err
}

// Logs returns the last lines of program's output, one per line; with
// follow, the body goes on with new lines until ctx ends. The caller
// closes it.
func (c *Client) Logs(ctx context.Context, program string, lines int, follow bool) (io.ReadCloser, error) {
	q := fmt.Sprintf("/v1/programs/%s/logs?lines=%d", url.PathEscape(program), lines)
	if follow {
		q += "&follow=1"
	}
	return c.stream(ctx, q)
}

// stream GETs path and returns the body of its answer.
func (c *Client) stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, "GET", path, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, replyError(resp)
	}
	return resp.Body, nil
}

// LogsEnd is the last line of a numbered stream (FollowLogs) that ended
// because baton stopped; a stream cut without it was cut by an upgrade of
// baton, and goes on from the line after the last one read.
const LogsEnd = "END"

// FollowLogs follows program's output: the last lines (or, with after >
// 0, every line kept after line number after), then new lines until ctx
// ends or baton stops. Each line begins with its number and a space;
// the stream of a baton that stopped ends with LogsEnd. The caller
// closes the body.
func (c *Client) FollowLogs(ctx context.Context, program string, lines int, after uint64) (io.ReadCloser, error) {
	return c.stream(ctx, fmt.Sprintf("/v1/programs/%s/logs?lines=%d&follow=1&seq=1&after=%d", url.PathEscape(program), lines, after))
}

// do sends a request and decodes a JSON answer into out. A 409 (a
// handover that failed) decodes like a success: the Result says why.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusConflict {
		return replyError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bad answer from baton: %w", err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://baton"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return nil, &NotRunningError{c.socket}
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("cannot use %s: permission denied (it belongs to the user baton runs as)", c.socket)
	}
	return nil, err
}

// replyError turns a failed answer into an error: its ErrorReply, or its
// status and body.
func replyError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e ErrorReply
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
}
