package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// scanner reads JSON from a stream through a fixed buffer. It checks the
// structure of what it skips and can hand back the raw bytes of one value,
// so that only the values we use are decoded, and only when they changed.
type scanner struct {
	r        io.Reader
	buf      []byte
	pos, end int
	err      error // sticky read error (io.EOF at the end)
	// mark is where the value being captured starts in buf (-1: none); spill
	// holds the captured bytes that a refill moved out of buf.
	mark  int
	spill []byte
	stack []byte // closers of the open containers while skipping
}

const maxDepth = 1000

var errSyntax = errors.New("invalid JSON")

func (s *scanner) reset(r io.Reader) {
	if s.buf == nil {
		s.buf = make([]byte, 64<<10)
	}
	s.r, s.pos, s.end, s.err, s.mark = r, 0, 0, nil, -1
	s.spill = s.spill[:0]
}

// fill makes at least one unread byte available; false at the end or on a
// read error.
func (s *scanner) fill() bool {
	if s.pos < s.end {
		return true
	}
	if s.err != nil {
		return false
	}
	if s.mark >= 0 {
		s.spill = append(s.spill, s.buf[s.mark:s.end]...)
		s.mark = 0
	}
	s.pos, s.end = 0, 0
	for tries := 0; s.end == 0 && s.err == nil; tries++ {
		if tries == 100 {
			s.err = io.ErrNoProgress
			break
		}
		s.end, s.err = s.r.Read(s.buf)
	}
	return s.end > 0
}

func (s *scanner) fail() error {
	if s.err != nil && !errors.Is(s.err, io.EOF) {
		return s.err
	}
	return io.ErrUnexpectedEOF
}

// peek skips white space and returns the next byte without consuming it.
func (s *scanner) peek() (byte, error) {
	for s.fill() {
		c := s.buf[s.pos]
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return c, nil
		}
		s.pos++
	}
	return 0, s.fail()
}

// expect consumes c (after white space).
func (s *scanner) expect(c byte) error {
	got, err := s.peek()
	if err != nil {
		return err
	}
	if got != c {
		return fmt.Errorf("%w: got %q, want %q", errSyntax, got, c)
	}
	s.pos++
	return nil
}

// key reads an object key and the colon after it. The returned bytes are
// valid until the next read.
func (s *scanner) key(scratch *[]byte) ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.pos
	if i := bytes.IndexByte(s.buf[s.pos:s.end], '"'); i >= 0 && bytes.IndexByte(s.buf[s.pos:s.pos+i], '\\') < 0 {
		s.pos += i + 1
		k := s.buf[start : s.pos-1]
		return k, s.expect(':')
	}
	// A key split across reads, or with escapes: decode it properly.
	s.pos--
	raw, err := s.capture()
	if err != nil {
		return nil, err
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, err
	}
	*scratch = append((*scratch)[:0], k...)
	return *scratch, s.expect(':')
}

// skip consumes one value. It checks that brackets match and strings end,
// but not the rest of the grammar of what it skips: the values that are used
// are decoded by encoding/json, which checks them fully.
func (s *scanner) skip() error {
	c, err := s.peek()
	if err != nil {
		return err
	}
	if c != '"' && c != '{' && c != '[' {
		return s.literal()
	}
	depth := 0
	inStr, esc := false, false
	for s.fill() {
		b := s.buf[s.pos:s.end]
		for i := 0; i < len(b); i++ {
			c := b[i]
			if inStr {
				switch {
				case esc:
					esc = false
				case c == '\\':
					esc = true
				case c == '"':
					inStr = false
					if depth == 0 {
						s.pos += i + 1
						return nil
					}
				}
				continue
			}
			switch c {
			case '"':
				inStr = true
			case '{', '[':
				if depth == len(s.stack) {
					if depth >= maxDepth {
						return fmt.Errorf("%w: nested too deeply", errSyntax)
					}
					s.stack = append(s.stack, 0)
				}
				s.stack[depth] = c + 2 // '}' and ']'
				depth++
			case '}', ']':
				if depth == 0 || s.stack[depth-1] != c {
					return fmt.Errorf("%w: unexpected %q", errSyntax, c)
				}
				depth--
				if depth == 0 {
					s.pos += i + 1
					return nil
				}
			}
		}
		s.pos = s.end
	}
	return s.fail()
}

// literal consumes a number, true, false or null.
func (s *scanner) literal() error {
	n := 0
	for s.fill() {
		c := s.buf[s.pos]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E') {
			break
		}
		s.pos++
		n++
	}
	if n > 0 {
		return nil
	}
	if s.pos >= s.end {
		return s.fail()
	}
	return fmt.Errorf("%w: unexpected %q", errSyntax, s.buf[s.pos])
}

// capture consumes one value and returns its bytes, valid until the next
// read.
func (s *scanner) capture() ([]byte, error) {
	if _, err := s.peek(); err != nil {
		return nil, err
	}
	s.mark = s.pos
	s.spill = s.spill[:0]
	err := s.skip()
	mark := s.mark
	s.mark = -1
	if err != nil {
		return nil, err
	}
	if len(s.spill) == 0 {
		return s.buf[mark:s.pos], nil
	}
	s.spill = append(s.spill, s.buf[:s.pos]...)
	return s.spill, nil
}

// null consumes a null if one comes next.
func (s *scanner) null() (bool, error) {
	c, err := s.peek()
	if err != nil || c != 'n' {
		return false, err
	}
	raw, err := s.capture()
	if err != nil {
		return false, err
	}
	if string(raw) != "null" {
		return false, fmt.Errorf("%w: got %q", errSyntax, raw)
	}
	return true, nil
}

// object walks an object, calling field for every key; null is an empty
// object.
func (s *scanner) object(field func(k []byte) error) error {
	if null, err := s.null(); null || err != nil {
		return err
	}
	if err := s.expect('{'); err != nil {
		return err
	}
	var scratch []byte
	if c, err := s.peek(); err != nil {
		return err
	} else if c == '}' {
		s.pos++
		return nil
	}
	for {
		k, err := s.key(&scratch)
		if err != nil {
			return err
		}
		if err := field(k); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if done, err := s.endOrComma('}', "object"); done || err != nil {
			return err
		}
	}
}

// array walks an array, calling elem for every element; null is empty.
func (s *scanner) array(elem func() error) error {
	if null, err := s.null(); null || err != nil {
		return err
	}
	if err := s.expect('['); err != nil {
		return err
	}
	if c, err := s.peek(); err != nil {
		return err
	} else if c == ']' {
		s.pos++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if done, err := s.endOrComma(']', "array"); done || err != nil {
			return err
		}
	}
}

// endOrComma consumes what follows a member of an object or array: the
// closing byte (done) or a comma.
func (s *scanner) endOrComma(closing byte, in string) (done bool, err error) {
	c, err := s.peek()
	if err != nil {
		return false, err
	}
	s.pos++
	if c == closing {
		return true, nil
	}
	if c != ',' {
		return false, fmt.Errorf("%w: got %q in an %s", errSyntax, c, in)
	}
	return false, nil
}

// decodeValue decodes the next value into v with encoding/json.
func (s *scanner) decodeValue(v any) error {
	raw, err := s.capture()
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}
