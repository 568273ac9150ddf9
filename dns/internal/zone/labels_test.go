package zone

import (
	"strings"
	"testing"
)

func TestLabels(t *testing.T) {
	dashes := "hello" + strings.Repeat("-", 57) + "f" // 63 bytes
	tests := []struct {
		name, in, want string
		f              LabelFunc
	}{
		{"1123 leading dash", "-4abc123", "4abc123", RFC1123},
		{"952 leading digit", "4abc123", "abc123", RFC952},
		{"952 spaces", "chronos with a space AND MIXED CASE-2.0.1", "chronoswithaspaceandmixe", RFC952},
		{"1123 spaces", "chronos with a space AND MIXED CASE-2.0.1", "chronoswithaspaceandmixedcase-2-0-1", RFC1123},
		{"1123 dashes kept", dashes, dashes, RFC1123},
		{"952 dashes refill", dashes, "hellof", RFC952},
		{"dots and underscores", "Batch.Job_1!", "batch-job-1", RFC1123},
		{"empty", "$$$", "", RFC1123},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDomainFrag(t *testing.T) {
	tests := []struct {
		in, want string
		f        LabelFunc
	}{
		{"pod_123$abc.marathon-0.6.0-dev.mesos", "pod-123abc.marathon-0.dev.mesos", RFC952},
		{"(@ host . com", "host.com", RFC1123},
		{"a..c", "a.c", RFC1123},
		{"My Framework.v2", "myframework.v2", RFC1123},
		{"chronos with a space AND MIXED CASE-2.0.1", "chronoswithaspaceandmixedcase-2.0.1", RFC1123},
	}
	for _, tc := range tests {
		if got := DomainFrag(tc.in, tc.f); got != tc.want {
			t.Errorf("DomainFrag(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestHashString(t *testing.T) {
	if got := hashString("test"); got != "iffe9" {
		t.Errorf("got %q, want iffe9", got)
	}
	if got := hashString("web.11111111-aaaa-11e6-a088-c20493233aa5"); got != "tusms" {
		t.Errorf("got %q, want tusms", got)
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a.mesos.", true},
		{"x..mesos.", false},
		{"a.mesos", false},
		{strings.Repeat("a", 64) + ".mesos.", false},
		{strings.Repeat("a", 63) + ".mesos.", true},
	}
	for _, tc := range tests {
		if got := validName(tc.in); got != tc.want {
			t.Errorf("validName(%q): got %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzLabels checks the sanitisers' invariants on arbitrary names.
func FuzzLabels(f *testing.F) {
	for _, s := range []string{"-4abc123", "chronos with a space AND MIXED CASE-2.0.1", "hello" + strings.Repeat("-", 60) + "f", "a..c", "ÄÖ.x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			f   LabelFunc
			max int
		}{{RFC1123, 63}, {RFC952, 24}} {
			l := c.f(s)
			if len(l) > c.max {
				t.Fatalf("label %q of %q longer than %d", l, s, c.max)
			}
			if strings.HasPrefix(l, "-") {
				t.Fatalf("label %q of %q starts with '-'", l, s)
			}
			for _, r := range l {
				if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
					t.Fatalf("label %q of %q has %q", l, s, r)
				}
			}
			if c.f(l) != l && !strings.HasSuffix(l, "-") {
				t.Fatalf("not idempotent: %q -> %q", l, c.f(l))
			}
		}
		d := DomainFrag(s, RFC1123)
		if strings.Contains(d, "..") || strings.HasPrefix(d, ".") {
			t.Fatalf("DomainFrag(%q) = %q has an empty label", s, d)
		}
	})
}
