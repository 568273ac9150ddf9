// Package ctl implements petrelctl, the operator's command line for petreld.
// It talks gRPC to the local agent over its unix socket.
//
// Commands live in a table filled by register calls in each file's init, so
// a component adds its commands in a file of its own (see pool.go for the
// pattern): name, usage, a one-line summary, and a setup function that binds
// the command's flags and returns the function that runs it.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/version"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// DefaultSocket is petreld's default gRPC socket.
const DefaultSocket = "/run/petrel/petreld.sock"

// CLI holds petrelctl's streams and environment; tests fill it with buffers.
type CLI struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads PETREL_SOCKET; nil means no environment.
	Getenv func(string) string
}

// runFunc runs a command with its positional arguments.
type runFunc func(ctx context.Context, e *Env, args []string) error

// command is one petrelctl command, such as "pool add".
type command struct {
	// name is the command words, such as "pool add".
	name string
	// usage shows the arguments and flags, such as "CIDR [--name N]".
	usage   string
	summary string
	// setup binds the command's own flags on fs and returns its runner.
	setup func(fs *flag.FlagSet) runFunc
}

var commands = map[string]command{}

// register adds a command to petrelctl. It is called from init functions.
func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("ctl: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// Env is what a command runs with: the output streams and format, and the
// gRPC clients of the agent (connected on first use).
type Env struct {
	Out, Err io.Writer
	// JSON is set by -o json.
	JSON bool

	socket  string
	timeout time.Duration
	conn    *grpc.ClientConn
}

// usageError is a command line mistake: exit code 2 and the usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errFound makes petrelctl exit 1 without printing an error: the command has
// already printed its findings (ipam check).
var errFound = errors.New("findings reported")

// common are the flags accepted before and after any command.
type common struct {
	socket  string
	output  string
	timeout time.Duration
}

func (c *common) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.socket, "socket", c.socket, "petreld gRPC socket (env PETREL_SOCKET)")
	fs.StringVar(&c.output, "o", c.output, "output format: table or json")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "deadline of each call to petreld")
}

// Run runs petrelctl with args (without the program name) and returns the
// exit code: 0 on success, 1 on failure, 2 on a usage error.
func (c *CLI) Run(ctx context.Context, args []string) int {
	opts := common{socket: DefaultSocket, output: "table", timeout: 30 * time.Second}
	if c.Getenv != nil {
		if s := c.Getenv("PETREL_SOCKET"); s != "" {
			opts.socket = s
		}
	}
	global := flag.NewFlagSet("petrelctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	opts.bind(global)
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		fmt.Fprintln(c.Stdout, "petrelctl", version.Version)
		return 0
	}
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(c.Stdout)
			return 0
		}
		fmt.Fprintf(c.Stderr, "petrelctl: %v\n", err)
		c.usage(c.Stderr)
		return 2
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" {
		c.usage(c.Stdout)
		if len(rest) == 0 {
			return 2
		}
		return 0
	}
	if rest[0] == "version" || rest[0] == "--version" || rest[0] == "-version" {
		fmt.Fprintln(c.Stdout, "petrelctl", version.Version)
		return 0
	}
	cmd, rest, ok := lookup(rest)
	if !ok {
		fmt.Fprintf(c.Stderr, "petrelctl: unknown command %q\n", strings.Join(rest, " "))
		c.usage(c.Stderr)
		return 2
	}
	fs := flag.NewFlagSet("petrelctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	opts.bind(fs)
	run := cmd.setup(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: petrelctl %s %s\n\n%s\n\nflags:\n", cmd.name, cmd.usage, cmd.summary)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if opts.output != "table" && opts.output != "json" {
		fmt.Fprintf(c.Stderr, "petrelctl: -o %q: want table or json\n", opts.output)
		return 2
	}
	e := &Env{Out: c.Stdout, Err: c.Stderr, JSON: opts.output == "json", socket: opts.socket, timeout: opts.timeout}
	defer e.close()
	err = run(ctx, e, pos)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errFound):
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(c.Stderr, "petrelctl %s: %s\n", cmd.name, ue.msg)
		fs.Usage()
		return 2
	default:
		fmt.Fprintf(c.Stderr, "petrelctl %s: %s\n", cmd.name, e.describe(err))
		return 1
	}
}

// lookup finds the command named by the longest prefix of args.
func lookup(args []string) (command, []string, bool) {
	for n := min(len(args), 3); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, args[n:], true
		}
	}
	return command{}, args, false
}

// parseInterspersed parses flags wherever they appear among the positional
// arguments ("pool add 10.0.0.0/16 --name x").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *CLI) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: petrelctl [--socket PATH] [-o table|json] COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-40s %s\n", n+" "+c.usage, c.summary)
	}
	fmt.Fprintln(w, "  version                                  print the version")
	fmt.Fprintln(w, "\nRun petrelctl COMMAND -h for a command's flags.")
}

// Conn returns the connection to petreld, dialing it on first use.
func (e *Env) Conn() (*grpc.ClientConn, error) {
	if e.conn != nil {
		return e.conn, nil
	}
	path, err := filepath.Abs(e.socket)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", e.socket, err)
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to petreld at %s: %w", path, err)
	}
	e.conn = conn
	return conn, nil
}

// IPAM returns the IPAM client.
func (e *Env) IPAM() (petrelv1grpc.IPAMClient, error) {
	c, err := e.Conn()
	if err != nil {
		return nil, err
	}
	return petrelv1grpc.NewIPAMClient(c), nil
}

// ipamCall is the start of every IPAM command without positional
// arguments: it refuses arguments, connects, and bounds the call with
// --timeout. The caller defers cancel.
func (e *Env) ipamCall(ctx context.Context, args []string) (petrelv1grpc.IPAMClient, context.Context, context.CancelFunc, error) {
	if len(args) != 0 {
		return nil, ctx, func() {}, usagef("no arguments expected")
	}
	c, err := e.IPAM()
	if err != nil {
		return nil, ctx, func() {}, err
	}
	ctx, cancel := e.Call(ctx)
	return c, ctx, cancel, nil
}

// Dataplane returns the Dataplane client.
func (e *Env) Dataplane() (petrelv1grpc.DataplaneClient, error) {
	c, err := e.Conn()
	if err != nil {
		return nil, err
	}
	return petrelv1grpc.NewDataplaneClient(c), nil
}

// Cluster returns the Cluster client.
func (e *Env) Cluster() (petrelv1grpc.ClusterClient, error) {
	c, err := e.Conn()
	if err != nil {
		return nil, err
	}
	return petrelv1grpc.NewClusterClient(c), nil
}

// Call bounds one call to petreld by --timeout.
func (e *Env) Call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

func (e *Env) close() {
	if e.conn != nil {
		_ = e.conn.Close()
	}
}

// describe renders an error for the operator: the gRPC message and code, and
// a hint when petreld is not reachable.
func (e *Env) describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := fmt.Sprintf("%s (%s)", st.Message(), st.Code())
	if st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection error") {
		msg += fmt.Sprintf("\nis petreld running? socket: %s (set --socket or PETREL_SOCKET)", e.socket)
	}
	return msg
}
