// Package replysplice lets an RPC handler have the last field of its reply
// sent straight from a pipe to the connection, so that streamed output
// (ReadStdout's data) never passes through the agent's memory.
//
// Without it every byte of container output is read from the pipe into a
// buffer, marshalled into a frame and written to the socket: two copies in
// user space and a buffer per reply, which made the agent's CPU the limit
// of figure 7 (docs/perf/stdout.md). With it the server writes the frame up
// to the field's tag and length and then splice(2)s the bytes from the pipe
// to the socket.
//
// The reply says so itself. The code that owns the pipe hands over bytes it
// holds as a Pipe (Hold), and the handler returns a *Reply: its message
// without the field, the field's name and the Pipe, in place of the
// message. agent/server recognises the type: it checks the field, sends the
// message and then the bytes from the pipe (spliced, or copied where the
// connection cannot splice), and closes the Pipe after; in its stock mode
// it reads the bytes into the message first (ReadIn). Other servers only
// send messages, so only handlers registered on agent/server return one.
package replysplice

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Pipe is n bytes that a pipe holds, handed over to be sent from there.
type Pipe struct {
	fd      int // a duplicate of the pipe's descriptor, owned here
	n       int
	release func()
	close   sync.Once
}

// Hold hands over n bytes that the pipe pipeFd holds now. The caller must
// keep every other reader off the pipe until release runs: Close runs it,
// once, after the reply is written or has failed (the bytes may then still
// be in the pipe). Hold takes a duplicate of pipeFd, so the caller may close
// its own descriptor meanwhile. On an error (n is not positive, or the
// duplicate cannot be made) release never runs, and the caller reads the
// data itself.
func Hold(pipeFd, n int, release func()) (*Pipe, error) {
	if n <= 0 {
		return nil, fmt.Errorf("hold %d bytes of a pipe", n)
	}
	fd, err := unix.FcntlInt(uintptr(pipeFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate pipe descriptor: %w", err)
	}
	return &Pipe{fd: fd, n: n, release: release}, nil
}

// Len is the number of bytes held.
func (p *Pipe) Len() int { return p.n }

// Fd is the pipe's descriptor to read or splice the bytes from; it is
// valid until Close.
func (p *Pipe) Fd() int { return p.fd }

// Close closes the descriptor and runs the release given to Hold. Later
// calls do nothing.
func (p *Pipe) Close() {
	p.close.Do(func() {
		unix.Close(p.fd)
		if p.release != nil {
			p.release()
		}
	})
}

// readAll reads the held bytes into memory. Hold's contract (the pipe holds
// them, and no one else reads it) means they are there to read at once.
func (p *Pipe) readAll() ([]byte, error) {
	b := make([]byte, p.n)
	for got := 0; got < len(b); {
		m, err := unix.Read(p.fd, b[got:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, fmt.Errorf("read held bytes: %w", err)
		case m == 0:
			return nil, fmt.Errorf("pipe ran dry after %d of %d held bytes", got, len(b))
		}
		got += m
	}
	return b, nil
}

// Reply is a reply whose last field is sent from a pipe: Message, which
// leaves its bytes field named Field unset, followed by that field holding
// Data's bytes.
type Reply struct {
	Message proto.Message
	Field   protoreflect.Name
	Data    *Pipe
}

var errIncomplete = errors.New("spliced reply without a message or data")

// field returns the descriptor of the field the data fills, after checking
// that it is a singular bytes field that Message leaves unset.
func (r *Reply) field() (protoreflect.FieldDescriptor, error) {
	if r.Data == nil || r.Message == nil {
		return nil, errIncomplete
	}
	m := r.Message.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(r.Field)
	switch {
	case fd == nil:
		return nil, fmt.Errorf("%s has no field %q to splice", m.Descriptor().FullName(), r.Field)
	case fd.Kind() != protoreflect.BytesKind || fd.Cardinality() == protoreflect.Repeated:
		return nil, fmt.Errorf("%s is not a singular bytes field", fd.FullName())
	case m.Has(fd):
		return nil, fmt.Errorf("%s is set in a reply that splices it", fd.FullName())
	}
	return fd, nil
}

// Number returns the wire number of the field the data fills, or an error
// when the reply is not one a server can send (see Reply).
func (r *Reply) Number() (protowire.Number, error) {
	fd, err := r.field()
	if err != nil {
		return 0, err
	}
	return fd.Number(), nil
}

// ReadIn reads Data's bytes into the field and returns Message, for a
// server that sends whole messages. The caller still closes the reply.
func (r *Reply) ReadIn() (proto.Message, error) {
	fd, err := r.field()
	if err != nil {
		return nil, err
	}
	b, err := r.Data.readAll()
	if err != nil {
		return nil, err
	}
	r.Message.ProtoReflect().Set(fd, protoreflect.ValueOfBytes(b))
	return r.Message, nil
}

// Close closes Data. The server calls it once the reply has been written or
// has failed, whether or not it sent the data.
func (r *Reply) Close() {
	if r.Data != nil {
		r.Data.Close()
	}
}
