package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of QEMU's machine protocol: one command at a time,
// asynchronous events are skipped.
type QMP struct {
	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
}

// QMPError is an error answer from QEMU.
type QMPError struct {
	Class, Desc string
}

func (e *QMPError) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

// DialQMP connects to a QMP socket and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q := &QMP{conn: conn, rd: bufio.NewReader(conn)}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	if err := conn.SetDeadline(dl); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %w", err)
	}
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := q.readMsg(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: no greeting: %v", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %w", err)
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) readMsg(v any) error {
	line, err := q.rd.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// Execute runs one command; args is marshalled as "arguments" and the
// "return" value is unmarshalled into result when it is not nil.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	// A connection that takes no deadline fails the read below anyway.
	stop := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Now()) })
	defer stop()
	var dl time.Time // none
	if d, ok := ctx.Deadline(); ok {
		dl = d
	}
	if err := q.conn.SetDeadline(dl); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := q.readMsg(&resp); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return fmt.Errorf("%s: %w", command, &QMPError{Class: resp.Error.Class, Desc: resp.Error.Desc})
		case resp.Return != nil:
			if result == nil {
				return nil
			}
			if err := json.Unmarshal(resp.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode answer: %w", command, err)
			}
			return nil
		default:
			return errors.New("qmp " + command + ": answer without return or error")
		}
	}
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
