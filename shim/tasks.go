package shim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Answers about a parent that has no live task.
var (
	errNoTask     = errors.New("no task")
	errNotRunning = errors.New("task not running")
)

// taskSource tells a container's init pid as containerd knows it. It is the
// only source of a parent's identity: runc's state files live under a root
// a client can choose in its runtime options, containerd's tasks do not.
type taskSource interface {
	// initPID returns the pid of the init of container id's task in
	// containerd namespace ns: errNoTask when it has none, errNotRunning
	// when it is not created, running or paused.
	initPID(ctx context.Context, ns, id string) (uint32, error)
}

// lookupTimeout bounds one question to containerd, which asks the
// parent's shim in turn.
const lookupTimeout = 10 * time.Second

// containerdTasks asks containerd's task API over the gRPC address
// containerd gave the shim at start. The connection is made on the first
// question, which only a child of another container ever asks.
type containerdTasks struct {
	address string

	once   sync.Once
	client tasks.TasksClient
	err    error
}

func (c *containerdTasks) connect() (tasks.TasksClient, error) {
	c.once.Do(func() {
		if c.address == "" {
			c.err = errors.New("the shim was not given containerd's address")
			return
		}
		conn, err := grpc.NewClient("unix://"+c.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.err = fmt.Errorf("connect to containerd: %w", err)
			return
		}
		c.client = tasks.NewTasksClient(conn)
	})
	return c.client, c.err
}

func (c *containerdTasks) initPID(ctx context.Context, ns, id string) (uint32, error) {
	client, err := c.connect()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, ns), lookupTimeout)
	defer cancel()
	resp, err := client.Get(ctx, &tasks.GetRequest{ContainerID: id})
	if err != nil {
		if err = errgrpc.ToNative(err); errdefs.IsNotFound(err) {
			return 0, errNoTask
		}
		return 0, fmt.Errorf("ask containerd for the task: %w", err)
	}
	p := resp.GetProcess()
	switch p.GetStatus() {
	case task.Status_CREATED, task.Status_RUNNING, task.Status_PAUSED, task.Status_PAUSING:
		if p.GetPid() > 0 {
			return p.GetPid(), nil
		}
	}
	return 0, errNotRunning
}
