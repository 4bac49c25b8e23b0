package redisbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// script is a Lua script run with EVALSHA, and EVAL when Redis does not
// have it (NOSCRIPT: a restart, SCRIPT FLUSH, a new cluster master).
type script struct {
	src, sha string
}

func newScript(src string) *script {
	return &script{src: src, sha: redis.NewScript(src).Hash()}
}

// onceCmd is a command go-redis must not retry after a network error:
// Redis may have run it.
type onceCmd struct{ *redis.Cmd }

func (onceCmd) NoRetry() bool { return true }

// eval runs s with keys and args. A script that writes only what it
// would write again (retry) may be retried by go-redis after a network
// error; any other runs at most once. NOSCRIPT is answered before
// anything runs, so EVAL after it is safe either way.
func (b *Broker) eval(ctx context.Context, s *script, retry bool, keys []string, args ...any) (any, error) {
	run := func(name, body string) *redis.Cmd {
		a := make([]any, 0, 3+len(keys)+len(args))
		a = append(a, name, body, len(keys))
		for _, k := range keys {
			a = append(a, k)
		}
		cmd := redis.NewCmd(ctx, append(a, args...)...)
		if retry {
			_ = b.client.Process(ctx, cmd)
		} else {
			_ = b.client.Process(ctx, onceCmd{cmd})
		}
		return cmd
	}
	cmd := run("evalsha", s.sha)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd = run("eval", s.src)
	}
	return cmd.Result()
}

func ctxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// isRedisError reports whether err is an error reply of Redis (the
// command reached it and it refused), not a failure to reach it.
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

// failed wraps the error of a call to Redis: ErrUnavailable unless the
// context ended or Redis answered with an error of its own.
func (b *Broker) failed(what string, err error) error {
	if b.stopping() {
		return ErrClosed
	}
	if ctxErr(err) {
		return err
	}
	if isRedisError(err) {
		return fmt.Errorf("redisbroker: %s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}
