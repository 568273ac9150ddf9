package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stats summarises latencies in milliseconds.
type Stats struct {
	N                        int
	P50, P90, P99, Max, Mean float64
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// nearest-rank percentile of sorted.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(p/100*float64(len(sorted))+0.999999) - 1
	k = max(0, min(k, len(sorted)-1))
	return sorted[k]
}

func summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Stats{N: len(s), P50: ms(pct(s, 50)), P90: ms(pct(s, 90)), P99: ms(pct(s, 99)), Max: ms(s[len(s)-1]),
		Mean: ms(sum / time.Duration(len(s)))}
}

func (s Stats) String() string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms", s.N, s.P50, s.P90, s.P99, s.Max)
}

// cpu is a snapshot of machine-wide busy CPU and this process's CPU
// (including reaped children: the plugins), in seconds.
type cpu struct{ busy, own float64 }

func readCPU() cpu {
	var c cpu
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		var tot, idle float64
		for i := 1; i < len(f) && i <= 8; i++ {
			v, _ := strconv.ParseFloat(f[i], 64)
			tot += v / 100
			if i == 4 || i == 5 {
				idle += v / 100
			}
		}
		c.busy = tot - idle
	}
	var s, ch unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &s)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &ch)
	tv := func(t unix.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	c.own = tv(s.Utime) + tv(s.Stime) + tv(ch.Utime) + tv(ch.Stime)
	return c
}

// otherCores is the CPU other processes (other tenants, petreld, the
// kernel's async work) used between a and b, in cores.
func otherCores(a, b cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return ((b.busy - a.busy) - (b.own - a.own)) / wall.Seconds()
}

// quietGate waits up to maxWait for other processes to use less than 0.3
// cores over a 2 s window, and reports what it saw.
func quietGate(maxWait time.Duration) string {
	start := time.Now()
	for {
		a := readCPU()
		t := time.Now()
		time.Sleep(2 * time.Second) // a measurement window, not a wait for state
		o := otherCores(a, readCPU(), time.Since(t))
		if o < 0.3 {
			return fmt.Sprintf("quiet (other=%.2f cores)", o)
		}
		if time.Since(start) >= maxWait {
			return fmt.Sprintf("NOT quiet after %.0fs (other=%.2f cores)", time.Since(start).Seconds(), o)
		}
	}
}
