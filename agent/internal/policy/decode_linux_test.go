package policy

import (
	"testing"

	"github.com/google/nftables"
)

// TestElemRoundTrip encodes keys the way apply does and decodes them the
// way read does.
func TestElemRoundTrip(t *testing.T) {
	tests := []struct {
		kind setKind
		key  string
	}{
		{kindIfname, "ptl-0a1b2c3d"},
		{kindAddr4, "10.1.2.3"},
		{kindAddr6, "fd00::1"},
		{kindIfAddr4, "veth0 . 10.1.2.3"},
		{kindIfAddr6, "ptl-x . fd00::2"},
		{kindVmap4, "10.9.9.9"},
	}
	for _, tc := range tests {
		b, err := encodeKey(tc.kind, tc.key)
		if err != nil {
			t.Fatalf("encodeKey(%d, %q): %v", tc.kind, tc.key, err)
		}
		if tc.kind.isMap() {
			continue // data needs the kernel's nested verdict encoding
		}
		got, _, err := decodeElem(tc.kind, nftables.SetElement{Key: b})
		if err != nil || got != tc.key {
			t.Errorf("decodeElem(encodeKey(%q)) = %q, %v; want the key back", tc.key, got, err)
		}
	}
	for _, bad := range []struct {
		kind setKind
		key  string
	}{{kindIfname, ""}, {kindIfname, "sixteen-chars-xx"}, {kindAddr4, "fd00::1"}, {kindIfAddr4, "10.0.0.1"}} {
		if _, err := encodeKey(bad.kind, bad.key); err == nil {
			t.Errorf("encodeKey(%d, %q): got no error", bad.kind, bad.key)
		}
	}
}

// FuzzDecodeElem feeds arbitrary kernel bytes to the element and verdict
// decoders: they must return an error or a value, never panic.
func FuzzDecodeElem(f *testing.F) {
	f.Add(uint8(kindIfAddr4), []byte("ptl-1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x00\x01"), []byte{})    // iface . ipv4
	f.Add(uint8(kindVmap4), []byte{10, 0, 0, 1}, []byte{8, 0, 1, 0, 0, 0, 0, 1})                                        // accept
	f.Add(uint8(kindVmap6), make([]byte, 16), []byte{8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd, 8, 0, 2, 0, 'c', '4', '_', 0}) // jump
	f.Fuzz(func(_ *testing.T, kind uint8, key, val []byte) {
		_, _, _ = decodeElem(setKind(kind%8), nftables.SetElement{Key: key, Val: val})
	})
}

// TestRenderRuleCounts checks ruleCount (model.go) against the renderers.
func TestRenderRuleCounts(t *testing.T) {
	setOf := func(name string) *nftables.Set { return &nftables.Set{Name: name} }
	for _, spec := range []chainSpec{
		{Kind: chainKindSpoof}, {Kind: chainKindFwd}, {Kind: chainKindIn},
		{Kind: chainKindCombo4, Groups: []string{"a", "b"}}, {Kind: chainKindCombo6, Groups: []string{"a"}},
	} {
		st := newState()
		st.addChain("x", spec)
		if got, want := len(renderRules(spec, setOf)), ruleCount(st); got != want {
			t.Errorf("chain kind %d: renders %d rules, ruleCount says %d", spec.Kind, got, want)
		}
	}
}
