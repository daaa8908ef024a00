// Package api is arpshare's local API: the status types `arpshare status`,
// `clients` and `owner` show, the server on the daemon's unix socket (who
// may read, who may change: SO_PEERCRED), its client, and the HTTP server
// of the Prometheus metrics, each with limits a slow client cannot hold.
package api
