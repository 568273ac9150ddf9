package libnetwork

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxBody bounds a request body. Docker's largest requests (CreateNetwork
// with options and labels) are a few KiB.
const maxBody = 1 << 20

// errBadRequest marks a body that could not be decoded (HTTP 400).
var errBadRequest = errors.New("libnetwork: bad request")

// decode reads exactly one JSON object of at most maxBody bytes from r into
// v. Fields must have the right types and nothing may follow the object;
// unknown fields are tolerated because newer Docker versions add them.
func decode(r io.Reader, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return fmt.Errorf("%w: read body: %w", errBadRequest, err)
	}
	if len(b) > maxBody {
		return fmt.Errorf("%w: body larger than %d bytes", errBadRequest, maxBody)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: body is not a JSON object", errBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON object", errBadRequest)
	}
	return nil
}
