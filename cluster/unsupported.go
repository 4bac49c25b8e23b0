//go:build !unix

package cluster

import "context"

func runMaster(context.Context, Config) error { return ErrUnsupported }

func runWorker(context.Context, Config, int, string, string) error { return ErrUnsupported }
