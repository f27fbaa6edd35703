package virtq_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/wren-vm/wren/vsockd/virtq"
	"github.com/wren-vm/wren/vsockd/virtq/virtqtest"
)

func TestPopWalkPush(t *testing.T) {
	d := virtqtest.New(1<<20, 8)
	q := d.Queue()
	if q.Pending() {
		t.Fatal("empty queue reports pending chains")
	}
	head, ok := d.Post(virtqtest.Seg{Data: []byte("hello ")}, virtqtest.Seg{Data: []byte("world")}, virtqtest.Seg{WriteLen: 16})
	if !ok {
		t.Fatal("post failed")
	}
	got, ok, err := q.Pop()
	if err != nil || !ok || got != head {
		t.Fatalf("Pop = %d %v %v, want %d", got, ok, err, head)
	}
	c, err := q.Walk(got)
	if err != nil {
		t.Fatal(err)
	}
	if c.ReadLen != 11 || c.WriteLen != 16 || len(c.Readable) != 2 || len(c.Writable) != 1 {
		t.Fatalf("chain %+v", c)
	}
	if string(c.Readable[0])+string(c.Readable[1]) != "hello world" {
		t.Fatalf("readable %q %q", c.Readable[0], c.Readable[1])
	}
	copy(c.Writable[0], "answer")
	q.Push(head, 6)
	if _, ok, _ := q.Pop(); ok {
		t.Fatal("second Pop on a drained queue returned a chain")
	}
	used := d.Collect()
	if len(used) != 1 || used[0].Head != head || used[0].Len != 6 || string(used[0].Written) != "answer" {
		t.Fatalf("used %+v", used)
	}
}

// The 16-bit ring indices wrap; run well past 65536 on a small queue.
func TestIndexWrap(t *testing.T) {
	d := virtqtest.New(1<<16, 4)
	q := d.Queue()
	for i := 0; i < 70000; i++ {
		payload := []byte{byte(i), byte(i >> 8), byte(i >> 16)}
		head, ok := d.Post(virtqtest.Seg{Data: payload})
		if !ok {
			t.Fatalf("iteration %d: no free descriptors", i)
		}
		got, ok, err := q.Pop()
		if err != nil || !ok || got != head {
			t.Fatalf("iteration %d: Pop = %d %v %v", i, got, ok, err)
		}
		c, err := q.Walk(got)
		if err != nil || !bytes.Equal(c.Readable[0], payload) {
			t.Fatalf("iteration %d: walk %v %v", i, c.Readable, err)
		}
		q.Push(got, 0)
		if u := d.Collect(); len(u) != 1 || u[0].Head != head {
			t.Fatalf("iteration %d: used %+v", i, u)
		}
	}
	if q.LastAvail() != uint16(70000%65536) {
		t.Fatalf("LastAvail %d", q.LastAvail())
	}
}

func TestMalformedChains(t *testing.T) {
	const size = 8
	ramEnd := uint64(virtqtest.Base + 1<<16)
	tests := []struct {
		name  string
		setup func(d *virtqtest.Driver, buf uint64)
		want  string
	}{
		{"loop", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 8, virtq.DescFNext, 1)
			d.SetDesc(1, buf, 8, virtq.DescFNext, 0)
		}, "loops"},
		{"self loop", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 8, virtq.DescFNext, 0)
		}, "loops"},
		{"next out of range", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 8, virtq.DescFNext, size)
		}, "out of range"},
		{"address below RAM", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, 0x100, 8, 0, 0)
		}, "outside guest memory"},
		{"address beyond RAM", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, ramEnd, 1, 0, 0)
		}, "outside guest memory"},
		{"length past end of RAM", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, ramEnd-4, 8, 0, 0)
		}, "outside guest memory"},
		{"address wraps", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, ^uint64(0)-2, 16, 0, 0)
		}, "outside guest memory"},
		{"oversized", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 0xffffffff, 0, 0)
		}, "longer than"},
		{"oversized in sum", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 40000, virtq.DescFNext, 1)
			d.SetDesc(1, buf, 40000, 0, 0)
		}, "longer than"},
		{"readable after writable", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 8, virtq.DescFNext|virtq.DescFWrite, 1)
			d.SetDesc(1, buf, 8, 0, 0)
		}, "readable after writable"},
		{"indirect", func(d *virtqtest.Driver, buf uint64) {
			d.SetDesc(0, buf, 16, virtq.DescFIndirect, 0)
		}, "indirect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := virtqtest.New(1<<16, size)
			q := d.Queue()
			q.MaxChainLen = 65536
			buf := d.Alloc(64)
			tc.setup(d, buf)
			d.PublishHead(0)
			head, ok, err := q.Pop()
			if err != nil || !ok {
				t.Fatalf("Pop: %v %v", ok, err)
			}
			_, err = q.Walk(head)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Walk error %v, want %q", err, tc.want)
			}
			// The chain can be returned and the queue keeps working.
			q.Push(head, 0)
			h2, ok := d.Post(virtqtest.Seg{Data: []byte("ok")})
			if !ok {
				t.Fatal("post")
			}
			if got, ok, err := q.Pop(); err != nil || !ok || got != h2 {
				t.Fatalf("queue unusable after malformed chain: %d %v %v", got, ok, err)
			}
		})
	}
}

func TestBrokenRing(t *testing.T) {
	t.Run("head out of range", func(t *testing.T) {
		d := virtqtest.New(1<<16, 8)
		q := d.Queue()
		d.PublishHead(8)
		if _, _, err := q.Pop(); !errors.Is(err, virtq.ErrBroken) {
			t.Fatalf("Pop = %v, want ErrBroken", err)
		}
		if !q.Broken() || q.Pending() {
			t.Fatal("queue not marked broken")
		}
		if _, _, err := q.Pop(); !errors.Is(err, virtq.ErrBroken) {
			t.Fatal("broken queue popped again")
		}
	})
	t.Run("avail index too far ahead", func(t *testing.T) {
		d := virtqtest.New(1<<16, 8)
		q := d.Queue()
		d.SetAvailIdx(9)
		if _, _, err := q.Pop(); !errors.Is(err, virtq.ErrBroken) {
			t.Fatalf("Pop = %v, want ErrBroken", err)
		}
	})
	t.Run("avail index behind", func(t *testing.T) {
		d := virtqtest.New(1<<16, 8)
		q := d.Queue()
		d.SetAvailIdx(0xffff) // 65535 entries "ahead" modulo 2^16
		if _, _, err := q.Pop(); !errors.Is(err, virtq.ErrBroken) {
			t.Fatalf("Pop = %v, want ErrBroken", err)
		}
	})
}

func TestNewValidatesLayout(t *testing.T) {
	d := virtqtest.New(1<<16, 8)
	bad := []struct {
		name string
		l    virtq.Layout
	}{
		{"size not power of two", virtq.Layout{Size: 6, DescAddr: d.Layout.DescAddr, AvailAddr: d.Layout.AvailAddr, UsedAddr: d.Layout.UsedAddr}},
		{"size zero", virtq.Layout{Size: 0, DescAddr: d.Layout.DescAddr, AvailAddr: d.Layout.AvailAddr, UsedAddr: d.Layout.UsedAddr}},
		{"desc outside RAM", virtq.Layout{Size: 8, DescAddr: 0x1000, AvailAddr: d.Layout.AvailAddr, UsedAddr: d.Layout.UsedAddr}},
		{"used past end", virtq.Layout{Size: 8, DescAddr: d.Layout.DescAddr, AvailAddr: d.Layout.AvailAddr, UsedAddr: virtqtest.Base + 1<<16 - 8}},
		{"used misaligned", virtq.Layout{Size: 8, DescAddr: d.Layout.DescAddr, AvailAddr: d.Layout.AvailAddr, UsedAddr: d.Layout.UsedAddr + 2}},
		{"avail misaligned", virtq.Layout{Size: 8, DescAddr: d.Layout.DescAddr, AvailAddr: d.Layout.AvailAddr + 1, UsedAddr: d.Layout.UsedAddr}},
	}
	for _, tc := range bad {
		if _, err := virtq.New(d.Mem, tc.l, 0); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, tc.l)
		}
	}
}

// A 2-byte-aligned (but not 4-byte-aligned) avail ring is legal.
func TestAvailTwoByteAligned(t *testing.T) {
	d := virtqtest.New(1<<16, 8)
	l := d.Layout
	l.AvailAddr += 2
	l.UsedAddr += 4
	q, err := virtq.New(d.Mem, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Layout = l
	head, _ := d.Post(virtqtest.Seg{Data: []byte("x")})
	if got, ok, err := q.Pop(); err != nil || !ok || got != head {
		t.Fatalf("Pop = %d %v %v", got, ok, err)
	}
}

func TestNeedNotify(t *testing.T) {
	d := virtqtest.New(1<<16, 8)
	q := d.Queue()
	if !q.NeedNotify() {
		t.Fatal("NeedNotify false without NO_INTERRUPT")
	}
	d.SetNoInterrupt(true)
	if q.NeedNotify() {
		t.Fatal("NeedNotify true with NO_INTERRUPT")
	}
}

func TestStartsFromUsedIdx(t *testing.T) {
	d := virtqtest.New(1<<16, 8)
	q := d.Queue()
	for i := 0; i < 3; i++ {
		h, _ := d.Post(virtqtest.Seg{Data: []byte("x")})
		if _, ok, err := q.Pop(); !ok || err != nil {
			t.Fatalf("pop %d: %v %v", i, ok, err)
		}
		q.Push(h, 0)
	}
	d.Collect()
	// A restarted device resumes at the driver's used.idx and the
	// frontend-supplied avail base.
	q2, err := virtq.New(d.Mem, d.Layout, q.LastAvail())
	if err != nil {
		t.Fatal(err)
	}
	h, _ := d.Post(virtqtest.Seg{Data: []byte("y")})
	got, ok, err := q2.Pop()
	if err != nil || !ok || got != h {
		t.Fatalf("Pop = %d %v %v", got, ok, err)
	}
	q2.Push(h, 0)
	if u := d.Collect(); len(u) != 1 || u[0].Head != h || d.UsedIdx() != 4 {
		t.Fatalf("used %+v idx %d", u, d.UsedIdx())
	}
}

// With EVENT_IDX the device interrupts only when used.idx passes the
// driver's used_event, counting from the previous check.
func TestEventIdxNotify(t *testing.T) {
	d := virtqtest.New(1<<16, 8)
	q := d.Queue()
	q.EventIdx = true
	push := func() {
		h, _ := d.Post(virtqtest.Seg{Data: []byte("x")})
		if got, ok, err := q.Pop(); err != nil || !ok || got != h {
			t.Fatalf("Pop = %d %v %v", got, ok, err)
		}
		q.Push(h, 0)
	}
	d.SetUsedEvent(0)
	push() // used.idx 0 → 1 passes event 0
	if !q.NeedNotify() {
		t.Fatal("no interrupt when used.idx passed used_event")
	}
	push() // 1 → 2, event still 0: already signalled for it
	if q.NeedNotify() {
		t.Fatal("interrupt although used_event was already passed")
	}
	d.SetUsedEvent(4)
	push() // 2 → 3
	if q.NeedNotify() {
		t.Fatal("interrupt before used_event")
	}
	push() // 3 → 4
	push() // 4 → 5 passes 4
	if !q.NeedNotify() {
		t.Fatal("no interrupt after passing used_event in a batch")
	}
	d.Collect()
	// NO_INTERRUPT is ignored under EVENT_IDX.
	d.SetNoInterrupt(true)
	d.SetUsedEvent(5)
	push()
	if !q.NeedNotify() {
		t.Fatal("EVENT_IDX interrupt suppressed by the flag")
	}
}

func TestEventIdxEnableKicks(t *testing.T) {
	d := virtqtest.New(1<<16, 8)
	q := d.Queue()
	if q.EnableKicks() {
		t.Fatal("EnableKicks without EVENT_IDX reported chains")
	}
	q.EventIdx = true
	for i := 0; i < 3; i++ {
		h, _ := d.Post(virtqtest.Seg{Data: []byte("x")})
		if _, ok, err := q.Pop(); !ok || err != nil {
			t.Fatalf("pop %d: %v %v", i, ok, err)
		}
		q.Push(h, 0)
	}
	if q.EnableKicks() {
		t.Fatal("EnableKicks on an empty ring reported chains")
	}
	if d.AvailEvent() != 3 {
		t.Fatalf("avail_event %d, want 3 (the next index the device will read)", d.AvailEvent())
	}
	// A chain made available before the re-check is seen.
	d.Post(virtqtest.Seg{Data: []byte("y")})
	if !q.EnableKicks() {
		t.Fatal("EnableKicks missed a pending chain")
	}
}
