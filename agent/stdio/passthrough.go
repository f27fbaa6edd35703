package stdio

import (
	"fmt"
	"os"
)

// Passthrough are host connections given to a process as its streams
// (Kata's passfd IO): the process reads and writes them directly and the
// agent copies nothing. A nil file keeps that stream a pipe.
type Passthrough struct {
	Stdin, Stdout, Stderr *os.File
}

// NewPassthrough is NewPipes with pt's files as the child's ends of the
// streams it names; the agent has no end of those (reads are EOF at once,
// writes ErrStdinClosed). The files are the Streams' from here on, closed
// with the other child ends, also when NewPassthrough fails.
func NewPassthrough(pipeSize int, pt Passthrough) (_ *Streams, err error) {
	s := newStreams(false)
	s.childIn, s.childOut, s.childErr = pt.Stdin, pt.Stdout, pt.Stderr
	defer func() {
		if err != nil {
			s.CloseChildEnds()
			s.Close()
		}
	}()
	if pt.Stdin == nil {
		if s.childIn, s.stdin, err = newPipe(pipeSize, true); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
	}
	if pt.Stdout == nil {
		if s.stdout, s.childOut, err = newPipe(pipeSize, false); err != nil {
			return nil, fmt.Errorf("stdout pipe: %w", err)
		}
		s.outCap = pipeCapacity(s.stdout)
		if s.outRC, err = s.stdout.SyscallConn(); err != nil {
			return nil, err
		}
	}
	if pt.Stderr == nil {
		if s.stderr, s.childErr, err = newPipe(pipeSize, false); err != nil {
			return nil, fmt.Errorf("stderr pipe: %w", err)
		}
		s.errCap = pipeCapacity(s.stderr)
		if s.errRC, err = s.stderr.SyscallConn(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Close closes the files of a Passthrough that no process got; nil is a
// no-op.
func (pt *Passthrough) Close() {
	if pt == nil {
		return
	}
	for _, f := range []*os.File{pt.Stdin, pt.Stdout, pt.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}
