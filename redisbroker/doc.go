// Package redisbroker is a hub.Broker over Redis pub/sub, for apps whose
// worker processes run on more than one host, that also keeps presence
// (hub.PresenceBroker) and history (hub.HistoryBroker) in Redis for all of
// them. It uses
// github.com/redis/go-redis/v9 and works with a single Redis
// (*redis.Client), Sentinel (redis.NewFailoverClient) and Redis Cluster
// (*redis.ClusterClient).
//
// # Switching to Redis
//
// One option, on every server:
//
//	b, err := redisbroker.New(redis.NewClient(&redis.Options{Addr: "redis:6379"}), redisbroker.Options{})
//	...
//	srv, err := clusterws.New(clusterws.WithBroker(b))
//
// Under cluster.Run, give every worker its own Broker:
//
//	cluster.Run(cluster.Config{
//		Broker: func() (hub.Broker, error) {
//			return redisbroker.New(redis.NewClient(&redis.Options{Addr: "redis:6379"}), redisbroker.Options{})
//		},
//		...
//	})
//
// The Broker owns the redis client it is given: its Close (called by the
// Server's Shutdown or Close) closes the client too, and New closes it
// when it fails, so the factory above leaks nothing. Options.SharedClient
// leaves open a client that other code uses too; close it after the
// Broker.
//
// The zero Options are the defaults, each written on its field. New
// checks the Options it is given and never replaces a value: an invalid
// one (a negative limit, ReconnectMax below ReconnectMin, an unknown Mode)
// is an error that names the field and wraps ErrInvalidOption.
//
// # Starting
//
// Start, which clusterws.New calls, checks that Redis answers a PING
// (every master of a cluster) within Options.StartTimeout. When it does
// not, Start closes the Broker and fails with an error wrapping
// ErrUnavailable that names the address it tried and says why (when
// go-redis only timed out, with what go-redis last complained about), so
// clusterws.New fails and a worker under cluster.Run exits saying so.
// Options.StartDisconnected starts anyway: the Broker warns, Publish
// returns ErrUnavailable and Subscribe keeps the interest until Redis
// answers, and then all resumes by itself.
//
// # Connections and sharding
//
// Subscriptions use one pub/sub connection per process for a single Redis,
// Sentinel, and classic pub/sub on a cluster (any node of a cluster sees
// every classic publish). Sharded pub/sub on a cluster (SPUBLISH and
// SSUBSCRIBE, Redis 7 or later, the default for a *redis.ClusterClient)
// keeps each message inside the shard that owns its channel's slot, so
// subscriptions must be made on that shard: the Broker keeps one pub/sub
// connection per master, routes each channel to the master that owns its
// slot (hashing the prefixed name as Redis does, hash tags included), and
// groups a master's SSUBSCRIBE commands by slot, since Redis refuses
// channels of different slots in one command. When a connection breaks,
// or Redis drops subscriptions because a slot moved, the Broker reloads
// the cluster's slot map, routes that connection's channels again and
// subscribes them on their current masters. ModeClassic selects
// PUBLISH/SUBSCRIBE on a cluster (for Redis 6, or proxies without sharded
// pub/sub); every classic publish is then broadcast to every node, and the
// Broker sends all its publishes through one master so they keep their
// order.
//
// A pub/sub connection exists only while it has channels: it is made by
// the first Subscribe that needs it and closed, with its goroutines, once
// its last channel is unsubscribed or has moved to another master. A
// master that left the cluster (failed over, or back under a new address)
// keeps nothing of the Broker's.
//
// Publishes travel on the client's ordinary connection pool, in pipelines.
//
// # Interest and batching
//
// The hub calls Subscribe when a channel gets its first local subscriber
// and Unsubscribe when it loses its last; the Broker subscribes in Redis
// only to those channels, so Redis sends a process nothing it has no
// subscriber for, and drops anything that still arrives for a channel
// withdrawn meanwhile. Subscribe returns once Redis has sent its
// confirmation, so a publish made anywhere after it returns is delivered.
// Subscription changes are coalesced: while one SUBSCRIBE is on its way,
// all the calls that arrive meanwhile (10,000 sockets connecting at once)
// go out together in the next, up to 1024 channels a command, and an
// Unsubscribe followed by a Subscribe of the same channel cancel out.
//
// Publish only queues: writer goroutines send the queue in pipelines of up
// to Options.MaxBatch publishes, one round trip each. A pipeline carries
// whatever is queued when it starts, so under light load nothing waits
// for company. Channels are spread over Options.Writers writers by a hash
// of their name, so publishes to one channel keep their order. Publishes
// to one channel that are queued together travel as one Redis message of
// up to 64 KiB, which the receiving Brokers split again: a busy channel
// costs Redis one PUBLISH per pipeline, not one per publish.
//
// A message in Redis is the client frame, as the hub encoded it once,
// behind a 9-byte header (a version and the publisher's id), or several
// such frames with their lengths. Every process sharing a Prefix must run
// this package; anything else arriving on a channel is counted in
// Stats.Ignored.
//
// # Presence
//
// The Broker is a hub.PresenceBroker: with clusterws.WithPresence, a
// Server's Presence and PresenceStats are those of every process sharing
// the Redis. Each process writes its own members (UpdatePresence, in
// batches from the hub) and holds a lease, a key that lives
// Options.PresenceTTL (default 15s) and that a goroutine of the Broker
// renews every third of it: one PEXPIRE per process and period, however
// many members it has. A member counts while the lease named in its entry
// exists, so the members of a process killed with SIGKILL, of a host that
// vanished, or of a process cut off from Redis leave every Presence within
// PresenceTTL, and Close removes a process's members and lease at once.
//
// A process writes all its members again, under a new lease, when it
// finds its lease gone (Redis restarted without its data, or lost the
// process for longer than PresenceTTL), which it checks at every renewal
// and whenever a connection to Redis comes back, and when a write failed,
// which may have done part of its work. It keeps its own copy of its
// members for that, so presence comes back by itself, with the changes
// made meanwhile; UpdatePresence returns ErrUnavailable while Redis is
// known to be unreachable and keeps the change. The old lease is deleted
// after the rewrite: the entries that only it still names (a leave that
// never reached Redis) die with it, while the others, written again
// first, stay (a Presence call that overlaps the rewrite may miss them
// once).
//
// Presence is two round trips: HGETALL of the channel's hash, then one
// EXISTS per process with members in it, in a pipeline (no script, since
// on a cluster the leases live in other slots). It reads every entry of
// the channel: O(entries), about 0.1 ms for 10 members, 0.7 ms for 1,000
// and 9 ms for 10,000 (BenchmarkPresence, loopback, 2 cores). It deletes
// the entries of dead leases that it finds, with a script that deletes an
// entry only if it still names that lease, a third round trip when there
// are any. A hash whose processes all vanished and that nobody reads
// expires 24 hours after a process last renewed it (each process renews
// the hashes of its channels every 6 hours).
//
// # History
//
// The Broker is a hub.HistoryBroker: with clusterws.WithHistory, a
// channel's publications get offsets and an epoch that all processes agree
// on, are kept in Redis, and Server.History and recovering clients read
// them from there. PublishHistory runs one Lua script, one round trip, that
// atomically
//
//   - finds the channel's epoch, or makes it: a random epoch the Broker
//     proposes, kept only when the channel has none;
//   - increments the channel's offset;
//   - builds the positioned frame exactly as protocol.AppendPosition does
//     (the frame without its closing "]}", then
//     ,{"offset":N,"epoch":"E"}]}), appends it to the channel's list
//     and trims the list to the history's Size and its expired entries;
//   - publishes it (PUBLISH, or SPUBLISH with sharded pub/sub) as a message
//     of version 3, which every interested process delivers, the
//     publisher included: the hub delivers a publication with history
//     only as it comes back, in the order of the offsets.
//
// A PublishHistory that returns an error gave no offset and published
// nothing, so a reader never meets a silent gap; go-redis is told not to
// retry it, which could publish it twice. The one exception is a
// connection that breaks after Redis ran the script and before its answer
// arrived: the publication was made, and the caller is told it failed.
// While Redis is known to be unreachable it returns ErrUnavailable at
// once, as Publish does.
//
// History runs one script too, one round trip: it reads the entries after
// a position as internal/history.Store.Read does (the hub's own store,
// which a test checks it against over random operations): a zero position
// asks for the newest entries; a position in another epoch, after the
// current one or before the oldest kept entry is hub.ErrPositionLost with
// the current position; a channel's position exists from its first read.
//
// Entries expire after their TTL by Redis's clock (the processes' clocks
// need not agree), oldest first; the list itself expires with its newest
// entry. A channel's position (epoch and offset) lives 24 hours after its
// last use (internal/history.IdleTTL, or the entries' TTL if longer), so
// an idle channel whose entries expired keeps its epoch: its readers lost
// nothing. A Redis that restarts without persistence, or that evicts a
// channel's position (maxmemory), starts the channel in a new epoch, and
// readers learn that they lost their place; with persistence (AOF, RDB)
// the history and the offsets go on after a restart. Replication is
// asynchronous: after a failover, a replica that missed the last
// publications of a channel hands out their offsets again in the same
// epoch (WAIT after each publication would close that window, at a round
// trip's cost; the Broker does not). Offsets are exact up to 2^53, Lua's
// numbers.
//
// # Data layout in Redis
//
// Every key starts with Options.Prefix (P below; default "clusterws:").
// The keys of a channel carry a hash tag, T, of 1 to 3 letters and digits
// that Redis Cluster hashes to the slot of the channel's pub/sub name
// (P + channel): on a cluster the history script may publish only to a
// shard channel of its keys' slot, and a tag of the channel's name itself
// would not do for names with braces of their own. So a channel's pub/sub,
// presence and history all live on one shard. A Prefix with a hash tag
// of its own ("{app}:") puts everything in its slot instead; a '{' in the
// Prefix must open and close such a tag.
//
//	P presence:{T}channel  hash    socket ID -> lease (12 letters and digits) + user
//	P node:lease           string  "host pid N", PX PresenceTTL: a process's lease
//	P history:{T}channel   list    expiry (13 digits, Unix ms) + positioned frame, oldest first
//	P meta:{T}channel      hash    e -> epoch, o -> the last offset given
//
// The list holds the newest offsets without a hole, the last one meta's,
// so the offset of an entry is its place from the end, and a read after a
// position is one LRANGE.
//
// Costs, measured with MEMORY USAGE on Redis 7.0 (BenchmarkPresence,
// BenchmarkPublishHistory): a presence entry takes about 60 bytes in a
// channel of up to 128 members (a listpack) and about 100 bytes above (a
// hash table), for socket IDs as the hub makes them and short user names,
// plus about 100 bytes per channel; a lease 88 bytes per process; a kept
// publication of 1 KiB about 1,180 bytes, plus about 300 bytes per channel
// for its list and position. Round trips: UpdatePresence one per batch (a
// pipeline of the lease's PEXPIRE and an HSET or HDEL per channel and kind
// of change); Presence two, three when it deletes dead entries;
// PublishHistory one (EVALSHA, and EVAL after a NOSCRIPT: a restart, a
// failover), about 25 µs of Redis's time and 10,000 publications a
// second from one process here; History one; the lease one per
// process every PresenceTTL/3.
//
// # Delivery guarantee
//
// While Redis is healthy, a publish reaches every other process with
// local interest in its channel exactly once, in order per publisher and
// channel. Each message carries a small header with the publishing
// Broker's random id; a process drops its own publishes when Redis echoes
// them back, since the hub delivered them locally already, except those
// of PublishHistory, which the hub delivers only as they come back.
// go-redis is told not to retry a publish pipeline, which could publish
// part of it twice.
//
// Across an outage delivery is at most once, never silently. While Redis
// is known to be unreachable Publish returns ErrUnavailable at once. A
// pipeline that fails takes publishing down: its publishes, and those
// still queued behind it, are lost, counted in Stats.Lost and logged; a
// health check (PING with jittered backoff, to every master the Broker
// publishes to) brings publishing back. Messages published elsewhere
// while a process's pub/sub connection is down do not reach it; Redis
// keeps nothing for absent subscribers, and drops a subscriber that reads
// too slowly (client-output-buffer-limit pubsub), which the Broker treats
// like any loss; publications with history missed that way stay in the
// history, where a client that recovers its position finds them.
// Subscribe returns ErrUnavailable while its connection is down, but the interest is kept: every pub/sub connection
// reconnects with jittered backoff and subscribes again to every channel
// that still has local interest, and deliveries resume by themselves.
// That happens once per outage, on one new connection: the Broker keeps
// go-redis's PubSub from redialing and resubscribing on its own first.
// A pub/sub connection silent for three Options.PingInterval is treated as
// dead.
//
// # Channel names
//
// The Redis channel is Options.Prefix followed by the channel name,
// byte for byte: any name routes, including "*", "?", "[", "%", newlines,
// emoji and "__proto__", because the Broker never uses pattern
// subscriptions. Choose a prefix per application to share one Redis
// between several; on a cluster, a prefix with a hash tag such as "{app}:"
// puts every channel on one shard.
//
// # Concurrency
//
// All methods are safe for concurrent use. Each pub/sub connection has one
// goroutine that owns it and one that reads it; each writer, the health
// check and the presence writer (batches, the lease, rewrites, the goodbye
// at Close) run in a goroutine of their own. Close stops them all and
// waits for them; no delivery happens after it returns. deliver is called
// from the reading goroutines, one per pub/sub connection, so messages of
// one channel arrive in order. Presence, PublishHistory and History run on
// the caller's goroutine.
//
// Lock order: there is none to keep. Broker.mu (interest, shards and their
// channel state), shard.fifoMu (the replies a connection expects),
// lane.mu (a writer's queue), publisher.targetMu (where classic
// publishes go on a cluster) and presence.mu (this process's members and
// the UpdatePresence calls waiting) are never held together, nor across
// I/O or a call into go-redis, which has locks of its own.
//
// # Logging
//
// The Broker logs through Options.Logger (silent by default), every record
// with component=redisbroker and addr: the client's address, a cluster's
// seed addresses, or "FailoverClient" for Sentinel; a cluster master's
// connection adds node=. go-redis has one process-wide logger
// (redis.SetLogger) that prints unstructured lines to stderr. The first
// New replaces it, once per process, whatever the number of Brokers:
// go-redis's lines about a Broker's own calls go to that Broker's Logger
// at Debug level, with from=go-redis; the lines go-redis makes on its own
// goroutines (connection pool dials, Sentinel discovery), which no Broker
// can claim, are dropped, since the Brokers' warnings carry the same
// errors. An application that wants them calls redis.SetLogger after New.
package redisbroker
