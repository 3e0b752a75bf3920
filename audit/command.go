package audit

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"google.golang.org/grpc"

	"github.com/nsiso/nsiso/hostns"
)

// DefaultAddress is containerd's socket on a node.
const DefaultAddress = "/run/containerd/containerd.sock"

// DefaultTimeout bounds a whole audit, so that a cron job never hangs on a
// daemon that accepts connections but does not answer.
const DefaultTimeout = 30 * time.Second

// Options are the settings of one audit.
type Options struct {
	// Address is containerd's socket.
	Address string
	// Namespace limits the audit to one containerd namespace; empty audits
	// them all, which is the only way to see sharing across namespaces.
	Namespace string
	// PodNamespace, when set, asks for the pods of one Kubernetes
	// namespace: Run then fails unless containerd's CRI plugin answers,
	// since only it can tell which pod a container belongs to.
	PodNamespace string
	// Usage asks for the shared memory of every IPC namespace
	// (Report.Usage).
	Usage bool
}

// Report is what one audit found.
type Report struct {
	// Records has one record per container.
	Records []Record
	// Usage has the shared memory of each IPC namespace of a live
	// container; nil unless Options.Usage.
	Usage []ShmUsage
	// Notes name what was skipped (a container that exited while being
	// read, a /dev/shm symlink not followed), one line each.
	Notes []string
}

// Run connects to containerd and returns the records of every container,
// with the pod of each that containerd's CRI plugin made (Attribute), and
// with Options.Usage the shared memory of each IPC namespace.
func Run(ctx context.Context, opts Options) (Report, error) {
	recs, facts, err := run(ctx, opts)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Records: recs}
	for _, f := range facts {
		if f.ShmSymlink {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s/%s: /dev/shm is a symlink; not followed, its shared memory is not reported",
				Quote(f.Namespace), Quote(f.ID)))
		}
	}
	if opts.Usage {
		sysv, notes := ReadSysVAll(facts)
		rep.Notes = append(rep.Notes, notes...)
		rep.Usage = Usages(facts, recs, sysv)
	}
	return rep, nil
}

func run(ctx context.Context, opts Options) ([]Record, []Facts, error) {
	if err := probeSocket(ctx, opts.Address); err != nil {
		return nil, nil, fmt.Errorf("connect to containerd at %s: %w%s", opts.Address, err, rootHint(err))
	}
	c, err := client.New(opts.Address)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to containerd at %s: %w", opts.Address, err)
	}
	defer c.Close()
	// The connection is made lazily; asking for the version turns a wrong
	// address into one clear error rather than one about listing.
	if _, err := c.Version(ctx); err != nil {
		return nil, nil, fmt.Errorf("connect to containerd at %s: %w%s", opts.Address, err, rootHint(err))
	}
	host, err := HostFacts(&hostns.Checker{})
	if err != nil {
		return nil, nil, err
	}
	var nss []string
	if opts.Namespace != "" {
		nss = []string{opts.Namespace}
	}
	facts, err := Gather(ctx, c, nss)
	if err != nil {
		return nil, nil, err
	}
	// Asked after the containers are listed, so that every container CRI
	// had made by then is in its answer.
	var cri *CRI
	if opts.PodNamespace != "" || slices.ContainsFunc(facts, func(f Facts) bool { return f.Namespace == CRINamespace }) {
		conn, ok := c.Conn().(grpc.ClientConnInterface)
		if !ok {
			return nil, nil, fmt.Errorf("containerd client has no gRPC connection to ask CRI with")
		}
		if cri, err = AskCRI(ctx, conn); err != nil {
			return nil, nil, err
		}
	}
	if opts.PodNamespace != "" && cri == nil {
		return nil, nil, fmt.Errorf("--pod-namespace: containerd's CRI plugin does not answer at %s, and only it can tell which pod a container belongs to", opts.Address)
	}
	Attribute(facts, cri)
	return Analyze(host, facts), facts, nil
}

// probeSocket dials a unix socket once: grpc retries a missing or refused
// socket until the deadline and then reports only the deadline, while the
// dial's own error says what is wrong at once.
func probeSocket(ctx context.Context, address string) error {
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok && strings.Contains(address, "://") {
		return nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return err
	}
	return conn.Close()
}

// rootHint explains a refused socket; grpc reports the refusal as text,
// not as an error that errors.Is could match.
func rootHint(err error) string {
	if errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
		return " (containerd's socket needs root)"
	}
	return ""
}

const usageHead = `Usage: nsiso audit [flags]

Lists every container of a containerd node, whatever runtime started it,
with its IPC namespace, PID namespace and /dev/shm as the kernel sees them,
one line per container in the style of the CIS Docker Benchmark:

  <namespace>/<id>: IpcMode=<host|private|container:<id>> PidMode=... ShmSize=<size|host> Runtime=<runtime> [Pod=<ns>/<pod> Container=<name>|(sandbox)] [ClaimedPod=... ClaimedContainer=...] [(from spec)]

Pod and Container come from containerd's CRI plugin, for the pods it made;
ClaimedPod and ClaimedContainer are what the labels of any other container
say, which any containerd client can write. A name that is not plain (ASCII
letters, digits, . _ - : /) is printed Go-quoted: "web\n...".

A container without a live task (stopped, or created and never started)
is listed with what its OCI spec asks for, marked "(from spec)", and
counts like a running one. It fails when a container shares the host's IPC
namespace or /dev/shm (CIS 5.16) and, with --pid, the host's PID namespace
(CIS 5.15). It must run as root in the host's PID and mount namespaces.

With --shm it lists each IPC namespace once instead, with its /dev/shm
size and bytes in use and its System V segments and limits:

  <namespace>/<owner id>: IpcNamespace=<inode> ShmSize=<size> ShmUsed=<bytes> SysvSegments=<n> SysvBytes=... SysvMax=... SysvSegmentMax=... SysvSegmentsMax=<n> Containers=<n> [Pod=<ns>/<pod>]

--format prometheus always has these gauges (nsiso_audit_shm_*,
nsiso_audit_sysv_shm_*).

Flags:
`

const usageTail = `
Exit status: 0 no container shares what the rules forbid; 1 some do (each
named on stderr); 2 the audit could not be completed (with --format
prometheus the metrics still say so: nsiso_audit_success 0).
`

// Formats of the report.
const (
	FormatText       = "text"
	FormatJSON       = "json"
	FormatPrometheus = "prometheus"
)

// Main runs `nsiso audit` with the arguments after the subcommand and
// returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &command{stdout: stdout, stderr: stderr}
	if status, ok := c.parse(args); !ok {
		return status
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, c.opts)
	if err != nil {
		return c.failed(err, start)
	}
	return c.report(rep, start)
}

// command is one `nsiso audit`: its flags and the streams it writes to.
type command struct {
	opts           Options
	format         string
	output         string
	checkPID       bool
	shm            bool
	timeout        time.Duration
	stdout, stderr io.Writer
}

// flagSet declares the flags of `nsiso audit` into c.
func (c *command) flagSet() *flag.FlagSet {
	flags := flag.NewFlagSet("nsiso audit", flag.ContinueOnError)
	// Errors and usage are printed by parse, where their stream is chosen:
	// asked-for help goes to stdout, a mistake to stderr.
	flags.SetOutput(io.Discard)
	flags.StringVar(&c.opts.Address, "address", DefaultAddress, "containerd's `socket`")
	flags.StringVar(&c.opts.Namespace, "namespace", "", "audit only this containerd `namespace` (default: all of them)")
	flags.StringVar(&c.opts.PodNamespace, "pod-namespace", "", "report only the containers that containerd's CRI plugin made for pods in this Kubernetes `namespace`")
	flags.StringVar(&c.format, "format", FormatText, "output `format`: text, json or prometheus (node_exporter's textfile collector)")
	flags.StringVar(&c.output, "output", "", "write the report to this `file`, atomically (temporary file and rename), mode 0644, instead of stdout")
	flags.BoolVar(&c.checkPID, "pid", false, "also fail on containers in the host's PID namespace (CIS 5.15)")
	flags.BoolVar(&c.shm, "shm", false, "report the shared memory of each IPC namespace (/dev/shm and System V, used and limits) instead of each container (text and json; prometheus always has it)")
	flags.DurationVar(&c.timeout, "timeout", DefaultTimeout, "give up after this `duration`")
	return flags
}

// printUsage writes the help of `nsiso audit` to w.
func printUsage(flags *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, usageHead)
	flags.SetOutput(w)
	flags.PrintDefaults()
	flags.SetOutput(io.Discard)
	fmt.Fprint(w, usageTail)
}

// parse reads args into c; when it returns false the command is over, with
// the exit status it returns (help was asked for, or a flag is wrong).
func (c *command) parse(args []string) (int, bool) {
	flags := c.flagSet()
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(flags, c.stdout)
			return ExitCompliant, false
		}
		fmt.Fprintf(c.stderr, "nsiso audit: %s\n", cleanLine(err.Error()))
		printUsage(flags, c.stderr)
		return ExitError, false
	}
	if flags.NArg() > 0 {
		return c.fail("unexpected argument %+q (see nsiso audit --help)", flags.Arg(0)), false
	}
	switch c.format {
	case FormatText, FormatJSON, FormatPrometheus:
	default:
		return c.fail("--format %+q: want text, json or prometheus", c.format), false
	}
	if c.timeout <= 0 {
		return c.fail("--timeout %v: want a positive duration", c.timeout), false
	}
	if c.output != "" {
		if err := checkOutputDir(c.output); err != nil {
			return c.fail("--output %s: %v", c.output, err), false
		}
	}
	c.opts.Usage = c.shm || c.format == FormatPrometheus
	return 0, true
}

// fail prints one line on stderr and returns the status of an audit that
// could not be completed.
func (c *command) fail(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "nsiso audit: %s\n", cleanLine(fmt.Sprintf(format, a...)))
	return ExitError
}

// emit puts the report where it was asked for: a file is replaced whole or
// not at all.
func (c *command) emit(data []byte) error {
	if c.output == "" {
		_, err := c.stdout.Write(data)
		return err
	}
	return WriteFileAtomic(c.output, data)
}

// failed reports an audit that could not be completed.
func (c *command) failed(err error, start time.Time) int {
	c.fail("%v", err)
	if c.format == FormatPrometheus {
		// Monitoring must see a failed audit, not the last good file.
		end := time.Now()
		var b bytes.Buffer
		if werr := WritePrometheus(&b, Outcome{Err: err, End: end, Duration: end.Sub(start)}); werr == nil {
			if werr := c.emit(b.Bytes()); werr != nil {
				c.fail("write report: %v", werr)
			}
		}
	}
	return ExitError
}

// report writes the report of a completed audit, names on stderr what it
// found, and returns the exit status of the findings.
func (c *command) report(rep Report, start time.Time) int {
	recs, usages := rep.Records, rep.Usage
	var claiming []Record
	if c.opts.PodNamespace != "" {
		claiming = ClaimingPodNamespace(recs, c.opts.PodNamespace)
		recs = InPodNamespace(recs, c.opts.PodNamespace)
		usages = UsageInPodNamespace(usages, c.opts.PodNamespace)
	}
	findings := Findings(recs, c.checkPID)
	end := time.Now()

	data, err := render(c.format, c.shm, Outcome{Records: recs, Findings: findings, Usage: usages, End: end, Duration: end.Sub(start)})
	if err == nil {
		err = c.emit(data)
	}
	if err != nil {
		return c.fail("write report: %v", err)
	}
	c.tell(len(recs), claiming, rep.Notes, findings)
	return ExitStatus(findings)
}

// tell names on stderr, one line each, what the report's reader should
// know: an empty pod namespace, containers that only claim it, notes and
// findings.
func (c *command) tell(records int, claiming []Record, notes []string, findings []Finding) {
	if c.opts.PodNamespace != "" && records == 0 {
		// Not an error (a namespace may have no pod on this node), but a
		// mistyped name should not pass unnoticed.
		fmt.Fprintf(c.stderr, "nsiso audit: no container of a pod in Kubernetes namespace %+q\n", c.opts.PodNamespace)
	}
	// A container that only says it is this namespace's is not its
	// team's to answer for, but its team should know of it.
	for _, r := range claiming {
		fmt.Fprintf(c.stderr, "nsiso audit: %s\n", NotCounted(r))
	}
	for _, n := range notes {
		fmt.Fprintf(c.stderr, "nsiso audit: note: %s\n", n)
	}
	for _, f := range findings {
		fmt.Fprintf(c.stderr, "nsiso audit: %s\n", f)
	}
}

// render writes the report in format: the containers, or with shm the IPC
// namespaces' shared memory (text and JSON; the metrics have both).
func render(format string, shm bool, run Outcome) ([]byte, error) {
	var b bytes.Buffer
	var err error
	switch {
	case format == FormatPrometheus:
		err = WritePrometheus(&b, run)
	case format == FormatJSON && shm:
		err = WriteUsageJSON(&b, run.Usage)
	case format == FormatJSON:
		err = WriteJSON(&b, run.Records)
	case shm:
		err = WriteUsageText(&b, run.Usage)
	default:
		err = WriteText(&b, run.Records)
	}
	return b.Bytes(), err
}
