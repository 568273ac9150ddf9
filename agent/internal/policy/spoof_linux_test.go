package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNS opens a socket inside the network namespace at path; the socket stays
// bound to that namespace after the thread switches back.
func inNS(t *testing.T, path string, domain, typ, proto int) int {
	t.Helper()
	type res struct {
		fd  int
		err error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked (and dies with the goroutine) if
		// switching back fails.
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- res{-1, err}
			return
		}
		defer self.Close()
		target, err := os.Open(path)
		if err != nil {
			ch <- res{-1, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{-1, err}
			return
		}
		fd, serr := unix.Socket(domain, typ, proto)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{-1, errors.Join(serr, err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{fd, serr}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("socket in %s: %v", path, r.err)
	}
	t.Cleanup(func() { _ = unix.Close(r.fd) })
	return r.fd
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// sendEcho sends one ICMP echo request with a hand-made IPv4 header, so the
// source address can be anything.
func sendEcho(t *testing.T, fd int, src, dst netip.Addr, id uint16) {
	t.Helper()
	icmp := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'p', 't', 'l'}
	binary.BigEndian.PutUint16(icmp[2:], csum(icmp))
	ip := make([]byte, 20, 20+len(icmp))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	ip[8], ip[9] = 64, unix.IPPROTO_ICMP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], csum(ip))
	if err := unix.Sendto(fd, append(ip, icmp...), 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
		t.Fatalf("send echo %s -> %s: %v", src, dst, err)
	}
}

// awaitEcho reports whether an echo request with id from src reaches the
// raw ICMP socket fd within a second.
func awaitEcho(t *testing.T, fd int, src netip.Addr, id uint16) bool {
	t.Helper()
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if n < 28 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		from, _ := netip.AddrFromSlice(buf[12:16])
		if from == src && buf[ihl] == 8 && binary.BigEndian.Uint16(buf[ihl+4:]) == id {
			return true
		}
	}
	return false
}

// TestKernelSpoof sends echo requests from a raw socket inside a container:
// with its own source address they arrive, with a forged one (another
// container of the destination's group, or a non-container address) they are
// dropped by anti-spoofing, and the spoof counter shows it.
func TestKernelSpoof(t *testing.T) {
	l := newLab(t, DefaultOpen)
	a := l.add("a", []string{"10.64.4.1"}, "g")
	b := l.add("b", []string{"10.64.4.2"}, "g")
	l.add("c", []string{"10.64.4.3"}, "g")
	l.reconcile()
	l.can("a", "b")

	tx := inNS(t, a.Path, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	rx := inNS(t, b.Path, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	dst := netip.MustParseAddr("10.64.4.2")
	tests := []struct {
		name   string
		src    string
		arrive bool
	}{
		{"own address", "10.64.4.1", true},
		{"address of a group peer", "10.64.4.3", false},
		{"non-container address", "10.250.9.77", false},
		{"own address again", "10.64.4.1", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := l.pol.Drops(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			src := netip.MustParseAddr(tc.src)
			id := uint16(0x5000 + i)
			sendEcho(t, tx, src, dst, id)
			if got := awaitEcho(t, rx, src, id); got != tc.arrive {
				t.Errorf("echo from %s arrived: got %v, want %v", src, got, tc.arrive)
			}
			after, err := l.pol.Drops(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if grew := after.Spoofed > before.Spoofed; grew == tc.arrive {
				t.Errorf("spoof counter %d -> %d: got grew=%v, want %v", before.Spoofed, after.Spoofed, grew, !tc.arrive)
			}
		})
	}
}
