// Package config reads arpshare's TOML config into a checked Config, with
// errors that name the file and line, and checks this host against it
// (interfaces, gossip address and port, key file and check programs).
package config
