package shim

import (
	"fmt"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nsiso/nsiso/specmod"
)

// resolved is what a Create's options come to: the policy for nsiso and the
// options for runc.
type resolved struct {
	policy specmod.Policy
	runc   *options.Options
	// fromClient is set when the client sent runc.v2's own options, which
	// then go to runc.v2's task service as they came.
	fromClient *anypb.Any
}

// runcAny is the options for runc.v2's task service, which type-asserts
// its own options type: the client's when it sent them, none when nsiso's
// config leaves runc at its defaults (runc.v2 reads no options as the
// defaults, and so is spared decoding them), else the config's, encoded.
func (r resolved) runcAny() (*anypb.Any, error) {
	if r.fromClient != nil {
		return r.fromClient, nil
	}
	if r.runc.BinaryName == "" && r.runc.Root == "" && !r.runc.SystemdCgroup {
		return nil, nil
	}
	return typeurl.MarshalAnyToProto(r.runc)
}

// resolveOptions reads the options containerd sent with a Create.
//
// containerd hands a runtime that is not runc its generic options type
// (ConfigPath from `ctr run --runtime-config-path` or a CRI handler's
// ConfigPath; ConfigBody holding a CRI handler's whole options table).
// runc.v2's options are taken too, so nsiso can stand in for runc.v2 in an
// existing setup; policy then comes from the default config file.
func resolveOptions(a *anypb.Any) (resolved, error) {
	var (
		cfg        *Config
		ro         *options.Options
		fromClient *anypb.Any
		err        error
	)
	if a.GetValue() != nil || a.GetTypeUrl() != "" {
		v, err := typeurl.UnmarshalAny(a)
		if err != nil {
			return resolved{}, fmt.Errorf("nsiso: runtime options: %w", err)
		}
		switch o := v.(type) {
		case *runtimeoptions.Options:
			switch {
			case o.ConfigPath != "":
				cfg, err = LoadConfig(o.ConfigPath)
			case len(o.ConfigBody) > 0:
				cfg, err = ParseConfig("(runtime options ConfigBody)", o.ConfigBody)
			}
			if err != nil {
				return resolved{}, err
			}
		case *options.Options:
			ro, fromClient = o, a
		default:
			return resolved{}, fmt.Errorf("nsiso: unsupported runtime options type %T", v)
		}
	}
	if cfg == nil {
		if cfg, err = LoadDefaultConfig(); err != nil {
			return resolved{}, err
		}
	}
	if ro == nil {
		ro = cfg.RuncOptions()
	}
	return resolved{policy: cfg.Policy(), runc: ro, fromClient: fromClient}, nil
}
