package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// PrintProto writes a response message as JSON (field names as in the
// .proto, every field present).
func (e *Env) PrintProto(m proto.Message) error {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return fmt.Errorf("render %T: %w", m, err)
	}
	// protojson varies its whitespace on purpose; re-indent for stable output.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("render %T: %w", m, err)
	}
	out.WriteByte('\n')
	_, err = e.Out.Write(out.Bytes())
	return err
}

// PrintJSON writes any value as indented JSON.
func (e *Env) PrintJSON(v any) error {
	enc := json.NewEncoder(e.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Table returns a tabwriter on Out; call Flush when done.
func (e *Env) Table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.Out, 0, 0, 2, ' ', 0)
}

func row(w io.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	fmt.Fprintln(w)
}

func pct(n, of uint64) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
