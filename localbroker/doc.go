// Package localbroker is the built-in broker of clusterws, for the worker
// processes of one machine: a TCP Server that runs in the cluster master
// (cluster.Run starts it with Listen), and in each worker a Broker, the
// hub.Broker that links the worker's hub to that Server. For workers on
// many hosts use redisbroker.
//
// A Broker tells the Server which channels its process has subscribers
// for; the Server forwards each publish, as received, to every other
// worker interested in its channel and to no one else. A plain publish is
// not stored: while a link is down Publish fails with ErrUnavailable, and
// publishes in flight when a link breaks are lost, so delivery is at most
// once. The Broker redials by itself with jittered exponential backoff
// (Options.ReconnectMin to ReconnectMax) and then announces its whole
// interest again.
//
// A Broker is also a hub.PresenceBroker: the Server keeps the presence
// members of every worker, and each Broker keeps its own process's to
// announce again; see Presence below. And it is a hub.HistoryBroker: the
// Server keeps the history of the cluster's channels, gives their
// publications offsets and forwards them to every interested worker, the
// publisher's included; see History below.
//
// With Options.Direct, plain publishes go straight from worker to worker
// over pair links, and the Server relays only while a pair link is not
// up; see Direct links below.
//
// # Link protocol
//
// A link is one TCP connection carrying frames both ways. A frame is a
// big-endian uint32 length of what follows (1 byte to 64 MiB + 64 KiB), a
// type byte and a payload; a publish that would not fit is refused with
// ErrTooBig. A name (a channel) in a payload is a big-endian
// uint16 length and that many bytes, so channel names are at most 65,535
// bytes long (hub.ErrChannelTooLong beyond).
//
//	type          direction      payload
//	'H' hello     worker→server  version (4), token (uint64), peer address
//	                             (a name of at most 255 bytes, "" when the
//	                             worker takes no pair links), then the secret
//	'W' welcome   server→worker  none: the hello was accepted
//	'S' sub       worker→server  ack id (uint32), then names
//	'U' unsub     worker→server  names
//	'A' ack       server→worker  the ack id of a processed sub
//	'P' pub       both ways      the channel's name, then the client frame
//	'i' ping      both ways      none
//	'o' pong      both ways      none: the answer to a ping
//	'J' presence  worker→server  a channel's name, then changes in order:
//	                             '+' socket ID, user (a join) or '-' socket ID (a leave)
//	'Q' query     worker→server  query id (uint32), a channel's name
//	'R' members   server→worker  query id (uint32), last (0 or 1), then
//	                             pairs of names: socket ID, user
//	'K' keep      worker→server  request id (uint32), a channel's name, size
//	                             (uint32), TTL (uint64, ns), then the client frame
//	'G' get       worker→server  request id (uint32), a channel's name, since
//	                             (offset uint64, epoch as a name), limit
//	                             (uint32, 0: all), size (uint32)
//	'E' entries   server→worker  request id (uint32), status (0 more to come,
//	                             1 last, 2 last: since is lost, 3 last: refused
//	                             as too big for the link's queue), the
//	                             channel's position (offset uint64, epoch as
//	                             a name), then entries: length (uint32) and a
//	                             positioned client frame
//
// Direct links add these (see Direct links):
//
//	type          direction      payload
//	'T' table     server→worker  replace (0 or 1), then entries: token
//	                             (uint64), peer address (a name, "" for a
//	                             worker without pair links)
//	'V' confirm   worker→server  none: a 'T' without replace is applied
//	'X' remove    server→worker  token (uint64) of a worker that left
//	'F' relay     worker→server  count (uint16), that many tokens (uint64)
//	                             not to forward to, then a 'P' payload
//	'B' barrier   worker→server  a peer's token (uint64), pair link id (uint64)
//	              server→worker  the sender's token (uint64), pair link id
//	'N' pair      worker→worker  version (4), token (uint64), pair link id
//	    hello                    (uint64), then the secret
//	'Y' sync      worker↔worker  none: the sender's whole interest is sent
//	'C' recall    worker↔worker  none: send this link's barrier again
//
// A pair link also carries 'W' (the acceptor's welcome), 'S', 'U', 'A',
// 'P', 'i' and 'o', both ways, with their meaning on a Server link.
//
// Subscribe sends a sub with a fresh ack id and returns when the ack
// comes back, so a publish made anywhere after it returns reaches this
// process. On every (re)connect the Broker sends its whole interest in
// subs of up to 64 KiB with ack id 0, which no one waits for. Unsubscribe
// is not acknowledged. A malformed frame (unknown type, a name overrunning
// its payload, an ack that is not 4 bytes, an unknown change, anything
// after a query's channel or a get's size, a keep or get of size 0, a
// keep with a TTL of 0 or past math.MaxInt64 or a client frame that does
// not end in "]}", an 'E' with entries and status 2 or 3, an answer of
// the wrong type for its request, a frame sent the wrong way, a length of
// 0 or over the bound) ends the link.
//
// The frames that carry many entries (the announce's subs, presence
// changes, an answer's members or history entries) are cut at 64 KiB; an
// entry is never split, so one larger than that (a user of 65,535 bytes,
// a publication of 1 MiB) has a frame of its own. A 'J' covers one
// channel: a batch becomes one frame per run of changes of the same
// channel. An answer is any number of 'R' (or 'E') frames with the
// request's id, the last one marked; an empty one is one frame with no
// pairs (entries). The frames of a batch or an answer are queued
// together, all or none, with nothing between them.
//
// Both sides of a link are the same build under cluster.Run, so the
// protocol has no negotiation: a Server refuses a hello of another
// version, and version 1 peers (before presence and the token), version 2
// peers (before history) and version 3 peers (before direct links) are
// refused that way.
//
// # Handshake
//
// The worker speaks first, with a hello. The server answers with a
// welcome if the version is 4 and the secret is the cluster's (compared in
// constant time); otherwise it hangs up without a word and logs the
// refusal with the peer's address, and the worker logs ErrRefused and
// retries. The token is random, drawn once per Broker: it tells the
// Server which links come from one worker. A worker has one link at a
// time, so when a link comes with the token of one the Server still holds
// (the worker gave up on it first, e.g. after silence or a backlog), the
// Server closes the old link and drops its interest and members before it
// welcomes the new one. A hello longer than the longest right one (with a
// peer address of 255 bytes) is refused before its bytes are read, so a
// peer that is not admitted cannot make the server allocate.
// Each side gives the handshake 5 seconds. The Server listens on loopback
// by default (DefaultAddr).
//
// # Limits and heartbeats
//
// Each side bounds the bytes queued for a link: on the worker
// Options.MaxPending, beyond which Publish and Presence return ErrBacklog
// and the link stays (UpdatePresence drops it, see Presence); on the server ServerOptions.MaxPending, beyond which the worker is
// disconnected as too slow (it reconnects and announces again; what was
// queued for it is lost). Frames queued together (an announce, a batch of
// presence changes, an answer) that find their queue empty are taken
// whatever their size, so none is too big for a link.
//
// The worker pings every Options.PingInterval and the server answers each
// ping. Each side drops a link on which nothing arrived for three of its
// PingIntervals, or whose writes have been blocked that long, so keep
// ServerOptions.PingInterval equal to the workers'.
//
// # Presence
//
// The hub sends its sockets' joins and leaves in batches to
// Broker.UpdatePresence, which records them in the Broker's copy of this
// process's members and queues them as 'J' frames, both under Broker.mu,
// so the copy and the link see the changes in one order. A leave of a
// member not recorded changes nothing, on either side. While the link is
// down UpdatePresence only records and returns ErrUnavailable; after every
// (re)connect the Broker sends its whole copy as joins, after its
// interest, so the Server's view is rebuilt from nothing by itself. When a
// batch does not fit the link's queue (Options.MaxPending),
// UpdatePresence returns ErrBacklog and closes the link: the Server would
// otherwise miss those changes for as long as the link lives, and the new
// link carries them all. It never waits for the Server.
//
// The Server keeps, per channel, the members each link added (socket ID
// to user). A link changes only its own members, so a late frame of a
// dead link cannot remove a live one's. The bound: a worker's members
// leave the Server's view when its link drops, however it drops (Close,
// a crash, SIGKILL: the kernel closes the connection; a network that
// goes silent: three ping intervals; a backlog on either side; a
// malformed frame), all at once, at a cost of one deletion per
// channel the link has members in. A socket is listed once as long as
// the hub gives it one ID in one process.
//
// Broker.Presence sends a 'Q' and waits, until its ctx ends, for the
// answer, which the Server's reader of that link builds from its record of
// that one channel, in O(its members), without asking any worker. The
// answer follows every 'J' the asking Broker sent before it, so its own
// changes are in it. A link that breaks fails the wait with
// ErrUnavailable. An answer counts against ServerOptions.MaxPending like
// any frame; queued onto a link that is that far behind, it disconnects
// the link, as a publish would.
//
// Memory: the Server keeps per member one map slot (two string headers)
// and one allocation for the socket ID and user together, and per channel
// and link with members a map and a slice entry. With the hub's socket IDs
// (22 bytes) and users of up to 10 bytes that is 93 bytes a member in a
// channel of 100,000 and 506 for a member alone in its channel
// (TestPresenceMemory), and 131 in a channel of a million
// (BenchmarkPresenceJoin), where the map happens to be less full between
// its growths. The Broker's copy shares the hub's strings and costs about
// a map slot per member.
//
// # History
//
// The Server keeps, in an internal/history Store, a ring of each channel's
// newest publications with history: a channel's size and TTL come with
// every keep and get (the hub's Options.History), the last ones win, and
// the ring takes slots as publications come. A keep is appended, which
// gives it the channel's next offset, in the order the Server reads the
// keeps of all links; its client frame, with the position added as a
// fourth element, is forwarded as a 'P' to every link interested in the
// channel, the sender's included; then the sender gets an 'E' with the
// position and no entries. A get is answered from the Store: the
// positioned frames after since (the newest limit for a zero since), or
// status 2 with the channel's position when since is in another epoch or
// older than what is kept (hub.ErrPositionLost on the worker). An answer
// too big for the link's queue (ServerOptions.MaxPending) is refused with
// status 3 (ErrBacklog on the worker), and the link stays; one that finds
// the queue empty is always taken, so 1,000 publications of 1 KiB come in
// one answer (about 17 frames) whatever MaxPending is.
//
// Order: a channel's append and its forwards, and a get's read and its
// answer, happen under the channel's history lock. So every link gets a
// channel's publications in offset order, and an answer after exactly
// those it covers: a hub that recovers a socket's missed publications
// while live ones arrive relies on that, to skip what it replayed.
//
// Broker.PublishHistory sends a keep and waits, until its ctx ends, for
// the answer; by then its own process has the publication, if it has
// subscribers, since the forward comes first on the link. While the link
// is down it returns ErrUnavailable: a publish is never dropped
// silently. When the link breaks after the keep was sent and before the
// answer came, it returns ErrUnconfirmed (which wraps ErrUnavailable), and
// when its ctx ends first ctx's error: the publish may then have been
// applied, or not. Broker.History sends a get and waits likewise.
//
// A sweeper goroutine of the Server drops expired entries every 10
// seconds (a read drops those of its channel too; a full ring drops its
// oldest as it takes a new one), and
// channels idle for a day (history.IdleTTL, which gives the channel a new
// epoch). The history lives as long as the Server: it goes with the
// cluster master, and workers that reconnect to a new Server see new
// epochs, so their clients learn that what they missed is lost.
//
// Memory: per stored publication the Server keeps its positioned frame
// (the client frame and about 40 bytes of position, rounded up to Go's
// size class) and a ring slot of 56 bytes; per channel with history a few
// hundred bytes more, and its ring, which grows by doubling up to the
// size and is given back once every entry has expired. With a client
// frame of 1,023 bytes that is about 1,215 bytes a publication, 100 to a
// channel (TestHistoryMemory).
//
// # Direct links
//
// A Broker with Direct listens, from Start, on the host of Options.Addr
// (loopback by default) on a free port, and its hello gives the Server
// that address. The Server keeps the token and address of every admitted
// worker, "" for one without Direct: right after its welcome it sends a
// direct newcomer a 'T' with the whole table of the others (replace set,
// even when empty), and every direct worker but the newcomer a 'T' that
// adds it; when a link drops, and no newer link of its worker replaced
// it, the direct workers get an 'X'. These frames are queued under
// Server.mu, so every worker sees the table's changes in one order; a
// worker replaces its table with each 'T' that has replace set, which
// comes first on each of its Server links (but for barriers, 'B', which do
// not depend on it), and answers every other 'T' with a 'V' once applied.
// Until every direct worker has answered the 'T' that adds a newcomer
// (or dropped its link, whose next link starts from a whole table), the
// Server holds the acks of the newcomer's subs, so a Subscribe returns
// only once every publisher knows the newcomer. A direct worker whose
// Server link reader is slow (a deliver callback that blocks) delays those
// Subscribes as long.
//
// Each pair of direct workers has one pair link: the one with the smaller
// token dials the other's address, again with backoff (Options.
// ReconnectMin to ReconnectMax) whenever the link fails, for as long as
// the peer is in its table. The dialler speaks first with an 'N' that
// carries its token and a random pair link id; the acceptor answers with
// a welcome if the version and the secret (compared in constant time) are
// right, or hangs up and logs the refusal. Each side gives the handshake
// 5 seconds. The acceptor takes any token with the secret, since its
// table may lag; a second link with a token closes the first. Both sides
// ping every Options.PingInterval and drop a link silent for three.
//
// On a new pair link each side sends its whole interest (subs with ack id
// 0) then a 'Y', and keeps the peer's interest as its subs and unsubs
// say. Subscribe and Unsubscribe go to the Server, as without Direct, and
// to every pair link up; Subscribe waits for the Server's ack and for the
// ack of every pair link it was sent on (one that breaks meanwhile counts
// as answered). A peer acks a sub after applying it, and its later
// publishes follow on the same connection, so a publish made anywhere
// after Subscribe returns reaches this process. A pair link whose queue
// cannot take a sub or unsub (Options.MaxPending) is dropped, since the
// peer's view of the interest would be wrong for as long as it lived.
//
// Publish, under Broker.mu, queues a 'P' on every synced pair link (see
// below) whose peer is interested, then an 'F' to the Server that lists
// every synced peer, interested or not; the Server forwards it as a 'P'
// to every other interested worker but those listed. So each worker gets
// a publish once, directly or relayed. The 'F' is left out when the
// publisher has the whole table (its 'T' with replace came on this Server
// link) and a synced pair link to every worker in it: then no worker
// needs the Server for it. A worker the Server admitted later is in the
// table before its Subscribe returns (above), so the publisher relays to
// it from then on; one without Direct is in the table for good, so a
// cluster with such a worker always relays. While the Server link is down
// Publish returns ErrUnavailable and sends nothing, as without Direct. ErrBacklog from a pair link's queue still lets the
// others have the publish: with Direct an error can come after some
// workers got it (delivery is at most once either way).
//
// Order across a switch. A publisher marks a pair link synced once it has
// read the peer's 'Y' (the peer's interest is whole) and its own Server
// link is up: then it queues a 'B' with the peer's token and the link's id
// on the Server link, after every 'F' so far, and from then on sends to
// that peer on the pair link. The Server passes the 'B' on to the peer
// with the publisher's token. The peer's reader of the pair link holds the
// publisher's publishes until the 'B' of that link came, after everything
// relayed before it, so a peer gets one publisher's publishes in order
// across the switch. The Server claims a worker's link before it sends
// the welcome, so a 'B' for a worker whose link is up finds it. A 'B' can
// be lost with a broken Server link, on either side: a publisher sends
// its 'B's again on every new Server link, and a worker whose new Server
// link finds pair links still held sends a 'C' on each, which makes the
// publisher send that link's 'B' again. While held, a reader reads no
// other frame either (a Subscribe waiting for that peer's ack waits with
// it, at most until the Server links are back); both sides ping, so a
// held side learns of a dead link from a failed write. When a pair link breaks, the publisher relays
// through the Server again; publishes queued on the pair link that were
// not written are lost, and a relayed publish may overtake direct ones
// still in flight. That window is a failure's, like a broken Server
// link's. Publishes with history go through the
// Server and reach their channel's subscribers in offset order, but a
// plain publish on one channel and a history publish on another may
// arrive in another order than they were made.
//
// The Server keeps the history, the presence members and the answers to
// queries as without Direct. Broker.Probe still proves the path through
// the Server only.
//
// # Goroutines
//
// Server: one accept goroutine; per connection a reader goroutine, which
// runs the handshake (and waits for the link it replaces to be dropped)
// and then reads, and once the worker is admitted a writer goroutine that
// drains the link's queue, many frames per system call. A link's reader
// applies its presence changes, keeps its history publishes and answers
// its queries and reads itself. One sweeper goroutine sweeps the history.
// After failed accepts (out of file descriptors and the like) the accept
// goroutine waits, from 5ms doubling to 1s, jittered. Close stops that
// wait and the sweeper, closes the listener and every connection, which
// ends all the others, and waits for them.
//
// Broker: Start starts one goroutine that dials, runs the link and dials
// again. While a link is up that goroutine reads it and runs the hub's
// deliver callback, one frame at a time in link order, beside a writer and
// a pinger, which stop before it dials again. With Direct, Start also
// starts an accept goroutine for pair links, which starts one goroutine
// per accepted connection: it runs the handshake, then reads the link and
// runs the deliver callback for its publishes in link order, beside a
// writer and a pinger. Each peer the Broker dials has a dialer goroutine,
// started when the table lists the peer, which dials, reads the link
// likewise beside a writer and a pinger, dials again after backoff, and
// ends once the peer is out of the table. So deliver may run on several
// goroutines at once. Close interrupts a dial, a handshake or a backoff
// wait, closes the listener and every link and waits for all of them; no
// delivery happens after Close returns.
//
// # Concurrency
//
// The methods of Server and Broker are safe for concurrent use. Server.mu
// protects the channel map, the set of connections and the links by
// token; the presence table's mutex protects the members of every link
// (an answer is encoded under it); a channel's history lock (one of 64
// stripes by hash) orders its appends and forwards and its reads and
// answers (an answer is encoded under it); the Store has its own mutex;
// Broker.mu protects the interest, the presence copy, the link and the
// pending acks and calls (presence queries, history keeps and gets), and
// with Direct the table, the pair links and each one's view of its
// peer's interest, pending acks and sync state (Publish holds it while it
// queues, so a route and the barrier that promises it are in one order);
// and each link's send queue has its own mutex. Lock order: a history lock,
// then Server.mu, then a send queue's; Broker.mu, then a send queue's;
// the presence table's mutex and the Store's are held with no other taken
// after them. No lock is held during network I/O. A link's own set of
// channels on the server is touched only by its reader goroutine.
// Subscribe, Unsubscribe and UpdatePresence queue their frames under
// Broker.mu, so the server sees them in call order.
//
// # Logging
//
// Both sides log through their options' Logger, with the attribute
// component=localbroker: refused peers, lost or dropped links and failed
// accepts as warnings, connections as info, link details as debug.
package localbroker
