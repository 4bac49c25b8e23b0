module github.com/clusterws/clusterws-go

go 1.26.8

require github.com/coder/websocket v1.8.15

require github.com/go-chi/chi/v5 v5.5.0 // indirect
