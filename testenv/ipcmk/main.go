// Command ipcmk creates System V IPC resources and prints their ids in the
// same words as util-linux ipcmk, so tests can drive it inside a busybox
// container (busybox has no ipcmk) and parse the output the same way they
// would on a host.
//
// Usage:
//
//	ipcmk [-p mode] -M size   create a shared memory segment
//	ipcmk -M size --touch     ... and write every page of it, so that
//	                          the segment holds that much memory
//	ipcmk [-p mode] -Q        create a message queue
//	ipcmk [-p mode] -S nsems  create a semaphore set
//
// Sizes take util-linux suffixes: K, M, G, ... (powers of 1024, also KiB,
// MiB, ...) and KB, MB, ... (powers of 1000). The mode is octal and
// defaults to 0644. It must stay free of cgo so that the binary is static
// and runs in any container.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const prog = "ipcmk"

func main() {
	os.Exit(run(os.Args[1:]))
}

type request struct {
	shmSize int64
	touch   bool
	queue   bool
	nsems   int
	mode    int
}

func run(args []string) int {
	req, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		fmt.Fprintf(os.Stderr, "Try '%s --help' for more information.\n", prog)
		return 1
	}
	if req == nil {
		usage()
		return 0
	}
	if req.shmSize > 0 {
		id, err := create(func(key int) (int, error) {
			return unix.SysvShmGet(key, int(req.shmSize), req.mode|unix.IPC_CREAT|unix.IPC_EXCL)
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: create share memory failed: %v\n", prog, err)
			return 1
		}
		fmt.Printf("Shared memory id: %d\n", id)
		if req.touch {
			if err := touch(id); err != nil {
				fmt.Fprintf(os.Stderr, "%s: touch shared memory %d: %v\n", prog, id, err)
				return 1
			}
			fmt.Printf("Touched: %d bytes\n", req.shmSize)
		}
	}
	if req.queue {
		id, err := create(func(key int) (int, error) {
			return sysvGet(unix.SYS_MSGGET, key, req.mode|unix.IPC_CREAT|unix.IPC_EXCL, 0)
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: create message queue failed: %v\n", prog, err)
			return 1
		}
		fmt.Printf("Message queue id: %d\n", id)
	}
	if req.nsems > 0 {
		id, err := create(func(key int) (int, error) {
			return sysvGet(unix.SYS_SEMGET, key, req.nsems, req.mode|unix.IPC_CREAT|unix.IPC_EXCL)
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: create semaphore failed: %v\n", prog, err)
			return 1
		}
		fmt.Printf("Semaphore id: %d\n", id)
	}
	return 0
}

// create calls get with random keys. util-linux passes a random key with
// IPC_CREAT alone, which silently returns an existing object on a key
// collision; IPC_EXCL plus a retry guarantees a fresh object instead.
func create(get func(key int) (int, error)) (int, error) {
	var lastErr error
	for range 16 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		key := int(int32(binary.LittleEndian.Uint32(b[:])))
		if key == 0 { // IPC_PRIVATE; util-linux never asks for it either
			continue
		}
		id, err := get(key)
		if errors.Is(err, unix.EEXIST) {
			lastErr = err
			continue
		}
		return id, err
	}
	return 0, lastErr
}

// touch attaches segment id, writes a byte to each of its pages, so the
// kernel backs every page with memory, and detaches again; the segment
// and its pages stay in the IPC namespace.
func touch(id int) error {
	b, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return err
	}
	page := os.Getpagesize()
	for i := 0; i < len(b); i += page {
		b[i] = 1
	}
	return unix.SysvShmDetach(b)
}

// sysvGet calls msgget(key, a1) or semget(key, a1, a2).
func sysvGet(trap uintptr, key, a1, a2 int) (int, error) {
	r, _, errno := unix.Syscall(trap, uintptr(int32(key)), uintptr(a1), uintptr(a2))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// parseArgs accepts the getopt forms util-linux does: "-M 10", "-M10",
// "--shmem 10" and "--shmem=10". It returns nil for --help.
func parseArgs(args []string) (*request, error) {
	req := &request{mode: 0o644}
	any := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := a, "", false
		switch {
		case strings.HasPrefix(a, "--"):
			if k, v, ok := strings.Cut(a, "="); ok {
				name, value, hasValue = k, v, true
			}
		case strings.HasPrefix(a, "-") && len(a) > 2:
			name, value, hasValue = a[:2], a[2:], true
		}
		needValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("option requires an argument -- '%s'", strings.TrimLeft(name, "-"))
			}
			i++
			return args[i], nil
		}
		switch name {
		case "-h", "--help":
			return nil, nil
		case "-V", "--version":
			fmt.Println("ipcmk (nsiso testenv)")
			os.Exit(0)
		case "-M", "--shmem":
			v, err := needValue()
			if err != nil {
				return nil, err
			}
			size, err := parseSize(v)
			if err != nil || size <= 0 {
				return nil, fmt.Errorf("failed to parse size: '%s'", v)
			}
			req.shmSize = size
			any = true
		case "--touch":
			if hasValue {
				return nil, fmt.Errorf("unrecognized option '%s'", a)
			}
			req.touch = true
		case "-Q", "--queue":
			if hasValue {
				return nil, fmt.Errorf("unrecognized option '%s'", a)
			}
			req.queue = true
			any = true
		case "-S", "--semaphore":
			v, err := needValue()
			if err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("failed to parse elements: '%s'", v)
			}
			req.nsems = n
			any = true
		case "-p", "--mode":
			v, err := needValue()
			if err != nil {
				return nil, err
			}
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o777 {
				return nil, fmt.Errorf("failed to parse mode: '%s'", v)
			}
			req.mode = int(m)
		default:
			return nil, fmt.Errorf("unrecognized option '%s'", a)
		}
	}
	if !any {
		return nil, errors.New("bad usage")
	}
	if req.touch && req.shmSize == 0 {
		return nil, errors.New("--touch needs -M")
	}
	return req, nil
}

// parseSize mirrors util-linux strtosize: a decimal number with an optional
// K/M/G/T/P/E suffix; a bare letter or "iB" means powers of 1024, "B"
// powers of 1000.
func parseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	suffix := s[i:]
	if suffix == "" {
		return n, nil
	}
	exp := strings.IndexByte("KMGTPE", strings.ToUpper(suffix[:1])[0]) + 1
	if exp == 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	var base int64
	switch suffix[1:] {
	case "", "iB":
		base = 1024
	case "B":
		base = 1000
	default:
		return 0, fmt.Errorf("invalid size %q", s)
	}
	for range exp {
		if n > (1<<63-1)/base {
			return 0, fmt.Errorf("size %q overflows", s)
		}
		n *= base
	}
	return n, nil
}

func usage() {
	fmt.Printf(`
Usage:
 %[1]s [options]

Create various IPC resources.

Options:
 -M, --shmem <size>       create shared memory segment of size <size>
 -S, --semaphore <number> create semaphore array with <number> elements
 -Q, --queue              create message queue
 -p, --mode <mode>        permission for the resource (default is 0644)
     --touch              write every page of the new shared memory segment

 -h, --help               display this help
 -V, --version            display version
`, prog)
}
