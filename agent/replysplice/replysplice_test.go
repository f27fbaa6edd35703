package replysplice

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func openPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestOfferNeedsServerAndAcceptedField(t *testing.T) {
	r, _ := openPipe(t)
	released := 0
	release := func() { released++ }
	if Offer(context.Background(), int(r.Fd()), 10, release) {
		t.Error("offer taken without a splicing server")
	}
	ctx, tail := With(context.Background())
	if Wanted(ctx) || Offer(ctx, int(r.Fd()), 10, release) {
		t.Error("offer taken before a field was accepted")
	}
	Accept(ctx, 1)
	if !Wanted(ctx) {
		t.Fatal("not wanted after Accept")
	}
	if Offer(ctx, int(r.Fd()), 0, release) {
		t.Error("empty offer taken")
	}
	if !Offer(ctx, int(r.Fd()), 10, release) {
		t.Fatal("offer refused")
	}
	if Wanted(ctx) || Offer(ctx, int(r.Fd()), 10, release) {
		t.Error("a second offer taken")
	}
	field, fd, n, ok := tail.Take()
	if !ok || field != 1 || n != 10 || fd == int(r.Fd()) || !isOpen(fd) {
		t.Fatalf("Take = field %d fd %d n %d ok %v; want field 1, n 10 and an open duplicate of fd %d", field, fd, n, ok, r.Fd())
	}
	if released != 0 {
		t.Fatal("released before Done")
	}
	tail.Done()
	tail.Done()
	if released != 1 {
		t.Errorf("release ran %d times, want once", released)
	}
	if isOpen(fd) {
		t.Error("duplicate descriptor still open after Done")
	}
	if !isOpen(int(r.Fd())) {
		t.Error("Done closed the caller's descriptor")
	}
}

func TestNoOfferAfterTheReply(t *testing.T) {
	r, _ := openPipe(t)
	ctx, tail := With(context.Background())
	Accept(ctx, 1)
	if _, _, _, ok := tail.Take(); ok {
		t.Fatal("Take found an offer nobody made")
	}
	if Offer(ctx, int(r.Fd()), 10, func() { t.Error("release of a refused offer ran") }) {
		t.Error("offer taken after the reply was sent")
	}
	tail.Done()
	var nilTail *Tail
	if _, _, _, ok := nilTail.Take(); ok {
		t.Error("a nil Tail offered something")
	}
}

func TestOfferOfAClosedDescriptorIsRefused(t *testing.T) {
	r, _ := openPipe(t)
	fd := int(r.Fd())
	r.Close()
	ctx, tail := With(context.Background())
	defer tail.Done()
	Accept(ctx, 1)
	if Offer(ctx, fd, 10, func() {}) {
		t.Error("offer of a closed descriptor taken")
	}
}
