// Package api is an HTTP API for services that are not WebSocket
// workers: publish to a channel, send to a user or a socket, disconnect a
// user, read presence and stats. Requests go through the Server, hence
// through its broker, so they reach the sockets of every process and host.
//
//	h, err := api.New(srv, api.Options{Key: os.Getenv("CLUSTERWS_API_KEY")})
//	mux.Handle("/api/", h)
//
// Under cluster.Run, the master serves it on its admin listener when
// cluster.Config.APIKey is set, and hands each request to a worker.
//
// # Requests
//
// Every request carries the key as Authorization: Bearer KEY; a missing or
// wrong key gets 401 and nothing is done (the key is compared in constant
// time). Bodies are JSON of at most Options.MaxBodyBytes (413 beyond);
// responses are JSON, {"ok":true} or {"error":"..."} unless said otherwise.
//
//	POST /api/publish          {"channel":"news","data":{...}}
//	POST /api/send_to_user     {"user":"alice","event":"notice","data":{...}}
//	POST /api/send_to_socket   {"socket":"<socket ID>","event":"notice","data":{...}}
//	POST /api/disconnect_user  {"user":"alice","code":4010,"reason":"logged out"}
//	GET  /api/presence?channel=room:lobby   {"channel":...,"members":[{"socket":...,"user":...}],"sockets":n,"users":n}
//	GET  /api/history?channel=...&limit=...[&since=N&epoch=E] publications and the position
//	GET  /api/stats                          {"total":{...}} (under cluster.Run also "workers":{"1":{...},...})
//
// Status codes: 200 done; 400 bad input (malformed JSON, a missing or
// invalid field, a close code outside 1000 and 3000–4999, presence not
// enabled for the channel); 401 no or wrong key; 404 no such socket or
// route; 405 wrong method; 410 the socket is closing; 413 body too large;
// 503 the broker did not take the publish (local subscribers got it) or
// the server is shutting down; 504 the broker did not answer in time.
package api
